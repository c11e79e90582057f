"""Tests for rolecast.pack.draft: signature phrases, statistics and the card drafted from the scripts.

The fixture is an invented sitcom ("Moonbase Diner") whose Zelda keeps saying "holy
guacamole" and asks many questions. The real-data test at the end skips without the corpora.
"""

from __future__ import annotations

import csv

import pytest

from conftest import needs_shared_data, script_of
from rolecast.errors import UnknownCharacterError
from rolecast.ingest.script import GROUP, NARRATION, UNKNOWN, Line, Script
from rolecast.pack.card import V2_FIELDS
from rolecast.pack.draft import character_stats, draft_card, signature_phrases, tokens

SHOW = "Moonbase Diner"
ROWS = [
    ("s01e01", "1", NARRATION, "The diner at dawn."),
    ("s01e01", "1", "Marco", "Morning, the coffee machine is broken again."),
    ("s01e01", "1", "Zelda", "Holy guacamole, is it broken again?"),
    ("s01e01", "1", "Priya", "It was working fine yesterday before the rush."),
    ("s01e01", "1", "Zelda", "Holy guacamole, who touched it this time?"),
    ("s01e01", "1", "Marco", "Nobody touched it, it just stopped working."),
    ("s01e01", "2", "Priya", "Did you order the new pans from the supplier?"),
    ("s01e01", "2", "Marco", "I ordered them on Monday, they come tomorrow."),
    ("s01e01", "2", "Zelda", "Holy guacamole, tomorrow? Why so slow?"),
    ("s01e02", "1", "Zelda", "Hello everyone, welcome to the grand reopening!"),
    ("s01e02", "1", "Marco", "The new pans arrived and they look great."),
    ("s01e02", "1", "Zelda", "Holy guacamole, are those copper?"),
    ("s01e02", "1", "Priya", "They are copper and they cost a fortune."),
    ("s01e02", "2", "Marco", "The oven is making that noise again."),
    ("s01e02", "2", NARRATION, "A loud clang."),
    ("s01e02", "2", "Zelda", "Holy guacamole, what was that?"),
    ("s01e02", "2", "Priya", "The oven door fell off its hinges."),
    ("s01e02", "2", "Zelda", "Can we fix it before lunch?"),
    ("s01e03", "1", "Priya", "Hi Zelda, the inspector is coming at noon."),
    ("s01e03", "1", "Zelda", "Holy guacamole! Is the kitchen clean?"),
    ("s01e03", "1", "Marco", "The kitchen is clean but the storage room is a mess."),
    ("s01e03", "1", "Zelda", "Then we clean the storage room right now."),
    ("s01e03", "1", GROUP, "Right now!"),
]
ZELDA = [text for _, _, speaker, text in ROWS if speaker == "Zelda"]
OTHERS = [text for _, _, speaker, text in ROWS if speaker in ("Marco", "Priya")]


def moonbase() -> Script:
    return script_of(ROWS, SHOW)


def drafted_card() -> dict:
    """Zelda's card, drafted from the sitcom (test_card saves and loads it)."""
    script = moonbase()
    return draft_card(script, "Zelda", make_examples(script, "Zelda"), aliases=["ZELDA"])


@pytest.fixture
def script() -> Script:
    return moonbase()


def make_examples(script: Script, character: str) -> list[dict]:
    """Examples in the documented format: the previous line (named) → the character's line."""
    out = []
    for scene in script.scenes():
        for pos, line in enumerate(scene):
            if line.speaker == character:
                context = [x for x in scene[:pos] if x.is_character and x.speaker != character][-1:]
                out.append({"id": f"{line.episode}-{line.scene}-{line.index}", "episode": line.episode,
                            "scene": line.scene,
                            "messages": [{"role": "user", "content": f"{x.speaker}: {x.text}"} for x in context],
                            "completion": [{"role": "assistant", "content": line.text}]})
    return out


@pytest.fixture
def card() -> dict:
    return drafted_card()


# ----------------------------------------------------------------------------- phrases and stats


def test_tokens_keep_apostrophes():
    assert tokens("How you doin'? I DON'T know…") == ["how", "you", "doin'", "i", "don't", "know"], "word tokens"


def test_catchphrase_is_the_top_signature_phrase(script):
    phrases = signature_phrases(script, "Zelda")
    assert phrases, "Zelda says 'holy guacamole' 6 times, nobody else does: it must be found"
    assert phrases[0]["phrase"] == "holy guacamole", f"top phrase is {phrases[0]}"
    assert phrases[0]["count"] == 6, f"count of the catchphrase: {phrases[0]}"
    assert phrases[0]["z"] > 1.645, f"z must pass the one-sided 5% threshold: {phrases[0]}"
    shown = [p["phrase"] for p in phrases]
    assert "holy" not in shown and "guacamole" not in shown, f"parts of the longer phrase must be absorbed: {shown}"
    assert set(phrases[0]) == {"phrase", "count", "z"}, f"keys: {phrases[0]}"


def test_signature_phrases_min_count_and_k(script):
    assert signature_phrases(script, "Zelda", min_count=7) == [], "6 uses never pass min_count=7"
    assert len(signature_phrases(script, "Zelda", k=1, min_count=1)) == 1, "k caps the list"


def test_unknown_character(script):
    with pytest.raises(UnknownCharacterError) as err:
        signature_phrases(script, "Gandalf")
    assert "\n" not in str(err.value), "one-line message"


