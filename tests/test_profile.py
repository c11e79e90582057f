"""Tests for rolecast.pack.profile: write_profile writes profile.md and profile.png from a card and a report."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import script_of
from rolecast.ingest.script import NARRATION, Script
from rolecast.pack.draft import draft_card
from rolecast.pack.profile import write_profile

SHOW = "Moonbase Diner"
# An invented sitcom: Zelda keeps saying "holy guacamole" (the same fixture as tests/test_draft.py, shortened).
ROWS = [
    ("s01e01", "1", NARRATION, "The diner at dawn."),
    ("s01e01", "1", "Marco", "Morning, the coffee machine is broken again."),
    ("s01e01", "1", "Zelda", "Holy guacamole, is it broken again?"),
    ("s01e01", "1", "Priya", "It was working fine yesterday before the rush."),
    ("s01e01", "1", "Zelda", "Holy guacamole, who touched it this time?"),
    ("s01e01", "2", "Marco", "I ordered them on Monday, they come tomorrow."),
    ("s01e01", "2", "Zelda", "Holy guacamole, tomorrow? Why so slow?"),
    ("s01e02", "1", "Zelda", "Hello everyone, welcome to the grand reopening!"),
    ("s01e02", "1", "Marco", "The new pans arrived and they look great."),
    ("s01e02", "1", "Zelda", "Holy guacamole, are those copper?"),
    ("s01e02", "2", "Marco", "The oven is making that noise again."),
    ("s01e02", "2", "Zelda", "Holy guacamole, what was that?"),
    ("s01e02", "2", "Priya", "The oven door fell off its hinges."),
    ("s01e03", "1", "Priya", "Hi Zelda, the inspector is coming at noon."),
    ("s01e03", "1", "Zelda", "Holy guacamole! Is the kitchen clean?"),
    ("s01e03", "1", "Marco", "The kitchen is clean but the storage room is a mess."),
]


@pytest.fixture
def script() -> Script:
    return script_of(ROWS, SHOW)


def make_examples(script: Script) -> list[dict]:
    """Zelda's lines after another speaker's, in the documented example format."""
    return [{"id": str(line.index), "episode": line.episode, "scene": line.scene,
             "messages": [{"role": "user", "content": f"{before.speaker}: {before.text}"}],
             "completion": [{"role": "assistant", "content": line.text}]}
            for before, line in zip(script.lines, script.lines[1:], strict=False)
            if line.speaker == "Zelda" and before.is_character and before.speaker != "Zelda"
            and (before.episode, before.scene) == (line.episode, line.scene)]

REPORT = {
    "files": [{"path": "diner/s01.csv", "format": "table", "rows": 16, "skipped": 2, "skipped_first": [7, 19]}],
    "counts": {"rows_read": 18, "rows_skipped": 2, "empty_after_cleaning": 1, "repaired_tokens": 3,
               "duplicates_dropped": 1, "lines": 16},
    "repair_rules": {"guacaMarcole": "guacamole", "Patient": "patient"},
    "repair_samples": [["guacaMarcole,", "guacamole,"], ["Patient", "patient"]],
    "merged_speakers": {"Zelda": ["Zelda", "ZELDA", "Zelda [to Marco]"]},
    "examples": {"train": 5, "validation": 1, "test": 1},
}


@pytest.fixture
def written(script: Script, tmp_path: Path) -> Path:
    card = draft_card(script, "Zelda", make_examples(script))
    write_profile(script, "Zelda", card, REPORT, tmp_path / "pack")
    return tmp_path / "pack"


def test_writes_both_files(written):
    assert (written / "profile.md").is_file(), "profile.md written"
    assert (written / "profile.png").is_file(), "profile.png written"
    assert not [p.name for p in written.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_markdown_holds_phrases_stats_and_counts(written):
    md = (written / "profile.md").read_text(encoding="utf-8")
    assert md.startswith("# Zelda — Moonbase Diner\n"), md[:60]
    assert "| 1 | holy guacamole | 6 | " in md, "the catchphrase is the first signature phrase, said 6 times"
    assert "| lines | 7 |  |" in md, "the line count of the character"
    assert "| words per line (mean) | 6.0 | 8.0 |" in md, "mean words per line against the rest"
    assert "| lines with a question | 85.7% | 0.0% |" in md, "question rates: 6 of 7, none of 8"
    assert "| Marco | 4 |" in md and "| Priya | 2 |" in md, "main partners with counts"
    for step, count in REPORT["counts"].items():
        assert f"| {step} | {count} |" in md, f"cleaning count {step} missing"
    assert "`guacaMarcole,` → `guacamole,`" in md, "repair samples"
    assert "| `Patient` | `patient` |" in md, "repair rules"
    assert "| diner/s01.csv | table | 16 | 2 | 7, 19 |" in md, "files read"
    assert "| train | 5 |" in md and "| validation | 1 |" in md and "| test | 1 |" in md, "examples per split"
    assert "> Hello everyone, welcome to the grand reopening!" in md, "the greeting"
    assert "{{char}}: Holy guacamole" in md, "the example exchanges"
    assert "| 1 | Zelda | 7 | 46.7% |" in md and "| 3 | Priya | 3 | 20.0% |" in md, "top speakers"


def test_png_is_a_readable_chart(written):
    with Image.open(written / "profile.png") as image:
        assert image.format == "PNG", image.format
        assert image.size == (1200, 900), f"size {image.size}"


def test_profile_without_catchphrases_or_partners(script, tmp_path):
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Zelda", "extensions": {}}}
    lonely = Script(script.show, [line for line in script.lines if line.speaker == "Zelda"])
    write_profile(lonely, "Zelda", card, {}, tmp_path)
    md = (tmp_path / "profile.md").read_text(encoding="utf-8")
    assert "## Main partners\n\n_none_" in md, "no partners: said so"
    assert "## Cleaning\n\n_none_" in md, "an empty report: said so"
    with Image.open(tmp_path / "profile.png") as image:
        assert image.size == (1200, 900), image.size
