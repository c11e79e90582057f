"""The evaluation report: ``eval/report.md`` and its charts, from ``evaluate``'s metrics.

Written so that a user reads one table and knows which variant to serve: every row a
variant, every column a metric with its 95% bootstrap interval, the recommendation
and the reason, then ten exchanges side by side.
"""

from __future__ import annotations

import math
from pathlib import Path

from .pack import Pack

COLUMNS = [  # (metric, header, format, higher is better)
    ("style", "style", "{:.3f}", True),
    ("rouge_l", "ROUGE-L", "{:.3f}", True),
    ("similarity", "similarity", "{:.3f}", True),
    ("perplexity", "perplexity", "{:.1f}", False),
    ("words", "words", "{:.1f}", None),
    ("latency_s", "latency s", "{:.2f}", False),
]
CHARTS = [("style", "style score (higher: more like the character)"), ("rouge_l", "ROUGE-L F1 vs the real reply"),
          ("similarity", "embedding similarity to the real reply"), ("perplexity", "perplexity of the real reply"),
          ("latency_s", "seconds per reply")]


def _cell(entry: dict, fmt: str) -> str:
    low, high = entry.get("ci", (float("nan"), float("nan")))
    value = fmt.format(entry["mean"])
    if isinstance(low, float) and not math.isnan(low):
        return f"{value} ({fmt.format(low)}–{fmt.format(high)})"
    return value


def summary_table(metrics: dict) -> str:
    head = ["variant"] + [h for _, h, _, _ in COLUMNS] + ["distinct-1/2", "loops", "impersonation raw → cleaned",
                                                          "persona breaks raw → cleaned", "tokens/s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in metrics["variants"].items():
        cells = [f"**{name}**"] + [_cell(m[key], fmt) for key, _, fmt, _ in COLUMNS]
        cells.append(f"{m['distinct_1']:.2f} / {m['distinct_2']:.2f}")
        cells.append(f"{m['loop']['mean']:.0%}")
        cells.append(f"{m['impersonation_raw']['mean']:.0%} → {m['impersonation']['mean']:.0%}")
        breaks = f"{m['persona_break_raw']:.0%} → {m['persona_break']:.0%}" if "persona_break" in m else "–"
        cells += [breaks, f"{m['tokens_per_s']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append(f"| *real replies* | {metrics['style_ceiling']:.3f} |" + " |" * (len(head) - 2))
    return "\n".join(rows)


def markdown(pack: Pack, metrics: dict, samples: dict[str, list[dict]]) -> str:
    from .evaluate import recommend

    best = recommend(metrics)
    variants = metrics["variants"]
    lines = [f"# Evaluation — {pack.character} ({pack.show})", "",
             f"{metrics['examples']} exchanges from the test episodes (never trained on, never retrieved); "
             "95% bootstrap intervals in brackets.", "", summary_table(metrics), ""]
    if best:
        floor = variants.get("base", {}).get("style", {}).get("mean")
        lines += [f"**Serve `{best}`**: the highest style score among the variants that never let another speaker's "
                  f"line through after cleaning (style {variants[best]['style']['mean']:.3f}; real replies "
                  f"{metrics['style_ceiling']:.3f}" + (f"; base model {floor:.3f})." if floor is not None else ")."), ""]
    lines += ["What the columns mean: *style* is the pack's style classifier (probability the reply is the "
              "character's); *ROUGE-L* and *similarity* compare with the real reply; *perplexity* is that of the "
              "real reply under the variant's prompt (lower: the model expects what the character said); "
              "*impersonation* counts replies carrying another speaker's line, before and after post-processing; "
              "*persona breaks* count probe replies that say they are an AI or speak as someone else.", "",
              "![style](style.png) ![perplexity](perplexity.png) ![latency](latency_s.png)", "",
              "## Ten exchanges", ""]
    lines += exchanges(samples, best)
    return "\n".join(lines) + "\n"


def exchanges(samples: dict[str, list[dict]], best: str | None, n: int = 10) -> list[str]:
    names = [v for v in ("base", best) if v and v in samples]
    if not names:
        return []
    rows = samples[names[0]][:n]
    out = []
    for i, row in enumerate(rows):
        out.append(f"{i + 1}. **Them:** {row['message']}  ")
        out.append(f"   **Real:** {row['real']}  ")
        for name in dict.fromkeys(names):
            reply = next((r["reply"] for r in samples[name] if r["id"] == row["id"]), "")
            out.append(f"   **{name}:** {reply}  ")
        out.append("")
    return out


def charts(metrics: dict, folder: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(metrics["variants"])
    for key, title in CHARTS:
        fig = Figure(figsize=(7, 3.6), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        means = [metrics["variants"][n][key]["mean"] for n in names]
        cis = [metrics["variants"][n][key]["ci"] for n in names]
        low = [max(0.0, m - c[0]) if not math.isnan(c[0]) else 0 for m, c in zip(means, cis)]
        high = [max(0.0, c[1] - m) if not math.isnan(c[1]) else 0 for m, c in zip(means, cis)]
        ax.bar(names, means, yerr=[low, high], capsize=4, color="#4C72B0")
        if key == "style":
            ax.axhline(metrics["style_ceiling"], color="#C44E52", linestyle="--", label="real replies")
            ax.legend(loc="lower right")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(folder / f"{key}.png")
