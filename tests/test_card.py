"""Tests for rolecast.card: signature phrases, statistics, the drafted card, import/export, macros.

The fixture is an invented sitcom ("Moonbase Diner") whose Zelda keeps saying "holy
guacamole" and asks many questions. The real-data test at the end skips without the corpora.
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rolecast.card import (
    V2_FIELDS,
    character_stats,
    draft_card,
    load_card,
    render,
    save_card,
    signature_phrases,
    tokens,
)
from rolecast.errors import InputFileError, RolecastError, UnknownCharacterError
from rolecast.script import GROUP, NARRATION, UNKNOWN, Line, Script

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


@pytest.fixture
def script() -> Script:
    return Script(SHOW, [Line(SHOW, ep, scene, i, speaker, text) for i, (ep, scene, speaker, text) in enumerate(ROWS)])


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
def card(script: Script) -> dict:
    return draft_card(script, "Zelda", make_examples(script, "Zelda"), aliases=["ZELDA"])


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


def test_json_round_trip(card, tmp_path):
    path = tmp_path / "zelda.json"
    save_card(card, path)
    assert json.loads(path.read_text(encoding="utf-8")) == card, "the file is the card as JSON"
    assert load_card(path) == card, "JSON round trip"


def test_png_round_trip_with_generated_avatar(card, tmp_path):
    path = tmp_path / "zelda.png"
    save_card(card, path)
    with Image.open(path) as image:
        image.load()
        assert image.size == (400, 600), f"generated avatar size {image.size}"
        stored = json.loads(base64.b64decode(image.text["chara"]))  # what SillyTavern reads
    assert stored == card, "a standard PNG reader finds the card in the tEXt 'chara' chunk"
    assert load_card(path) == card, "PNG round trip"


def test_png_round_trip_with_avatar_replaces_old_card(card, tmp_path):
    avatar = tmp_path / "avatar.png"
    save_card({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Someone else"}}, avatar)
    path = tmp_path / "zelda.png"
    save_card(card, path, avatar=avatar)
    assert load_card(path) == card, "the avatar's old card must be dropped, the new one kept"
    with Image.open(path) as image:
        assert image.size == (400, 600), image.size


def test_bad_save_suffix(card, tmp_path):
    with pytest.raises(InputFileError):
        save_card(card, tmp_path / "zelda.txt")


V1 = {"name": "Zelda", "description": "Runs a diner.", "personality": "curious", "scenario": "The diner.",
      "first_mes": "Hello everyone!", "mes_example": "", "creatorcomment": "made by hand", "talkativeness": "0.5"}


def _check_v1(loaded: dict) -> None:
    assert loaded["spec"] == "chara_card_v2", loaded
    data = loaded["data"]
    assert data["description"] == "Runs a diner." and data["first_mes"] == "Hello everyone!", data
    assert data["creator_notes"] == "made by hand", data["creator_notes"]
    assert data["extensions"] == {"talkativeness": "0.5"}, data["extensions"]
    assert data["tags"] == [] and data["alternate_greetings"] == [] and data["system_prompt"] == "", data
    assert set(V2_FIELDS) <= set(data), f"missing fields: {set(V2_FIELDS) - set(data)}"


def test_v1_json_is_upgraded(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(V1), encoding="utf-8")
    _check_v1(load_card(path))


def _png_with_text(tmp_path: Path, key: bytes, value: bytes) -> Path:
    path = tmp_path / "card.png"
    Image.new("RGB", (8, 8), "red").save(path)
    raw = path.read_bytes()
    body = key + b"\0" + value
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    path.write_bytes(raw[:-12] + chunk + raw[-12:])
    return path


def test_v1_png_is_upgraded(tmp_path):
    _check_v1(load_card(_png_with_text(tmp_path, b"chara", base64.b64encode(json.dumps(V1).encode()))))


def test_ccv3_png_is_read_as_v2(tmp_path):
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Zelda", "nickname": "Z"}}
    loaded = load_card(_png_with_text(tmp_path, b"ccv3", base64.b64encode(json.dumps(v3).encode())))
    assert loaded["spec"] == "chara_card_v2" and loaded["spec_version"] == "2.0", loaded
    assert loaded["data"]["name"] == "Zelda" and loaded["data"]["nickname"] == "Z", loaded["data"]


@pytest.mark.parametrize("name, content", [
    ("truncated.png", "truncated"),
    ("no-card.png", "plain"),
    ("bad.json", b'{"spec": "chara_card_v2", "data": {'),
    ("list.json", b"[1, 2]"),
    ("nameless.json", b'{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"description": "x"}}'),
    ("badtype.json", b'{"spec": "chara_card_v2", "data": {"name": "Z", "tags": "a,b"}}'),
    ("missing.json", None),
])
def test_broken_cards_raise_input_file_error(tmp_path, card, name, content):
    path = tmp_path / name
    if content == "truncated":
        save_card(card, path)
        path.write_bytes(path.read_bytes()[:60])
    elif content == "plain":
        Image.new("RGB", (8, 8), "blue").save(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError) as err:
        load_card(path)
    message = str(err.value)
    assert isinstance(err.value, RolecastError) and "\n" not in message, f"one line: {message!r}"
    assert err.value.hint, f"a hint saying how to fix it: {message}"
    if content == "plain":
        assert "chara" in message, message


# ----------------------------------------------------------------------------- macros


def test_render_macros():
    text = "{{char}} greets {{user}}; {{Char}} and {{ USER }}; <BOT> meets <user>."
    assert render(text, "Zelda", "Sam") == "Zelda greets Sam; Zelda and Sam; Zelda meets Sam.", render(text, "Zelda", "Sam")
    assert render("{{user}}", "Zelda") == "User", "default user name"
    assert render("{{char}}", r"A\1 {{user}}", "Sam") == r"A\1 {{user}}", "names are inserted literally, once"


# ----------------------------------------------------------------------------- real data (skipped without it)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def friends_script() -> Script:
    labels = {"Scene Directions": NARRATION, "#ALL#": GROUP, "": UNKNOWN}
    with open(DATA / "friends" / "friends.csv", encoding="utf-8", newline="") as fh:
        lines = [Line("Friends", f"s{int(row['season']):02}e{int(row['episode']):02}", row["scene"], i,
                      labels.get(row["speaker"].strip(), row["speaker"].strip()), row["text"])
                 for i, row in enumerate(csv.DictReader(fh))]
    return Script("Friends", lines)


def house_script() -> Script:
    lines: list[Line] = []
    for season in range(1, 9):
        with open(DATA / "house-md" / f"season{season}.csv", encoding="utf-8-sig", newline="") as fh:
            for j, row in enumerate(csv.DictReader(fh)):
                speaker = (row["name"] or "").split("[")[0].strip() or UNKNOWN
                lines.append(Line("House MD", f"season{season}", str(j // 40), len(lines), speaker, row["line"] or ""))
    return Script("House MD", lines)


@pytest.mark.skipif(not DATA.is_dir(), reason="real corpora not present (../shared/data)")
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


# ----------------------------------------------------------------------------- the card commands


def _pack_for_cards(tmp_path: Path, card: dict) -> Path:
    from rolecast.pack import new_pack_info

    folder = tmp_path / "pack"
    folder.mkdir()
    save_card(card, folder / "card.json")
    (folder / "pack.json").write_text(json.dumps(new_pack_info(card["data"]["name"], "Show")))
    return folder


def test_card_export_png_round_trips_through_import(tmp_path, card):
    from rolecast.cli import main

    pack = _pack_for_cards(tmp_path, card)
    assert main(["card", "export", str(pack), "--png", str(tmp_path / "out.png"), "--json", str(tmp_path / "out.json")]) == 0
    assert load_card(tmp_path / "out.png") == card == load_card(tmp_path / "out.json")
    assert main(["card", "export", str(pack)]) == 2, "nothing to write is a one-line error"


def test_card_import_v3_png_replaces_keeps_rolecast_data_and_sets_the_avatar(tmp_path, card):
    from rolecast.cli import main

    pack = _pack_for_cards(tmp_path, card)
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0",
          "data": {"name": card["data"]["name"], "description": "Rewritten by a fan.", "first_mes": "Well, hello."}}
    png = _png_with_text(tmp_path, b"ccv3", base64.b64encode(json.dumps(v3).encode()))
    assert main(["card", "import", str(png), "--pack", str(pack)]) == 0
    new = json.loads((pack / "card.json").read_text())["data"]
    assert new["description"] == "Rewritten by a fan." and new["first_mes"] == "Well, hello."
    assert new["personality"] == "", "replace: fields the card leaves out are empty"
    assert new["extensions"]["rolecast"] == card["data"]["extensions"]["rolecast"], "rolecast's own data is kept"
    assert Image.open(pack / "avatar.png").size == (8, 8)


def test_card_import_merge_takes_only_filled_fields(tmp_path, card):
    from rolecast.cli import main

    pack = _pack_for_cards(tmp_path, card)
    update = tmp_path / "update.json"
    update.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0",
                                  "data": {"name": card["data"]["name"], "scenario": "A storm.", "personality": ""}}))
    assert main(["card", "import", str(update), "--pack", str(pack), "--merge"]) == 0
    new = json.loads((pack / "card.json").read_text())["data"]
    assert new["scenario"] == "A storm." and new["personality"] == card["data"]["personality"]
    assert main(["card", "import", str(tmp_path / "absent.json"), "--pack", str(pack)]) == 2
