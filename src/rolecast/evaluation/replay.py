"""Multi-turn scene replay and knowledge probes for ``rolecast eval``.

    rolecast eval packs/house --scenes 20

Scene replay: held-out scenes of the test episodes are played turn by turn — the other
characters' real lines as the user, the variant playing the character, its own earlier
replies (not the real ones) in the history — so the report shows what single exchanges
hide: drift of the judges' scores over the turns, self-repetition across turns, and
impersonation anywhere in a scene.

Knowledge probes: questions whose answers are mined from the pack, not written per show
(the character's name and aliases, the people they talk with and about, the proper nouns
they use most), answered by string match.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from ..ingest.script import NAME_PREFIX, Script
from ..pack import Pack
from ..pack.examples import SplitOf

#: Character turns replayed per scene at most.
MAX_TURNS = 8


def held_out_scenes(pack: Pack, n: int, seed: int, max_turns: int = MAX_TURNS) -> list[dict[str, Any]]:
    """Up to ``n`` scenes of the test episodes where another speaker talks to the character at least twice."""
    split_of = SplitOf(pack)
    character = pack.character
    scenes: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for line in Script.load(pack.require("script")).lines:
        if line.is_character and split_of(line.episode, line.scene) == "test":
            scenes.setdefault((str(line.episode), str(line.scene)), []).append((line.speaker, line.text, line.index))
    usable = []
    for (episode, scene), lines in scenes.items():
        turns = [i for i, (s, _, _) in enumerate(lines) if s == character and i > 0 and lines[i - 1][0] != character]
        if len(turns) >= 2:
            end = turns[min(len(turns), max_turns) - 1] + 1
            usable.append({"id": f"{episode}/{scene}", "episode": episode, "scene": scene, "lines": lines[:end]})
    random.Random(seed).shuffle(usable)
    return usable[:n]


def scene_turns(scene: dict[str, Any], character: str) -> list[dict[str, Any]]:
    """The replayable turns of a scene: the lines said since the character's last turn, and the real reply."""
    others = {s for s, _, _ in scene["lines"] if s != character}
    named = len(others) > 1
    turns, pending = [], []
    for speaker, text, index in scene["lines"]:
        if speaker != character:
            pending.append(f"{speaker}: {text}" if named else text)
        elif pending:  # the line's id, as the examples name it: the judges know its episode by it
            turns.append({"said": pending, "message": text_of(pending[-1]), "reply": text,
                          "id": f"{scene['episode']}-{scene['scene']}-{index}"})
            pending = []
    return turns


def text_of(line: str) -> str:
    return NAME_PREFIX.sub("", line)


def replay(scene: dict[str, Any], character: str, answer) -> list[dict[str, Any]]:
    """Play the scene: ``answer(id, history, message, real_reply, turn)`` returns the variant's row for a turn."""
    history: list[dict[str, str]] = []
    rows = []
    for t, turn in enumerate(scene_turns(scene, character)):
        before = turn["said"][:-1]
        hist = history + ([{"role": "user", "content": "\n".join(before)}] if before else [])
        row = answer(turn["id"], hist, turn["message"], turn["reply"], t)
        row.update(turn=t, scene=scene["id"])
        rows.append(row)
        history = hist + [{"role": "user", "content": turn["said"][-1]}, {"role": "assistant", "content": row["reply"]}]
    return rows


# ----------------------------------------------------------------------------- knowledge probes

QUESTIONS: dict[str, tuple[str, ...]] = {
    "name": ("What's your name?", "Sorry, who are you again?"),
    "people": ("Who do you work with?", "Who are the people you see every day?", "Who's your closest friend?",
               "Who drives you crazy?"),
    "things": ("What's on your mind these days?", "Where do you spend most of your time?"),
}
RARE = 4.0
_CAPITAL = re.compile(r"(?<=[a-z,;] )([A-Z][a-z]{2,})\b")
_WORD = re.compile(r"[A-Za-z]{3,}")


def knowledge(pack: Pack, people: int = 8, things: int = 10) -> list[dict[str, Any]]:
    """Probes whose expected answers are mined from the pack: ``[{"topic", "message", "expect": [...]}]``.

    name: the character's name and aliases; people: their main partners and the speakers
    they name most; things: the proper nouns they use most that are nobody's name and rare
    in English at large (House: Princeton, Cushing, Huntington; not Friday or Christmas).
    """
    from wordfreq import zipf_frequency

    card = pack.card()["data"]
    ext = card.get("extensions", {}).get("rolecast", {})
    # The name only: a pack's aliases are merged speaker labels, some of them other people's.
    names = {w for n in [pack.character, card.get("name", "")] for w in _WORD.findall(n)}
    speakers: Counter = Counter()
    mentioned: Counter = Counter()
    lower: Counter = Counter()
    for line in Script.load(pack.require("script")).lines:
        if line.is_character:
            speakers.update({line.speaker.split()[0]})
        lower.update(w for w in _WORD.findall(line.text) if w.islower())
        if line.speaker == pack.character:
            mentioned.update(_CAPITAL.findall(line.text))
    partners = [p["name"].split()[0] for p in ext.get("stats", {}).get("partners", [])]
    named = [w for w, n in mentioned.most_common() if n >= 3 and speakers[w] >= 20 and w not in names]
    who = list(dict.fromkeys(partners + named))[:people]
    # Proper nouns of the show, not of the calendar: rare in English at large (Zipf <= RARE).
    proper = [w for w, n in mentioned.most_common() if n >= 5 and w not in names and w not in who
              and speakers[w] == 0 and lower[w.lower()] <= n // 10 and zipf_frequency(w, "en") <= RARE][:things]
    expect = {"name": sorted(names), "people": who, "things": proper}
    return [{"topic": topic, "message": q, "expect": expect[topic]}
            for topic, questions in QUESTIONS.items() if expect[topic] for q in questions]


def answered(reply: str, expect: list[str]) -> bool:
    """Whether the reply says one of the expected strings (whole words, any case)."""
    return any(re.search(rf"\b{re.escape(e)}\b", reply, re.IGNORECASE) for e in expect)