def test_stats_are_exact(script):
    stats = character_stats(script, "Zelda")
    expected = {
        "lines": 9, "words": 56, "words_per_line_mean": 6.22, "words_per_line_median": 6.0,
        "question_rate": 0.777778, "exclamation_rate": 0.222222, "episodes": 3, "episodes_total": 3,
        "scenes": 5, "share": 0.45,
        "partners": [{"name": "Marco", "count": 5}, {"name": "Priya", "count": 3}],
        "others": {"words_per_line_mean": 8.0, "question_rate": 0.090909, "exclamation_rate": 0.0},
    }
    assert stats == expected, f"stats differ: {stats}"


# ----------------------------------------------------------------------------- the drafted card


def test_card_has_every_v2_field_with_valid_types(card):
    assert card["spec"] == "chara_card_v2" and card["spec_version"] == "2.0", f"spec: {card['spec']}"
    data = card["data"]
    for key, default in V2_FIELDS.items():
        assert key in data, f"missing V2 field {key}"
        assert isinstance(data[key], type(default)), f"{key} is a {type(data[key]).__name__}"
    assert data["name"] == "Zelda", data["name"]
    assert all(isinstance(t, str) for t in data["tags"] + data["alternate_greetings"]), "lists of strings"
    assert "{{char}}" in data["system_prompt"], data["system_prompt"]
    assert "{{char}}" in data["post_history_instructions"], data["post_history_instructions"]
    assert SHOW in data["description"] and "Marco" in data["description"], data["description"]
    assert "holy guacamole" in data["personality"], data["personality"]
    assert "asks many questions" in data["personality"], data["personality"]


def test_card_extensions(card):
    ours = card["data"]["extensions"]["rolecast"]
    assert ours["show"] == SHOW, ours["show"]
    assert ours["aliases"] == ["ZELDA"], ours["aliases"]
    assert ours["catchphrases"][0]["phrase"] == "holy guacamole", ours["catchphrases"]
    assert ours["stats"]["lines"] == 9, ours["stats"]


def test_greetings_are_real_lines(card):
    data = card["data"]
    assert data["first_mes"] == "Hello everyone, welcome to the grand reopening!", data["first_mes"]
    assert data["alternate_greetings"] == [
        "Holy guacamole, is it broken again?",  # answers "Morning, ..."
        "Holy guacamole! Is the kitchen clean?",  # answers "Hi Zelda, ..."
        "Holy guacamole, who touched it this time?",
    ], data["alternate_greetings"]
    assert all(g in ZELDA for g in data["alternate_greetings"]), "alternate greetings must be Zelda's lines"


def test_mes_example_is_three_real_exchanges(card):
    blocks = card["data"]["mes_example"].split("<START>\n")[1:]
    assert len(blocks) == 3, card["data"]["mes_example"]
    for block in blocks:
        user, char = block.strip("\n").split("\n")
        assert user.startswith("{{user}}: ") and user.removeprefix("{{user}}: ") in OTHERS, f"not a real line: {user}"
        assert char.startswith("{{char}}: ") and char.removeprefix("{{char}}: ") in ZELDA, f"not Zelda's line: {char}"
        assert "holy guacamole" in char.lower(), f"replies with the catchphrase are preferred: {char}"


def test_draft_is_deterministic(script):
    examples = make_examples(script, "Zelda")
    assert draft_card(script, "Zelda", examples) == draft_card(script, "Zelda", examples), "same input, same card"


def test_draft_without_examples(script):
    assert draft_card(script, "Zelda", [])["data"]["mes_example"] == "", "no examples, no mes_example"


# ----------------------------------------------------------------------------- import / export


# ----------------------------------------------------------------------------- real data (skipped without it)

def friends_script() -> Script:
    path = needs_shared_data("friends", "friends.csv")
    labels = {"Scene Directions": NARRATION, "#ALL#": GROUP, "": UNKNOWN}
    with open(path, encoding="utf-8", newline="") as fh:
        lines = [Line("Friends", f"s{int(row['season']):02}e{int(row['episode']):02}", row["scene"], i,
                      labels.get(row["speaker"].strip(), row["speaker"].strip()), row["text"])
                 for i, row in enumerate(csv.DictReader(fh))]
    return Script("Friends", lines)


def house_script() -> Script:
    folder = needs_shared_data("house-md")
    lines: list[Line] = []
    for season in range(1, 9):
        with open(folder / f"season{season}.csv", encoding="utf-8-sig", newline="") as fh:
            for j, row in enumerate(csv.DictReader(fh)):
                speaker = (row["name"] or "").split("[")[0].strip() or UNKNOWN
                lines.append(Line("House MD", f"season{season}", str(j // 40), len(lines), speaker, row["line"] or ""))
    return Script("House MD", lines)


@pytest.mark.slow
def test_real_friends_chandler_card_and_house_phrases():
    script = friends_script()
    card = draft_card(script, "Chandler Bing", make_examples(script, "Chandler Bing"))
    ours = card["data"]["extensions"]["rolecast"]
    assert ours["catchphrases"], "Chandler has signature phrases"
    assert ours["stats"]["partners"], "Chandler has partners"
    assert card["data"]["first_mes"] and card["data"]["mes_example"].count("<START>") == 3, "greeting and examples"
    house = house_script()
    phrases = signature_phrases(house, "House")
    assert phrases, "House has signature phrases"
