"""The profile report of a character pack: ``profile.md`` (tables) and ``profile.png`` (four charts).

    write_profile(script, "House", card, report, Path("packs/house"))

The report shows what the card was drafted from — line statistics, signature phrases, main
partners, the real greeting and example exchanges — and how the scripts became the pack's
data: every ingest count, the repairs, the files read, the examples per split. It is the
page to read before training on a pack.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from pathlib import Path

from ..files import atomic_write
from ..ingest.script import Script
from .draft import MIN_Z, character_stats, signature_phrases

log = logging.getLogger(__name__)

SAMPLES = 15  # repair samples shown
RULES = 40  # repair rules shown
_SEASON = re.compile(r"^(s\d+)e\d+$", re.IGNORECASE)


def write_profile(script: Script, character: str, card: dict, report: dict, folder: Path) -> None:
    """Write ``folder/profile.md`` and ``folder/profile.png`` (each atomically)."""
    folder = Path(folder)
    ours = card.get("data", {}).get("extensions", {}).get("rolecast", {})
    stats = ours.get("stats") or {}
    if "others" not in stats:  # a card from elsewhere, or an older rolecast: recompute
        stats = character_stats(script, character)
    phrases = ours["catchphrases"] if "catchphrases" in ours else signature_phrases(script, character)
    atomic_write(folder / "profile.md", profile_markdown(script, character, card, report, stats, phrases))
    atomic_write(folder / "profile.png", profile_chart(script, character, stats, phrases))
    log.info("profile of %s written to %s", character, folder)


# ----------------------------------------------------------------------------- markdown


def profile_markdown(script: Script, character: str, card: dict, report: dict, stats: dict, phrases: list[dict]) -> str:
    """The report as markdown: one section per table, ``_none_`` where there is nothing to show."""
    data = card.get("data", {})
    parts = [f"# {character} — {script.show}", "", data.get("description", ""), "", "![profile](profile.png)", ""]
    sections = (
        ("Lines", _stats_rows(character, stats)),
        ("Signature phrases", _phrase_rows(phrases)),
        ("Main partners", _table(["speaker", f"lines right before {character}'s"],
                                 [[p["name"], p["count"]] for p in stats["partners"]])),
        ("Greeting and example exchanges", _greetings(data)),
        ("Speakers", _speaker_rows(script)),
        ("Cleaning", _table(["step", "count"], list(report.get("counts", {}).items()))),
        ("Repairs", _repairs(report)),
        ("Merged speaker labels", _merged(report)),
        ("Files read", _files(report)),
        ("Examples", _table(["split", "examples"], list(report.get("examples", {}).items()))),
    )
    for title, body in sections:
        parts += [f"## {title}", "", *(body or ["_none_"]), ""]
    return "\n".join(parts)


def _cell(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list]) -> list[str]:
    """A markdown table, numeric columns right-aligned; no rows → nothing."""
    if not rows:
        return []
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    return ["| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
            *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)]


def _stats_rows(character: str, stats: dict) -> list[str]:
    rest = stats["others"]
    rows = [
        ["lines", f"{stats['lines']:,}", ""],
        ["words", f"{stats['words']:,}", ""],
        ["words per line (mean)", f"{stats['words_per_line_mean']:.1f}", f"{rest['words_per_line_mean']:.1f}"],
        ["words per line (median)", f"{stats['words_per_line_median']:g}", ""],
        ["lines with a question", f"{stats['question_rate']:.1%}", f"{rest['question_rate']:.1%}"],
        ["lines with an exclamation", f"{stats['exclamation_rate']:.1%}", f"{rest['exclamation_rate']:.1%}"],
        ["episodes", f"{stats['episodes']} of {stats['episodes_total']}", ""],
        ["scenes", f"{stats['scenes']:,}", ""],
        ["share of the dialogue", f"{stats['share']:.1%}", ""],
    ]
    return _table(["", character, "rest of the cast"], rows)


def _phrase_rows(phrases: list[dict]) -> list[str]:
    rows = [[i, p["phrase"], p["count"], float(p["z"])] for i, p in enumerate(phrases, 1)]
    return _table(["#", "phrase", "count", "z"], rows) + ([
        "", "Weighted log-odds with an informative Dirichlet prior (Monroe et al. 2008) against the other "
        f"speakers' lines; z ≥ {MIN_Z} only."] if rows else [])


def _greetings(data: dict) -> list[str]:
    out = []
    if data.get("first_mes"):
        out += ["First message:", "", f"> {data['first_mes']}", ""]
    if data.get("alternate_greetings"):
        out += ["Alternate greetings:", "", *(f"- {g}" for g in data["alternate_greetings"]), ""]
    if data.get("mes_example"):
        out += ["Example exchanges (`mes_example`):", "", "```text", data["mes_example"], "```"]
    return out


def _speaker_rows(script: Script, top: int = 15) -> list[str]:
    counts = script.speakers()
    total = sum(counts.values()) or 1
    rows = [[i, name, n, f"{n / total:.1%}"] for i, (name, n) in enumerate(counts.most_common(top), 1)]
    return _table(["#", "speaker", "lines", "share"], rows) + ["", f"{len(counts):,} speakers in all."]


def _repairs(report: dict) -> list[str]:
    rules = list(report.get("repair_rules", {}).items())
    out = _table(["damaged", "repaired"], [[f"`{a}`", f"`{b}`"] for a, b in rules[:RULES]])
    if len(rules) > RULES:
        out.append(f"\n… and {len(rules) - RULES:,} more rules.")
    samples = list(dict.fromkeys(tuple(pair) for pair in report.get("repair_samples", [])))[:SAMPLES]
    if samples:
        out += ["", "Samples:", "", *(f"- `{before}` → `{after}`" for before, after in samples)]
    return out


def _merged(report: dict, top: int = 15) -> list[str]:
    merged = sorted(report.get("merged_speakers", {}).items(), key=lambda item: (-len(item[1]), item[0]))
    rows = [[name, len(labels), ", ".join(f"`{label}`" for label in labels[:8])] for name, labels in merged[:top]]
    return _table(["speaker", "labels", "raw labels (first 8)"], rows)


def _files(report: dict) -> list[str]:
    rows = []
    for entry in report.get("files", []):
        first = entry.get("skipped_first") or []  # source line numbers of the first malformed rows
        first = ", ".join(map(str, first)) if isinstance(first, list) else str(first)
        rows.append([entry.get("path", ""), entry.get("format", ""), entry.get("rows", 0), entry.get("skipped", 0), first])
    return _table(["file", "format", "rows", "skipped", "first skipped (line)"], rows)


# ----------------------------------------------------------------------------- chart


def profile_chart(script: Script, character: str, stats: dict, phrases: list[dict]) -> bytes:
    """Four panels as PNG bytes (1200×900): line lengths, partners, phrases, lines per episode."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: matplotlib is slow to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9), dpi=100)
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch, nothing left open
    (lengths, partners), (sayings, episodes) = fig.subplots(2, 2)
    _lengths_panel(lengths, script, character)
    _partners_panel(partners, stats, character)
    _phrases_panel(sayings, phrases)
    _episodes_panel(episodes, script, character)
    fig.suptitle(f"{character} — {script.show}", fontsize=15, fontweight="bold")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _style(ax, title: str, xlabel: str, ylabel: str = "") -> None:
    ax.set_title(title, fontsize=12, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)


