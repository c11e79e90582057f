"""The character card: a Character Card V2 drafted from the scripts, and its import/export.

    phrases = signature_phrases(script, "Chandler Bing")        # [{"phrase", "count", "z"}], best first
    card = draft_card(script, "Chandler Bing", examples)        # chara_card_v2 dict
    save_card(card, Path("chandler.png"))                       # SillyTavern PNG (or .json)
    card = load_card(Path("chandler.png"))                      # V1 cards come back upgraded to V2
    render(card["data"]["system_prompt"], "Chandler Bing")      # {{char}} / {{user}} macros filled in

Everything in a drafted card comes from the data: the description and personality are
line statistics and signature phrases (not an invented biography), the greetings and
example exchanges are real lines. Drafting is deterministic.
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
import statistics
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputFileError
from .files import atomic_write, write_json
from .script import Script
from .speakers import find_character

log = logging.getLogger(__name__)

# Words with apostrophes ("don't", "doin'") are one token. Only line ends and brackets stop an
# n-gram: transcribers punctuate catchphrases every which way ("Oh.... my.... God.", "Oh, my, god.").
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*(?:(?<=in)')?|[\n()\[\]]")
_BOUNDARIES = ("\n", "(", ")", "[", "]")
#: Over-representation must be significant to count: one-sided 5%, as only "more" is looked for.
MIN_Z = 1.645
#: A shorter n-gram is dropped when a longer candidate holding it keeps this share of its count.
ABSORB = 0.8
# Very common words: one of them, or a pair, is grammar rather than a catchphrase. Three in a
# row that one character keeps repeating ("could i be", "how you doin'") are a verbal tic: kept.
_COMMON_WORDS = """
a about after again all also always am an and another any anything are around as at back be because been before
being but by came can can't come could couldn't day did didn't do does doesn't doing don't done down even ever every
everything feel fine first for from get gets getting give go goes going gonna good got gotta great guess guy had
hadn't has hasn't have haven't having he he'd he'll he's her here here's hers him his how i i'd i'll i'm i've if in
into is isn't it it's its just kind know last let let's like little look lot love made make man many may maybe me
mean might more most much must my myself need never new no nor not nothing now of off oh ok okay old on one only or
other our out over people please put really right said same say see she she'd she'll she's should shouldn't so some
something still sure take talk tell than thank thanks that that's the their them then there there's these they
they'd they'll they're they've thing things think this those time to told too took two uh um up us very wait want
was wasn't way we we'd we'll we're we've well were weren't what what's when where which who who's whom whose why will
with won't work would wouldn't yeah year yes yet you you'd you'll you're you've your yours yourself
"""
COMMON = frozenset(_COMMON_WORDS.split())
_GREETING = re.compile(r"\b(hi|hey|hello|howdy|hiya|yo|morning|evening|welcome|greetings|what's up|how are you)\b", re.I)
V2_FIELDS: dict[str, object] = {
    "name": "", "description": "", "personality": "", "scenario": "", "first_mes": "", "mes_example": "",
    "creator_notes": "", "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
    "tags": [], "creator": "", "character_version": "", "extensions": {},
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tokens(text: str) -> list[str]:
    """Lowercased word tokens and boundary marks, as signature phrases count them."""
    return _TOKEN.findall(text.lower().replace("\u2019", "'").replace("\u2018", "'"))


def _resolve(script: Script, character: str) -> str:
    counts = script.speakers()
    return character if character in counts else find_character(character, counts)


# ----------------------------------------------------------------------------- signature phrases


def signature_phrases(script: Script, character: str, k: int = 20, min_count: int = 5) -> list[dict]:
    """N-grams (1–3 words) the character says more than the other speakers, best first.

    Weighted log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn
    2008), the prior being the pooled counts of both sides; ``z`` is the log-odds over its
    standard deviation. Counting is numpy over integer-coded n-grams: ~1 s for 75k lines.
    """
    character = _resolve(script, character)
    spoken = [line for line in script.lines if line.is_character]
    mine = tokens("\n".join(line.text for line in spoken if line.speaker == character))
    rest = tokens("\n".join(line.text for line in spoken if line.speaker != character))
    stream = mine + ["\n"] + rest
    vocab = {word: i for i, word in enumerate(dict.fromkeys(stream), 1)} | dict.fromkeys(_BOUNDARIES, 0)
    ids = np.fromiter(map(vocab.__getitem__, stream), dtype=np.int64, count=len(stream))
    owner = np.arange(len(ids)) <= len(mine)
    found: list[tuple[float, int, str]] = []
    valid, codes, compact = ids != 0, ids, ids
    for n in (1, 2, 3):
        if n > 1:  # an n-gram's code: the compact id of its (n-1)-gram prefix, then the next word
            valid = valid[:-1] & (ids[n - 1:] != 0)
            codes = compact[:-1] * (len(vocab) + 1) + ids[n - 1:]
        pos = np.flatnonzero(valid)
        inv, first = _unique(codes[pos])
        ours = np.bincount(inv[owner[pos]], minlength=len(first)).astype(float)
        pooled = np.bincount(inv, minlength=len(first)).astype(float)
        z = _log_odds_z(ours, pooled)
        for j in np.flatnonzero((ours >= min_count) & (z >= MIN_Z)):
            words = stream[pos[first[j]]:pos[first[j]] + n]
            if n == 3 or not all(w in COMMON for w in words):
                found.append((float(z[j]), int(ours[j]), " ".join(words)))
        compact = np.zeros(len(codes), dtype=np.int64)
        compact[pos] = inv
    return [{"phrase": p, "count": c, "z": round(z, 2)} for z, c, p in _absorb(found)[:k]]


def _unique(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(id of each code's value, index of each value's first occurrence): ``np.unique`` with a
    stable sort, twice as fast here as its quicksort, and the first occurrences come free."""
    perm = codes.argsort(kind="stable")
    ordered = codes[perm]
    new = np.concatenate(([True], ordered[1:] != ordered[:-1])) if len(codes) else np.zeros(0, dtype=bool)
    inv = np.empty(len(codes), dtype=np.int64)
    inv[perm] = np.cumsum(new) - 1
    return inv, perm[new]


