"""Tests for rolecast.pack.card: JSON/PNG save and load (V1, V2, V3), broken cards, macros, `rolecast card import/export`.

The card under test is drafted from test_draft's invented sitcom ("Moonbase Diner").
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rolecast.errors import InputFileError, RolecastError
from rolecast.pack.card import V2_FIELDS, load_card, render, save_card
from test_draft import drafted_card


@pytest.fixture
def card() -> dict:
    return drafted_card()


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


@pytest.mark.parametrize("extensions", [
    {"rolecast": []},
    {"rolecast": {"stats": [], "aliases": "House", "fallback": 3, "catchphrases": ["a", 2]}},
    {"rolecast": {"stats": {"partners": "Wilson"}}},
])
def test_a_card_with_wrong_types_imports_and_the_chat_still_loads(sample_pack, tmp_path, extensions, caplog):
    """`card import` of such a card succeeded, then serving died with AttributeError: now each wrong field is dropped
    with a warning, and the Performer loads and answers."""
    import json
    import shutil

    from conftest import FakeBackend
    from rolecast.chat.performer import Performer
    from rolecast.pack import Pack
    from rolecast.pack.card import import_card

    pack_dir = tmp_path / "pack"
    shutil.copytree(sample_pack, pack_dir)
    card = tmp_path / "odd.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "extensions": extensions}}))
    with caplog.at_level("WARNING"):
        import_card(Pack.open(pack_dir), card)
    assert "dropped" in caplog.text
    performer = Performer(Pack.open(pack_dir), FakeBackend())
    assert performer.reply([], "Hello?").text


def test_extensions_that_are_not_an_object_are_refused_in_one_line(sample_pack, tmp_path):
    import json
    import shutil

    from rolecast.errors import InputFileError
    from rolecast.pack import Pack
    from rolecast.pack.card import import_card

    pack_dir = tmp_path / "pack"
    shutil.copytree(sample_pack, pack_dir)
    before = (pack_dir / "card.json").read_bytes()
    card = tmp_path / "odd.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "extensions": []}}))
    with pytest.raises(InputFileError, match="'extensions' should be a dict"):
        import_card(Pack.open(pack_dir), card)
    assert (pack_dir / "card.json").read_bytes() == before


def test_a_hand_edited_pack_card_is_checked_when_read(sample_pack, tmp_path):
    import json
    import shutil

    from conftest import FakeBackend
    from rolecast.chat.performer import Performer
    from rolecast.pack import Pack

    pack_dir = tmp_path / "pack"
    shutil.copytree(sample_pack, pack_dir)
    card = json.loads((pack_dir / "card.json").read_text())
    card["data"]["extensions"]["rolecast"] = {"stats": "lots", "aliases": None}
    (pack_dir / "card.json").write_text(json.dumps(card))
    assert Performer(Pack.open(pack_dir), FakeBackend()).reply([], "Hello?").text


def _card_png(tmp_path, how: str) -> Path:
    import base64
    import io

    from PIL import Image, PngImagePlugin

    payload = base64.b64encode(json.dumps({"spec": "chara_card_v2", "data": {"name": "Iris"}}).encode()).decode()
    info = PngImagePlugin.PngInfo()
    if how == "itxt":
        info.add_itxt("chara", payload)
    else:
        info.add_text("chara", payload, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(buffer, format="PNG", pnginfo=info)
    path = tmp_path / f"{how}.png"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("how", ["itxt", "ztxt"])
def test_cards_in_itxt_and_ztxt_chunks_load(tmp_path, how):
    assert load_card(_card_png(tmp_path, how))["data"]["name"] == "Iris"


def _pack_copy(sample_pack, tmp_path):
    import shutil

    from rolecast.pack import Pack

    shutil.copytree(sample_pack, tmp_path / "pack")
    return Pack.open(tmp_path / "pack")


def test_a_truncated_png_card_is_one_line_and_changes_nothing(sample_pack, tmp_path):
    from rolecast.pack.card import import_card

    good = _card_png(tmp_path, "itxt").read_bytes()
    idat = good.index(b"IDAT")
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good[:idat + 6] + good[-12:])  # the image data cut short, the file still ends in IEND
    pack = _pack_copy(sample_pack, tmp_path)
    before = {p.name: p.read_bytes() for p in pack.path.iterdir() if p.is_file()}
    with pytest.raises(InputFileError) as caught:
        import_card(pack, bad)
    assert "\n" not in str(caught.value)
    assert {p.name: p.read_bytes() for p in pack.path.iterdir() if p.is_file()} == before, "nothing written"


def test_a_decompression_bomb_is_refused(sample_pack, tmp_path):
    import struct
    import zlib

    from rolecast.pack.card import import_card

    good = bytearray(_card_png(tmp_path, "itxt").read_bytes())
    ihdr = good.index(b"IHDR")
    good[ihdr + 4:ihdr + 12] = struct.pack(">II", 200_000, 200_000)  # 40 gigapixels claimed
    good[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(good[ihdr:ihdr + 17])))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(good))
    with pytest.raises(InputFileError, match="too large"):
        import_card(_pack_copy(sample_pack, tmp_path), bomb)
