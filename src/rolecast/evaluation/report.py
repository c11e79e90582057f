"""The evaluation report: ``eval/report.md`` and its charts, from ``evaluate``'s metrics.

Written so that a sceptical user reads one table and knows which variant to serve and
why: every row a variant, every column a judge with its 95% bootstrap interval, each
judge's validation figure beside it. A judge that failed its check gives no figure anywhere
(table, pairwise wins, scenes, charts) and decides nothing (``TRUSTED_BY``),
pairwise win rates, replayed scenes, knowledge probes, blind votes when given, then ten
exchanges side by side.
"""

from __future__ import annotations

import math
from pathlib import Path

from .. import stats
from ..pack import Pack

COLUMNS = [  # (metric, header, format)
    ("coherence", "coherence", "{:.3f}"),
    ("off_topic", "off-topic", "{:.0%}"),
    ("held_apart", "held-apart style", "{:.3f}"),
    ("copy", "copies", "{:.0%}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("style", "reranker's style", "{:.3f}"),
    ("similarity", "similarity", "{:.3f}"),
    ("words", "words", "{:.1f}"),
    ("latency_s", "latency s", "{:.2f}"),
]
CHARTS = [("coherence", "coherence judge (higher: answers the context)"),
          ("held_apart", "held-apart style judge (higher: more like the character)"),
          ("perplexity", "perplexity of the real reply"), ("latency_s", "seconds per reply")]
NAMES = {"coherence": "coherence", "held_apart": "held-apart style", "style": "reranker's style classifier"}
#: Figures → the judge whose check they need.
TRUSTED_BY = {"coherence": "coherence", "coherence_blind": "coherence", "off_topic": "coherence",
              "held_apart": "held_apart", "discriminator": "discriminator", "rerank_gain": "coherence"}


def shown(metrics: dict, key: str) -> bool:
    """Whether a figure may appear: it needs no judge, or its judge passed its check."""
    judge = TRUSTED_BY.get(key)
    return judge is None or bool(metrics["judges"][judge].get("trusted"))


def _cell(entry: dict, fmt: str) -> str:
    low, high = entry.get("ci", (float("nan"), float("nan")))
    value = fmt.format(entry["mean"])
    if isinstance(low, float) and not math.isnan(low):
        return f"{value} ({fmt.format(low)}–{fmt.format(high)})"
    return value


def _interval(entry: dict, fmt: str = "{:.3f}", key: str = "auc") -> str:
    low, high = entry.get("ci", (float("nan"), float("nan")))
    value = entry.get(key, float("nan"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(low, float) and not math.isnan(low):
        return f"{fmt.format(value)} ({fmt.format(low)}–{fmt.format(high)})"
    return fmt.format(value)


def summary_table(metrics: dict) -> str:
    head = ["variant"] + [h for _, h, _ in COLUMNS] + ["discriminator AUC", "loops", "impersonation raw → cleaned",
                                                      "persona breaks raw → cleaned", "knowledge"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in metrics["variants"].items():
        cells = [f"**{name}**"]
        for key, _, fmt in COLUMNS:
            cells.append(_cell(m[key], fmt) if shown(metrics, key) else "(untrusted)")
        cells.append(_interval(m["discriminator"]) if shown(metrics, "discriminator") else "(untrusted)")
        cells.append(f"{m['loop']['mean']:.0%}")
        cells.append(f"{m['impersonation_raw']['mean']:.0%} → {m['impersonation']['mean']:.0%}")
        cells.append(f"{m['persona_break_raw']:.0%} → {m['persona_break']:.0%}" if "persona_break" in m else "–")
        cells.append(f"{m['knowledge']['rate']:.0%}" if "knowledge" in m else "–")
        rows.append("| " + " | ".join(cells) + " |")
    info = metrics["judges"]
    real = {"coherence": f"{info['coherence']['real_mean']:.3f}", "off_topic": "10% by definition",
            "held_apart": f"{info['held_apart']['real_mean']:.3f}", "copy": f"{info['copy']['real_rate']:.0%}",
            "style": f"{info['style']['real_mean']:.3f}"}
    real = {k: (v if shown(metrics, k) else "(untrusted)") for k, v in real.items()}
    cells = ["*real replies*"] + [real.get(k, "") for k, _, _ in COLUMNS] + ["0.5 by definition"]
    rows.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
    return "\n".join(rows)


def judges_section(metrics: dict) -> list[str]:
    info = metrics["judges"]
    ha, co, disc, st = info["held_apart"], info["coherence"], info["discriminator"], info["style"]
    verdict = lambda j: "**trusted**" if j["trusted"] else f"**not trusted** (below {j['bar']:.2f})"  # noqa: E731
    lines = ["## The judges and their checks", "",
             "| judge | what it is | its check | result |", "|---|---|---|---|",
             f"| coherence | logistic regression on MiniLM embeddings of (context, reply), learned from the scripts: "
             f"the real next line vs the character's lines from other scenes and an echo of the message "
             f"({co['train_pairs']:,} train/validation pairs) | real vs shuffled replies of the character on the test "
             f"episodes ({co['pairs']:,} pairs), and real replies vs an echo of the message, AUC | "
             f"{co['auc']:.3f} and {co.get('echo_auc', float('nan')):.3f} — {verdict(co)} |",
             f"| held-apart style | logistic regression on MiniLM embeddings, fitted only on test episodes "
             f"(never seen by the reranker's classifier), cross-fitted over {ha['groups']} groups; never loaded by "
             f"the chat | the character's test lines vs other speakers' ({ha['lines']:,} lines), out-of-fold AUC | "
             f"{ha['auc']:.3f} — {verdict(ha)}; mean on the character's lines {ha['character_mean']:.3f}, on others' "
             f"{ha['other_mean']:.3f} |",
             f"| discriminator | per variant, a classifier cross-validated to tell its replies from the real ones "
             f"(0.5: indistinguishable, 1.0: trivially a bot) | the character's lines vs another speaker's in the same "
             f"contexts (must reach {disc['bar']:.2f}) / two halves of the character's own lines (must stay below) | "
             f"{_interval(disc['versus_others'])} / {_interval(disc['halves'])} — {verdict(disc)} |",
             f"| copies | replies of {info['copy']['min_words']}+ words repeating a training or retrieval line "
             f"near-verbatim | the real test replies | {info['copy']['real_rate']:.0%} |",
             f"| reranker's style | the pack's own classifier ({st.get('method') or '?'}), which the `rerank` variants "
             f"maximise: shown for reference, not used to choose | its test AUC | "
             + (f"{st['auc']:.3f} |" if st.get("auc") is not None else "– |"), ""]
    return lines


def rerank_section(metrics: dict) -> list[str]:
    """How much of each rerank's coherence gain survives a judge blind to the reranker's own feature."""
    gains = metrics.get("rerank_gain") or []
    if not gains or not shown(metrics, "rerank_gain"):
        return []
    blind = metrics["judges"].get("coherence_blind", {})
    lines = ["## What the rerank's coherence gain is made of", "",
             "The reranker gates on the MiniLM cosine of a reply with the message, which the coherence judge also "
             "reads. A second judge, blind to the message's own embedding, gives the part of the gain that comes "
             "another way. It decides nothing: its own checks are real vs shuffled AUC "
             f"{blind.get('auc', float('nan')):.3f} and real vs echo {blind.get('echo_auc', float('nan')):.3f}, "
             "so read its figure as rough.", "",
             "| variant | over | coherence gain | gain on the blind judge | survives |", "|---|---|---|---|---|"]
    for g in gains:
        survives = f"{g['survives']:.0%}" if g["survives"] is not None else "– (no gain to explain)"
        lines.append(f"| {g['variant']} | {g['over']} | {g['gain']:+.3f} | {g['gain_blind']:+.3f} | {survives} |")
    return lines + [""]


def pairwise_section(metrics: dict) -> list[str]:
    lines = ["## Pairwise win rates", "",
             "On the same test exchanges, how often the first variant's reply scores above the second's (ties "
             "count half), with 95% bootstrap intervals; an interval that excludes 50% is a real difference. "
             "*real replies* are the character's own lines to the same exchanges: a variant that beats them on a judge "
             "scores above the character, not only above the other variants.", ""]
    for key, pairs in metrics["pairwise"].items():
        if not pairs:
            continue
        if not shown(metrics, key):
            continue
        lines += [f"**{NAMES[key]}**", "", "| pair | first wins |", "|---|---|"]
        for p in pairs.values():
            lines.append(f"| {p['a']} vs {p['b']} | {_interval(p, '{:.0%}', 'win')} |")
        lines.append("")
    return lines


def scenes_section(metrics: dict) -> list[str]:
    found = {n: m["scenes"] for n, m in metrics["variants"].items() if "scenes" in m}
    if not found:
        return []
    lines = ["## Replayed scenes", "",
             "Held-out scenes played turn by turn: the other characters' real lines as the user, the variant's own "
             "earlier replies in the history. Drift is the change of a judge's score per turn (negative: it gets "
             "worse as the scene goes on).", "",
             "| variant | scenes / turns | coherence by turn | coherence drift | held-apart drift | self-repetition | "
             "scenes with impersonation raw → cleaned |", "|---|---|---|---|---|---|---|"]
    co, ha = shown(metrics, "coherence"), shown(metrics, "held_apart")
    for name, s in found.items():
        by_turn = " ".join(f"{v:.2f}" for v in s["by_turn"]["coherence"]) if co else "(untrusted)"
        drift_co = f"{s['drift']['coherence']:+.3f}" if co else "(untrusted)"
        drift_ha = f"{s['drift']['held_apart']:+.3f}" if ha else "(untrusted)"
        lines.append(f"| **{name}** | {s['scenes']} / {s['turns']} | {by_turn} | {drift_co} | {drift_ha} | "
                     f"{s['self_repetition']:.0%} | {s['impersonation_scenes_raw']:.0%} → {s['impersonation_scenes']:.0%} |")
    return lines + [""]


def knowledge_section(metrics: dict, samples_knowledge: dict | None = None) -> list[str]:
    found = {n: m["knowledge"] for n, m in metrics["variants"].items() if "knowledge" in m}
    if not found:
        return []
    topics = sorted({t for k in found.values() for t in k["by_topic"]})
    lines = ["## Knowledge probes", "",
             "Questions whose answers are mined from the pack (the character's name, the people they talk with and "
             "about, the proper nouns they use most), answered by string match.", "",
             "| variant | all | " + " | ".join(topics) + " |", "|---|---|" + "---|" * len(topics)]
    for name, k in found.items():
        lines.append(f"| **{name}** | {k['rate']:.0%} ({k['probes']}) | "
                     + " | ".join(f"{k['by_topic'].get(t, 0):.0%}" for t in topics) + " |")
    return lines + [""]


def votes_section(metrics: dict) -> list[str]:
    votes = metrics.get("votes")
    if not votes:
        return []
    lines = ["## Blind votes (web chat)", "",
             f"{votes['votes']} votes from `rolecast serve --blind` ({votes['ties']} ties counted half), win rates "
             "with 95% intervals:", "", "| pair | first wins | votes |", "|---|---|---|"]
    for p in votes["pairs"].values():
        lines.append(f"| {p['a']} vs {p['b']} | {_interval(p, '{:.0%}', 'win')} | {p['n']} |")
    return lines + [""]


def markdown(pack: Pack, metrics: dict, samples: dict[str, list[dict]]) -> str:
    rec = metrics.get("recommendation")
    best = rec["variant"] if rec else None
    lines = [f"# Evaluation — {pack.character} ({pack.show})", "",
             f"{metrics['examples']} exchanges from the test episodes (never trained on, never retrieved); "
             "95% intervals in brackets (how: see the end of the report).", "", summary_table(metrics), ""]
    if rec and best:
        lines += [f"**Serve `{best}`**: {rec['why']}.", ""]
    elif rec:
        lines += [f"**No recommendation**: {rec['why']}.", ""]
    lines += ["What the columns mean: *coherence* is the probability that the reply answers its context (the "
              "coherence judge), *off-topic* the share of replies below the real replies' 10th percentile on it; "
              "*held-apart style* is the probability that the character said it, by a judge the chat never uses; "
              "*copies* are near-verbatim repeats of training or retrieval lines; *perplexity* is that of the real "
              "reply under the variant's prompt; *reranker's style* is the pack's classifier that `rerank` "
              "maximises (shown, not trusted); the *discriminator AUC* says how easily a classifier tells the "
              "variant's replies from the real ones (0.5 is best); *impersonation* counts replies carrying another "
              "speaker's line, *persona breaks* probe replies that say they are an AI.", ""]
    lines += judges_section(metrics) + rerank_section(metrics) + pairwise_section(metrics) + scenes_section(metrics)
    lines += knowledge_section(metrics)
    lines += votes_section(metrics)
    lines += [" ".join(f"![{title.split(' (')[0]}]({key}.png)" for key, title in CHARTS[:3] if shown(metrics, key)), "",
              stats.METHOD + ".", "", "## Ten exchanges", ""]
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
    real = {"coherence": metrics["judges"]["coherence"]["real_mean"],
            "held_apart": metrics["judges"]["held_apart"]["real_mean"]}
    for key, title in CHARTS:
        if not shown(metrics, key):  # an untrusted judge draws no chart
            continue
        fig = Figure(figsize=(7, 3.6), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        means = [metrics["variants"][n][key]["mean"] for n in names]
        cis = [metrics["variants"][n][key]["ci"] for n in names]
        low = [max(0.0, m - c[0]) if not math.isnan(c[0]) else 0 for m, c in zip(means, cis)]
        high = [max(0.0, c[1] - m) if not math.isnan(c[1]) else 0 for m, c in zip(means, cis)]
        ax.bar(names, means, yerr=[low, high], capsize=4, color="#4C72B0")
        if key in real and shown(metrics, key):
            ax.axhline(real[key], color="#C44E52", linestyle="--", label="real replies")
            ax.legend(loc="lower right")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(folder / f"{key}.png")
