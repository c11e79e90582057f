"""The character card's format: Character Card V2 (and V1/V3 read), JSON or SillyTavern PNG, and its macros.

    save_card(card, Path("chandler.png"))                       # SillyTavern PNG (or .json)
    card = load_card(Path("chandler.png"))                      # V1 cards come back upgraded to V2
    render(card["data"]["system_prompt"], "Chandler Bing")      # {{char}} / {{user}} macros filled in
    import_card(pack, Path("card.png"), merge=True)             # `rolecast card import`
    export_card(pack, png_path=Path("out.png"))                 # `rolecast card export`

This is all the chat path needs of a card; drafting one from the scripts is ``draft.py``.
"""

from __future__ import annotations

import base64
import binascii
import colorsys
import hashlib
import io
import json
import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..errors import InputFileError
from ..files import atomic_write, write_json

log = logging.getLogger(__name__)

V2_FIELDS: dict[str, object] = {
    "name": "", "description": "", "personality": "", "scenario": "", "first_mes": "", "mes_example": "",
    "creator_notes": "", "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
    "tags": [], "creator": "", "character_version": "", "extensions": {},
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Partner(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _Phrase(BaseModel):
    model_config = ConfigDict(extra="allow")
    phrase: str
    count: int = 0


class _Stats(BaseModel):
    model_config = ConfigDict(extra="allow")
    words_per_line_median: float | None = None
    partners: list[_Partner] = []


class RolecastExtension(BaseModel):
    """What rolecast reads from a card's ``extensions.rolecast``: each field is checked on its own (``clean_card``)."""

    model_config = ConfigDict(extra="allow")
    show: str = ""
    fallback: str = ""
    aliases: list[str] = []
    catchphrases: list[_Phrase] = []
    stats: _Stats = _Stats()


def clean_card(card: dict, where: Path | str = "card") -> dict:
    """``card`` with every part rolecast reads from ``extensions`` of the right type; a wrong one is dropped with a
    warning (a card from another tool, or edited by hand, must not crash the chat later)."""
    data = card["data"]
    extensions = data.get("extensions")
    if not isinstance(extensions, dict):
        if extensions not in (None, {}):
            log.warning("%s: the card's 'extensions' is a %s, not an object: dropped", where, type(extensions).__name__)
        data["extensions"] = extensions = {}
    ours = extensions.get("rolecast")
    if ours is None:
        return card
    if not isinstance(ours, dict):
        log.warning("%s: the card's 'extensions.rolecast' is a %s, not an object: dropped", where, type(ours).__name__)
        extensions.pop("rolecast")
        return card
    kept = dict(ours)
    for name, field in RolecastExtension.model_fields.items():
        if name not in kept:
            continue
        try:
            TypeAdapter(field.annotation).validate_python(kept[name])  # checked, kept as written
        except ValidationError as exc:
            log.warning("%s: the card's 'extensions.rolecast.%s' is not valid (%s): dropped", where, name,
                        exc.errors()[0]["msg"])
            kept.pop(name)
    extensions["rolecast"] = kept
    return card


def render(text: str, char: str, user: str = "User") -> str:
    """Fill the ``{{char}}``/``{{user}}`` macros (any case, also the old ``<BOT>``/``<USER>``)."""
    macro = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(bot|user)>", re.IGNORECASE)
    return macro.sub(lambda m: user if (m.group(1) or m.group(2)).lower() == "user" else char, text)


def load_card(path: Path) -> dict:
    """A V2 card from a .json file or a SillyTavern .png; V1 and V3 cards come back as V2."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read the card {path} ({exc.strerror or exc})", "check the path") from None
    if raw.startswith(_PNG_SIGNATURE):
        text = _png_card_text(raw, path)
        how = "export the card again from SillyTavern (Export as PNG)"
    else:
        text = raw.decode("utf-8-sig", errors="replace")
        how = "pass a card .json (fix its JSON) or a SillyTavern card .png"
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InputFileError(f"{path} does not hold valid card JSON ({exc})", how) from None
    except RecursionError:
        raise InputFileError(f"{path} holds JSON nested too deep to be a card", how) from None
    return as_v2(obj, path)


def _png_card_text(raw: bytes, path: Path) -> str:
    chunks = read_png(raw, path)[1]
    key = "chara" if "chara" in chunks else "ccv3" if "ccv3" in chunks else None
    if key is None:
        raise InputFileError(f"{path} is a PNG without a character card in it (no 'chara' text chunk)",
                             "use a card PNG exported from SillyTavern, or a .json card")
    try:
        return base64.b64decode(chunks[key], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return chunks[key]  # some tools store the JSON itself, not its base64


#: Text chunks up to this size are read (Pillow's default cap of 1 MB is below some cards' size).
MAX_CARD_CHUNK = 64 * 2**20


def read_png(raw: bytes, path: Path):
    """The decoded image and its text chunks (tEXt, zTXt and iTXt, through Pillow). The whole image is decoded
    here, before anything is written: a truncated or damaged PNG, or a decompression bomb, is one line."""
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_CARD_CHUNK)
    PngImagePlugin.MAX_TEXT_MEMORY = max(PngImagePlugin.MAX_TEXT_MEMORY, 4 * MAX_CARD_CHUNK)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.convert("RGBA" if "A" in image.getbands() else "RGB"), dict(image.text)
    except Image.DecompressionBombError as exc:
        raise InputFileError(f"{path} is an image too large to be a card ({exc})", "export the card again") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, EOFError) as exc:
        raise InputFileError(f"{path} is a damaged or truncated PNG ({exc})", "export the card again") from None


def as_v2(obj: object, path: Path | str = "card") -> dict:
    """A card dict as V2: V1 (flat fields) upgraded, V3 relabelled, missing V2 fields filled in."""
    if not isinstance(obj, dict):
        raise InputFileError(f"{path} is not a character card (a JSON object was expected)", "use a card JSON or PNG")
    if isinstance(obj.get("data"), dict) and str(obj.get("spec", "")).startswith("chara_card_v"):
        card = dict(obj, spec="chara_card_v2", spec_version="2.0", data=dict(obj["data"]))
    elif "spec" not in obj and isinstance(obj.get("name"), str):  # V1: the fields at the top level
        data = {key: obj[key] for key in V2_FIELDS if key in obj}
        data.setdefault("creator_notes", obj.get("creatorcomment", ""))
        data["extensions"] = {key: obj[key] for key in ("talkativeness", "fav", "world") if key in obj}
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    else:
        raise InputFileError(f"{path} is not a character card (no 'spec' with 'data', no 'name')",
                             "use a Character Card V1/V2 JSON or PNG")
    data = card["data"]
    for key, default in V2_FIELDS.items():
        if data.get(key) is None:
            data[key] = type(default)()
        elif not isinstance(data[key], type(default)):
            raise InputFileError(f"{path}: card field '{key}' should be a {type(default).__name__}",
                                 f"fix '{key}' in the card")
    if not data["name"]:
        raise InputFileError(f"{path}: the card has no name", "give the card a name")
    return clean_card(card, path)


def save_card(card: dict, path: Path, avatar: Path | None = None) -> None:
    """Write ``card`` as pretty JSON (.json) or as a SillyTavern PNG (.png, card in a tEXt 'chara' chunk)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_json(path, card)
    elif suffix == ".png":
        payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii")
        atomic_write(path, _image_png(card, avatar, {"chara": payload}))
    else:
        raise InputFileError(f"cannot save a card as {path.name}", "give a path ending in .json or .png")
    log.info("card saved to %s", path)


def import_card(pack, path: Path, merge: bool = False) -> dict:
    """Put the card at ``path`` (V1/V2/V3, .json or SillyTavern .png) into ``pack``; return the new card.

    Replace (default): the imported card's fields replace the pack's. ``merge``: only its
    non-empty fields do. Either way rolecast's own data (``extensions.rolecast``: the
    speaker statistics, aliases and fallback line the chat relies on) is kept unless the
    imported card brings its own. A PNG's image becomes the pack's ``avatar.png``.
    """
    incoming = load_card(path)  # a PNG's image is decoded here too: nothing is written for a damaged one
    picture = read_png(Path(path).read_bytes(), Path(path))[0] if Path(path).suffix.lower() == ".png" else None
    current = pack.card()
    data = dict(current["data"]) if merge else {}
    for key, value in incoming["data"].items():
        if not merge or value not in ("", [], {}, None):
            data[key] = value
    extensions = dict(incoming["data"].get("extensions") or {})
    ours = current["data"].get("extensions", {}).get("rolecast")
    if ours is not None and "rolecast" not in extensions:
        extensions["rolecast"] = ours
    data["extensions"] = {**(current["data"].get("extensions") or {}), **extensions} if merge else extensions
    card = as_v2({**current, "data": data}, path)
    if data["name"] != current["data"].get("name"):
        log.warning("the card is named %r, the pack's character %r: the chat will call the character %r",
                    data["name"], current["data"].get("name"), data["name"])
    if picture is not None:  # the card's own picture: the web chat's avatar (written first: it cannot fail now)
        atomic_write(pack.path / "avatar.png", _image_bytes(picture))
    save_card(card, pack.part("card"))
    pack.record("card", imported=str(path), merged=merge)
    return card


def export_card(pack, json_path: Path | None = None, png_path: Path | None = None,
                avatar: Path | None = None) -> list[Path]:
    """Write the pack's card as a .json and/or a SillyTavern .png (the pack's avatar.png, else ``avatar``,
    else a portrait with the initials); return the paths written."""
    card = pack.card()
    written = []
    if json_path:
        save_card(card, json_path)
        written.append(Path(json_path))
    if png_path:
        picture = avatar or (pack.path / "avatar.png" if (pack.path / "avatar.png").exists() else None)
        save_card(card, png_path, picture)
        written.append(Path(png_path))
    return written


def _image_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _image_png(card: dict, avatar: Path | None, texts: dict[str, str]) -> bytes:
    """The avatar re-encoded as a PNG carrying ``texts`` as tEXt chunks (its old text chunks dropped), or a
    generated one."""
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    if avatar is None:
        image = initials_avatar(str(card.get("data", {}).get("name") or "?"))
    else:
        try:
            with Image.open(avatar) as opened:
                image = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputFileError(f"cannot read the avatar image {avatar} ({exc})", "pass a PNG or JPEG file") from None
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def initials_avatar(name: str, size: tuple[int, int] = (400, 600)):
    """A portrait: the name's initials on a colour picked from the name (stable across runs)."""
    from PIL import Image, ImageDraw, ImageFont

    hue = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:2], "big") / 65536
    top, bottom = (colorsys.hls_to_rgb(hue, light, 0.55) for light in (0.45, 0.25))
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):  # a vertical gradient, darker at the bottom where the name goes
        mix = y / (height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(255 * (a + (b - a) * mix)) for a, b in zip(top, bottom, strict=True)))
    initials = "".join(word[0] for word in re.findall(r"[^\W\d_]+", name)[:2]).upper() or "?"
    draw.text((width / 2, height * 0.42), initials, fill="white", anchor="mm",
              font=ImageFont.load_default(size=int(width * 0.42)))
    font_size = 40
    while font_size > 12 and draw.textlength(name, font=ImageFont.load_default(size=font_size)) > width * 0.85:
        font_size -= 2
    draw.text((width / 2, height * 0.85), name, fill="white", anchor="mm", font=ImageFont.load_default(size=font_size))
    return image