def _empty(ax, title: str, why: str) -> None:
    _style(ax, title, "")
    ax.text(0.5, 0.5, why, ha="center", va="center", color="grey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _lengths_panel(ax, script: Script, character: str) -> None:
    import numpy as np

    mine = np.array([len(x.text.split()) for x in script.lines if x.speaker == character])
    rest = np.array([len(x.text.split()) for x in script.lines if x.is_character and x.speaker != character])
    both = np.concatenate([mine, rest]) if len(rest) else mine
    cap = max(10, int(np.percentile(both, 99)))  # a few monologues would squash the rest
    bins = np.arange(0.5, cap + 1.5, max(1, cap // 40))
    if len(rest):
        ax.hist(np.minimum(rest, cap), bins=bins, density=True, histtype="stepfilled", color="#bbbbbb",
                alpha=0.6, label=f"everyone else (mean {rest.mean():.1f})")
    ax.hist(np.minimum(mine, cap), bins=bins, density=True, histtype="step", linewidth=2, color="#c0392b",
            label=f"{character} (mean {mine.mean():.1f})")
    _style(ax, "Words per line", f"words (last bin: {cap} or more)", "share of lines")
    ax.legend(frameon=False)


def _partners_panel(ax, stats: dict, character: str) -> None:
    partners = stats["partners"]
    if not partners:
        return _empty(ax, "Main partners", "no other speaker before their lines")
    names = [p["name"] for p in partners][::-1]
    counts = [p["count"] for p in partners][::-1]
    bars = ax.barh(names, counts, color="#2e86c1")
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize=9)
    ax.margins(x=0.15)
    _style(ax, "Main partners", f"lines right before {character}'s")


def _phrases_panel(ax, phrases: list[dict], top: int = 15) -> None:
    if not phrases:
        return _empty(ax, "Signature phrases", f"no phrase is over-represented (z ≥ {MIN_Z})")
    shown = phrases[:top][::-1]
    bars = ax.barh([f"“{p['phrase']}”" for p in shown], [p["z"] for p in shown], color="#27ae60")
    ax.bar_label(bars, labels=[f"×{p['count']:,}" for p in shown], padding=3, fontsize=9, color="#555555")
    ax.margins(x=0.15)
    _style(ax, "Signature phrases", "z-score of the weighted log-odds (label: times said)")


def _episodes_panel(ax, script: Script, character: str) -> None:
    per = Counter(line.episode for line in script.lines if line.speaker == character)
    episodes = script.episodes()
    seasons = [m.group(1).lower() if (m := _SEASON.match(ep)) else "" for ep in episodes]
    shade = {s: i % 2 for i, s in enumerate(dict.fromkeys(seasons))}
    counts = [per[ep] for ep in episodes]
    ax.bar(range(len(episodes)), counts, width=0.85 if len(episodes) <= 40 else 1.0,
           color=[("#8e44ad", "#c39bd3")[shade[s]] for s in seasons])
    if len(episodes) > 40:  # many thin bars: a running mean shows the trend
        import numpy as np

        window = max(3, len(episodes) // 25) | 1
        smooth = np.convolve(counts, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(len(smooth)) + window // 2, smooth, color="#222222", linewidth=1.5,
                label=f"running mean ({window} episodes)")
        ax.legend(frameon=False, loc="upper left")
    if all(seasons) and len(set(seasons)) > 1:
        starts = [i for i, s in enumerate(seasons) if i == 0 or seasons[i - 1] != s]
        ax.set_xticks(starts, [seasons[i] for i in starts], fontsize=8)
    else:
        step = max(1, len(episodes) // 12)
        ax.set_xticks(range(0, len(episodes), step), episodes[::step], rotation=45, ha="right", fontsize=8)
    _style(ax, "Lines per episode", "episode" + (" (colours alternate by season)" if all(seasons) else ""), "lines")