def _log_odds_z(ours: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """z-scores of the weighted log-odds ratio, prior α_w = pooled count (α0 = all n-grams)."""
    theirs = pooled - ours
    n_i, n_all = ours.sum(), pooled.sum()
    n_j = n_all - n_i
    if n_i == 0 or n_j == 0:
        return np.zeros_like(ours)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (np.log((ours + pooled) / (n_i + n_all - ours - pooled))
                 - np.log((theirs + pooled) / (n_j + n_all - theirs - pooled)))
        z = delta / np.sqrt(1 / (ours + pooled) + 1 / (theirs + pooled))
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def _absorb(found: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
    """Best first, without n-grams that a longer candidate says nearly as often ("dum dum" in "dum dum dum")."""
    count = {phrase: c for _, c, phrase in found}
    absorbed = set()
    for _, c, phrase in found:
        words = phrase.split()
        for size in range(1, len(words)):
            for start in range(len(words) - size + 1):
                part = " ".join(words[start:start + size])
                if part in count and c >= ABSORB * count[part]:
                    absorbed.add(part)
    return sorted((f for f in found if f[2] not in absorbed), key=lambda f: (-f[0], -f[1], f[2]))


# ----------------------------------------------------------------------------- statistics


def character_stats(script: Script, character: str) -> dict:
    """Line counts, lengths, question/exclamation rates, episodes, main partners, share of the dialogue."""
    character = _resolve(script, character)
    mine = [line for line in script.lines if line.speaker == character]
    others = [line for line in script.lines if line.is_character and line.speaker != character]
    words = [len(line.text.split()) for line in mine]
    return {
        "lines": len(mine),
        "words": sum(words),
        "words_per_line_mean": round(statistics.fmean(words), 2),
        "words_per_line_median": float(statistics.median(words)),
        "question_rate": _rate(mine, "?"),
        "exclamation_rate": _rate(mine, "!"),
        "episodes": len({line.episode for line in mine}),
        "episodes_total": len(script.episodes()),
        "scenes": len({(line.episode, line.scene) for line in mine}),
        "share": round(len(mine) / (len(mine) + len(others)), 6),
        "partners": [{"name": name, "count": n} for name, n in _partners(script, character)],
        "others": {
            "words_per_line_mean": round(statistics.fmean(len(x.text.split()) for x in others), 2) if others else 0.0,
            "question_rate": _rate(others, "?"),
            "exclamation_rate": _rate(others, "!"),
        },
    }


def _rate(lines: list, mark: str) -> float:
    return round(sum(mark in line.text for line in lines) / len(lines), 6) if lines else 0.0


def _partners(script: Script, character: str, top: int = 8) -> list[tuple[str, int]]:
    """Who speaks last before the character's lines in a scene (narration skipped: it is nobody's line)."""
    counts: Counter = Counter()
    for scene in script.scenes():
        previous = None
        for line in scene:
            if not line.is_character:
                continue
            if line.speaker == character and previous not in (None, character):
                counts[previous] += 1
            previous = line.speaker
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


# ----------------------------------------------------------------------------- drafting


def draft_card(script: Script, character: str, examples: list[dict], aliases: list[str] | None = None) -> dict:
    """A Character Card V2 drafted from the data, with rolecast's own data in ``extensions.rolecast``."""
    character = _resolve(script, character)
    stats = character_stats(script, character)
    phrases = signature_phrases(script, character)
    voice = _Voice(script, character, phrases, list(aliases or []))
    greetings = _greetings(script, character, voice)
    data = {
        "name": character,
        "description": _description(script.show, character, stats),
        "personality": _personality(stats, phrases),
        "scenario": f"{{{{char}}}} talks with {{{{user}}}}, as in a scene from {script.show}.",
        "first_mes": greetings[0] if greetings else "",
        "mes_example": _example_exchanges(examples, voice, set(script.speakers())),
        "creator_notes": (f"Drafted by rolecast {__version__} from {stats['lines']:,} lines of {script.show}. "
                          "Description and personality are statistics of the scripts, not a biography: add what "
                          "the scripts cannot tell. Greetings and example exchanges are real lines."),
        "system_prompt": (f"You are {{{{char}}}} from {script.show}. Reply as {{{{char}}}} would: in character, "
                          "first person, spoken words only — no stage directions, never a line for anyone else, "
                          "never say you are an AI."),
        "post_history_instructions": "Answer as {{char}}, briefly, in {{char}}'s own voice.",
        "alternate_greetings": greetings[1:4],
        "tags": [script.show, "tv", "rolecast"],
        "creator": "rolecast",
        "character_version": "1.0",
        "extensions": {"rolecast": {"show": script.show, "aliases": list(aliases or []),
                                    "catchphrases": phrases, "stats": stats}},
    }
    log.info("drafted the card of %s: %d signature phrases, %d greetings", character, len(phrases), len(greetings))
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def _how_often(rate: float) -> str:
    return f"in {rate:.0%} of the lines" if rate >= 0.5 else f"in 1 line out of {round(1 / rate)}"


def _description(show: str, character: str, stats: dict) -> str:
    mean, base = stats["words_per_line_mean"], stats["others"]["words_per_line_mean"]
    size = "short" if mean < 0.85 * base else "long" if mean > 1.2 * base else "medium-length"
    parts = [f"speaks in {size} lines ({mean:.1f} words on average; the rest of the cast {base:.1f})"]
    q, e = stats["question_rate"], stats["exclamation_rate"]
    parts.append(f"asks a question {_how_often(q)}" if q else "never asks a question")
    parts.append(f"exclaims {_how_often(e)}" if e else "never exclaims")
    partners = [p["name"] for p in stats["partners"][:3]]
    if partners:
        parts.append("talks most with " + (", ".join(partners[:-1]) + " and " + partners[-1] if len(partners) > 1
                                           else partners[0]))
    summary = "; ".join(parts)
    return (f"{character} from {show}. {summary[0].upper()}{summary[1:]}. "
            f"Has {stats['lines']:,} lines ({stats['share']:.1%} of the dialogue) in {stats['episodes']} of "
            f"{stats['episodes_total']} episodes.")


def _personality(stats: dict, phrases: list[dict]) -> str:
    """Observable traits: each one is a statistic against the rest of the cast."""
    base = stats["others"]
    traits = []
    for key, high, low in (("words_per_line_mean", "long-winded", "terse"),
                           ("question_rate", "asks many questions", "rarely asks questions"),
                           ("exclamation_rate", "exclaims often", "rarely exclaims")):
        ratio = stats[key] / base[key] if base[key] else 2.0 if stats[key] else 1.0
        traits += [high] if ratio > 1.25 else [low] if ratio < 0.8 else []
    if stats["share"] >= 0.1:
        traits.append("a main character")
    text = ", ".join(traits) or "speaks much like the rest of the cast"
    if phrases:
        text += "; signature phrases: " + ", ".join(f'"{p["phrase"]}"' for p in phrases[:8])
    return text


class _Voice:
    """What makes a real line a good sample: signature phrases that name nobody, and no addressee."""

    def __init__(self, script: Script, character: str, phrases: list[dict], aliases: list[str]):
        self.own = set(tokens(" ".join([character, *aliases])))
        self.names = {word for name, _ in script.speakers().most_common(40) if name != character
                      for word in tokens(name) if len(word) > 2}
        self.phrases = [p["phrase"] for p in phrases[:10] if not self.addresses(p["phrase"])]

    def hits(self, text: str) -> set[str]:
        joined = f" {' '.join(tokens(text))} "
        return {phrase for phrase in self.phrases if f" {phrase} " in joined}

    def addresses(self, text: str) -> bool:
        """Names someone: another speaker or a short form ("Joe" for Joey), or a capitalised word
        mid-sentence ("Hi, Nina.") — the user is none of them."""
        words = text.split()
        for i, word in enumerate(words):
            bare = word.strip(".,!?;:\"'*-")
            low = bare.lower()
            if len(low) < 3 or low in COMMON or low in self.own:
                continue
            if any(name.startswith(low) for name in self.names) or (
                    i and not words[i - 1].endswith((".", "!", "?")) and re.fullmatch(r"[A-Z][a-z]+", bare)
                    and bare != "God"):
                return True
        return False


def _greetings(script: Script, character: str, voice: _Voice) -> list[str]:
    """The character's clean lines (3–25 words), best openers first: lines that open a scene or
    answer a greeting, with greeting words and signature phrases, addressing nobody."""
    scored = []
    for scene in script.scenes():
        previous = None
        for line in (x for x in scene if x.is_character):
            size = len(line.text.split())
            ends = line.text.rstrip("\"' ").endswith((".", "!", "?"))
            if line.speaker == character and 3 <= size <= 25 and ends and not any(c in line.text for c in "(["):
                opens = previous is None or (previous.speaker != character and _GREETING.search(previous.text))
                greets = _GREETING.search(line.text)  # best at the start: "Hi, I'm ..."
                score = 4.0 * bool(opens) + (3.0 if greets and greets.start() < 8 else 1.5 if greets else 0.0)
                score += min(2, len(voice.hits(line.text))) + 0.5 * (5 <= size <= 15) - 2.0 * voice.addresses(line.text)
                scored.append((-score, line.index, line.text))
            previous = line
    return list(dict.fromkeys(text for *_, text in sorted(scored)))


def _example_exchanges(examples: list[dict], voice: _Voice, speakers: set[str], n: int = 3) -> str:
    """``n`` real exchanges in SillyTavern form, preferring replies with signature phrases not shown yet."""
    pool = []
    for order, ex in enumerate(examples):
        if pair := _exchange(ex, speakers):
            user, reply = pair
            base = 0.5 * user.rstrip().endswith("?") + 0.5 * (8 <= len(reply.split()) <= 25) - voice.addresses(reply)
            pool.append((order, user, reply, voice.hits(reply), base))
    chosen, shown = [], set()
    while pool and len(chosen) < n:  # greedy: each pick should show phrases the others did not
        best = min(pool, key=lambda c: (-2.0 * min(2, len(c[3] - shown)) - bool(c[3] & shown) - c[4], c[0]))
        chosen.append(best)
        shown |= best[3]
        pool = [c for c in pool if c[2] != best[2]]
    return "\n".join(f"<START>\n{{{{user}}}}: {user}\n{{{{char}}}}: {reply}" for _, user, reply, *_ in chosen)


def _exchange(example: dict, speakers: set[str]) -> tuple[str, str] | None:
    """(the other's last line, the character's reply) when both are clean lines of 4–35 words."""
    messages = example.get("messages") or []
    if not messages or messages[-1].get("role") != "user" or not example.get("completion"):
        return None
    user = messages[-1]["content"].split("\n")[-1]
    name, sep, rest = user.partition(": ")
    if sep and name in speakers:
        user = rest
    reply = example["completion"][0]["content"]
    ok = all(4 <= len(t.split()) <= 35 and not any(c in t for c in "([\n") for t in (user, reply))
    return (user, reply) if ok else None


# ----------------------------------------------------------------------------- import / export


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
    chunks = _png_text_chunks(raw, path)
    key = "chara" if "chara" in chunks else "ccv3" if "ccv3" in chunks else None
    if key is None:
        raise InputFileError(f"{path} is a PNG without a character card in it (no 'chara' text chunk)",
                             "use a card PNG exported from SillyTavern, or a .json card")
    try:
        return base64.b64decode(chunks[key], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return chunks[key]  # some tools store the JSON itself, not its base64


def _png_text_chunks(raw: bytes, path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG, read by hand: Pillow caps text chunks at 1 MB, cards can be bigger."""
    out: dict[str, str] = {}
    pos = len(_PNG_SIGNATURE)
    while pos < len(raw):
        if pos + 12 > len(raw):
            raise InputFileError(f"{path} is a truncated PNG", "export the card again")
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body, crc = raw[pos + 8:pos + 8 + length], raw[pos + 8 + length:pos + 12 + length]
        if len(crc) < 4 or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            raise InputFileError(f"{path} is a damaged PNG (bad {kind.decode('latin-1')} chunk)", "export the card again")
        if kind == b"tEXt":  # what SillyTavern, chub and RisuAI write; latin-1 is tEXt's charset
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


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
    return card


def save_card(card: dict, path: Path, avatar: Path | None = None) -> None:
    """Write ``card`` as pretty JSON (.json) or as a SillyTavern PNG (.png, card in a tEXt 'chara' chunk)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_json(path, card)
    elif suffix == ".png":
        payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
        atomic_write(path, _with_text_chunk(_image_png(card, avatar), b"chara", payload))
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
    incoming = load_card(path)
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
    save_card(card, pack.part("card"))
    if Path(path).suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as image:  # the card's own picture: the web chat's avatar
            atomic_write(pack.path / "avatar.png", _image_bytes(image))
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


def _with_text_chunk(png: bytes, key: bytes, value: bytes) -> bytes:
    """``png`` with a tEXt chunk inserted before IEND (the last 12 bytes)."""
    body = key + b"\0" + value
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]


def _image_png(card: dict, avatar: Path | None) -> bytes:
    """The avatar re-encoded as a bare PNG (old text chunks dropped), or a generated one."""
    from PIL import Image, UnidentifiedImageError

    if avatar is None:
        image = initials_avatar(str(card.get("data", {}).get("name") or "?"))
    else:
        try:
            with Image.open(avatar) as opened:
                image = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputFileError(f"cannot read the avatar image {avatar} ({exc})", "pass a PNG or JPEG file") from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
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
