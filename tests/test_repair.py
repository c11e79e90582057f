"""Tests for rolecast.ingest.repair: labels spliced into dialogue by an upstream search-and-replace.

The fixtures are invented. The last tests read the real corpora in ../shared/data and skip without it.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import needs_shared_data
from rolecast.ingest.repair import Repairs, learn_repairs

# Invented clean lines; {w} marks words the damage reaches. The damage: "gus" -> "Gus", "ana" -> "Ana",
# "chi" -> "Vok" (a label renamed), "nurse" -> "Nurse".
CLEAN_LINES = [
    "We met in august near the canal.",
    "That banana tastes of disgust and fungus.",
    "I was watching the machine all night.",
    "She is teaching the child to read.",
    "The children love chicken and asparagus.",
    "My manager wants better management.",
    "The esophagus is fine, the management is not.",
    "Is the iguana touching the bananas?",
    "He keeps reaching for the marijuana.",
    "Put on the bandana before the canals freeze.",
    "They managed to manage the managers.",
    "It was disgusting, but manageable.",
    "Ask Hunter about the nurse before you go.",
    "I told Hunter that the nurse was right.",
    "We did the analysis and the anatomy test.",
    "My child cannot sleep.",
    "Take the nurses to Hunter now.",
    "Analysis done, nurse.",
    "Hunter, the nurse needs a child seat.",
    "Nobody asked DeMarco or McDonald about his iPhone.",
    "AUGUST IS OVER, the nurse said.",
]
RAW_DAMAGED = ["You canNOT go."]  # a stray capital no label explains


def damage(line: str) -> str:
    """The upstream damage, applied to invented text."""
    for low, label in (("gus", "Gus"), ("ana", "Ana"), ("chi", "Vok"), ("nurse", "Nurse")):
        line = re.sub(low, label, line, flags=re.IGNORECASE)
    return line


LABELS = Counter({"Hunter": 120, "Gus": 40, "Ana": 30, "Vok": 25, "Nurse": 12, "Marco": 3})


@pytest.fixture(scope="module")
def repairs() -> Repairs:
    return learn_repairs([damage(line) for line in CLEAN_LINES] * 5 + RAW_DAMAGED, LABELS)


def test_damage_fixture_looks_like_the_real_damage() -> None:
    assert damage("I was watching the banana") == "I was watVokng the bAnana", "fixture damage is wrong"


def test_learns_splice_rules(repairs: Repairs) -> None:
    assert repairs.rules == {"Gus": "gus", "Ana": "ana", "Vok": "chi"}, f"rules learned: {repairs.rules}"


def test_learns_common_noun_not_names(repairs: Repairs) -> None:
    assert repairs.common_nouns == {"Nurse"}, f"common nouns learned: {repairs.common_nouns}"


@pytest.mark.parametrize(
    ("damaged", "clean", "changed"),
    [
        ("I was watVokng the maVokne.", "I was watching the machine.", 2),
        ("That bAnana is disGusting.", "That banana is disgusting.", 2),
        ("Feed my Vokld some Vokcken.", "Feed my child some chicken.", 2),
        ("Vokldren love it.", "Children love it.", 1),
        ("Ask the Nurse and the Nurses.", "Ask the nurse and the nurses.", 2),
        ("The mAnager read the Analysis.", "The manager read the analysis.", 2),
        ("AUGusT, not auGust.", "AUGUST, not august.", 2),
        ("You canNOT go.", "You cannot go.", 1),
    ],
)
def test_repairs_damaged_text(repairs: Repairs, damaged: str, clean: str, changed: int) -> None:
    assert repairs.repair(damaged) == (clean, changed), f"repair of {damaged!r}"


@pytest.mark.parametrize(
    "text",
    [
        "Ask Hunter about it, then tell Hunter.",  # a name mid-sentence
        "Nurse, come here.",  # sentence-initial capitals
        "Analysis first. Nurse Hunter agrees.",
        "DeMarco bought McDonald an iPhone.",  # internal capitals of names
        "I never watched the human patient.",  # clean text
    ],
)
def test_leaves_clean_text_and_names_alone(repairs: Repairs, text: str) -> None:
    assert repairs.repair(text) == (text, 0), f"changed clean text {text!r}"


def test_clean_corpus_learns_nothing() -> None:
    clean = CLEAN_LINES + ["We never saw the human side.", "Eve and the man left.", "Patient zero is the patient."]
    labels = Counter({"Eve": 50, "Man": 20, "Patient": 10, "Hunter": 40, "Gus": 5})
    repairs = learn_repairs(clean * 3, labels)
    assert repairs.rules == {}, f"rules learned on a clean corpus: {repairs.rules}"
    assert repairs.common_nouns == set(), f"common nouns on a clean corpus: {repairs.common_nouns}"
    assert sum(repairs.repair(line)[1] for line in clean) == 0, "a clean corpus was changed"


def test_empty_corpus() -> None:
    repairs = learn_repairs([], Counter())
    assert repairs.repair("Nothing to do.") == ("Nothing to do.", 0), "empty corpus must learn nothing"


# ---- real data (skipped without ../shared/data) -------------------------------------------------------------


def _clean(text: str) -> str:
    import ftfy

    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", ftfy.fix_text(text))
    return " ".join(re.sub(r"[\[(].*$", " ", text).split())


def _read(paths: list[Path], speaker: str, line: str) -> tuple[list[str], Counter[str]]:
    texts: list[str] = []
    labels: Counter[str] = Counter()
    for path in paths:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                name = re.sub(r"\s*[\[(].*$", "", (row.get(speaker) or "").strip())
                labels[name] += bool(name)
                if text := _clean(row.get(line) or ""):
                    texts.append(text)
    return texts, +labels


@pytest.fixture(scope="module")
def house() -> tuple[list[str], Repairs]:
    paths = sorted(needs_shared_data("house-md").glob("season*.csv"))
    texts, labels = _read(paths, "name", "line")
    return texts, learn_repairs(texts, labels)


@pytest.mark.slow
def test_house_rules_and_nouns(house: tuple[list[str], Repairs]) -> None:
    _, repairs = house
    for label, x in {"Park": "chi", "Eve": "eve", "Man": "man", "Rob": "rob"}.items():
        assert repairs.rules.get(label) == x, f"rule for {label}: {repairs.rules.get(label)!r}"
    assert "Patient" in repairs.common_nouns, f"common nouns: {repairs.common_nouns}"
    for name in ("House", "Chase", "Foreman", "Park", "Thirteen", "Wilson", "Cuddy"):
        assert name not in repairs.common_nouns, f"{name} taken for a common noun"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damaged", "clean"),
    [
        ("I was watParkng the maParkne.", "I was watching the machine."),
        ("You nEver know.", "You never know."),
        ("It is only huMan.", "It is only human."),
        ("Ask the Patient, not House.", "Ask the patient, not House."),
        ("Chase has a pRoblem with the Patients.", "Chase has a problem with the patients."),
        ("Patient is stable. Tell Wilson Even so.", "Patient is stable. Tell Wilson even so."),
    ],
)
def test_house_repairs(house: tuple[list[str], Repairs], damaged: str, clean: str) -> None:
    assert house[1].repair(damaged)[0] == clean, f"repair of {damaged!r}"


@pytest.mark.slow
def test_house_totals(house: tuple[list[str], Repairs]) -> None:
    texts, repairs = house
    total = sum(repairs.repair(text)[1] for text in texts)
    assert 6_000 <= total <= 16_000, f"{total} tokens repaired on House"


@pytest.mark.slow
def test_friends_is_left_alone() -> None:
    path = needs_shared_data("friends", "friends.csv")
    texts, labels = _read([path], "speaker", "text")
    repairs = learn_repairs(texts, labels)
    total = sum(repairs.repair(text)[1] for text in texts)
    assert total < 50, f"{total} tokens changed on Friends; rules {repairs.rules}, nouns {repairs.common_nouns}"
