"""Training examples: for every line of the character, the scene so far → the line.

One example (a JSONL row)::

    {"id": "s01e01-3-41", "episode": "s01e01", "scene": "3",
     "messages": [{"role": "user", "content": "Ross: Hi.\\nJoey: Hey."}],
     "completion": [{"role": "assistant", "content": "Could this BE any later?"}]}

Other speakers become ``user`` turns (prefixed ``Name: `` when the scene has several
other speakers), the character's own earlier lines ``assistant`` turns; consecutive
turns of one role are joined. ``messages`` is empty when the character opens a scene.
The split into train / validation / test is by episode (by blocks of scenes when the
source has too few episodes), so that no scene is in two splits.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import EmptyResultError
from ..ingest.script import Line, Script
from ..settings import PrepareSettings
from . import Pack

SPLITS = ("train", "validation", "test")


def build_examples(script: Script, character: str, settings: PrepareSettings, counts: Counter) -> list[dict]:
    """Examples for every line of ``character`` that passes the word filters."""
    examples = []
    for scene in script.scenes():
        others = {line.speaker for line in scene if line.speaker != character and line.is_character}
        for pos, line in enumerate(scene):
            if line.speaker != character:
                continue
            counts["character_lines"] += 1
            words = len(line.text.split())
            if words < settings.min_words:
                counts["filtered_min_words"] += 1
                continue
            if words > settings.max_words:
                counts["filtered_max_words"] += 1
                continue
            context = scene[max(0, pos - settings.context_turns):pos] if settings.context_turns else []
            examples.append({
                "id": f"{line.episode}-{line.scene}-{line.index}",
                "episode": line.episode,
                "scene": line.scene,
                "messages": context_messages(context, character, len(others) > 1, settings.max_context_chars),
                "completion": [{"role": "assistant", "content": line.text}],
            })
    if not examples:
        raise EmptyResultError(_why_empty(counts, settings), "loosen the filter or pick another --character")
    return examples


def _why_empty(counts: Counter, settings: PrepareSettings) -> str:
    if not counts["character_lines"]:
        return "the character has no lines left after cleaning"
    worst = max(("filtered_min_words", "filtered_max_words"), key=lambda k: counts[k])
    flag = {"filtered_min_words": f"--min-words {settings.min_words}", "filtered_max_words": f"--max-words {settings.max_words}"}[worst]
    return f"zero examples: {flag} removed {counts[worst]:,} of {counts['character_lines']:,} lines"


def context_messages(context: list[Line], character: str, named: bool, max_chars: int) -> list[dict]:
    """Chat turns for the lines before a reply, newest kept when trimming to ``max_chars``."""
    turns: list[dict] = []
    total = 0
    for line in reversed(context):
        role = "assistant" if line.speaker == character else "user"
        content = f"{line.speaker}: {line.text}" if role == "user" and named and line.is_character else line.text
        if max_chars and total + len(content) > max_chars and turns:
            break
        total += len(content)
        if turns and turns[0]["role"] == role:
            turns[0]["content"] = content + "\n" + turns[0]["content"]
        else:
            turns.insert(0, {"role": role, "content": content})
    return turns


# ----------------------------------------------------------------------------- splitting


def split_units(examples: list[dict], min_episodes: int = 3, blocks: int = 50) -> list[str]:
    """The unit of splitting for each example: its episode, or a block of consecutive scenes."""
    episodes = list(dict.fromkeys(ex["episode"] for ex in examples))
    if len(episodes) >= min_episodes:
        return [ex["episode"] for ex in examples]
    scenes = list(dict.fromkeys((ex["episode"], ex["scene"]) for ex in examples))
    size = max(1, len(scenes) // blocks)
    block_of = {scene: f"block{i // size}" for i, scene in enumerate(scenes)}
    return [block_of[(ex["episode"], ex["scene"])] for ex in examples]


def assign_splits(examples: list[dict], fractions: tuple[float, float, float], seed: int) -> dict[str, list[dict]]:
    """Split by unit (seeded shuffle) so each split gets about its fraction of examples."""
    units = split_units(examples)
    sizes = Counter(units)
    order = list(sizes)
    random.Random(seed).shuffle(order)
    total = sum(sizes.values())
    norm = sum(fractions) or 1.0
    target = {"validation": fractions[1] / norm * total, "test": fractions[2] / norm * total}
    assigned: dict[str, str] = {}
    filled = Counter()
    for unit in order:
        split = "train"
        for name in ("test", "validation"):
            if filled[name] < target[name]:
                split = name
                break
        assigned[unit] = split
        filled[split] += sizes[unit]
    if "train" not in assigned.values() and len(order) > 1:  # never leave nothing to train on
        assigned[order[-1]] = "train"
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for ex, unit in zip(examples, units):
        out[assigned[unit]].append(ex)
    return out


def write_splits(splits: dict[str, list[dict]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_examples(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for row in fh:
            if row.strip():
                yield json.loads(row)


class SplitOf:
    """The split a script line belongs to, read from the pack's examples: ``split_of(episode, scene)``.

    Its episode's split when the episode lies in one split (a corpus of 3+ episodes is split by episode);
    otherwise its scene's (fewer episodes: split by blocks of scenes, ``split_units``), and a scene without an
    example of the character then belongs to no split. Reading splits by episode alone put every line of a
    one-episode corpus (the Simpsons sample, a screenplay) in one split: no training lines for the style
    classifier, and the held-out scenes and judges' lines drawn from the training scenes."""

    def __init__(self, pack: Pack):
        self.episodes: dict[str, set[str]] = {}
        self.scenes: dict[tuple[str, str], str] = {}
        folder = Path(pack.require("examples"))
        for name in SPLITS:
            path = folder / f"{name}.jsonl"
            for example in read_examples(path) if path.exists() else ():
                episode, scene = str(example["episode"]), str(example["scene"])
                self.episodes.setdefault(episode, set()).add(name)
                self.scenes[(episode, scene)] = name

    def __call__(self, episode, scene) -> str | None:
        names = self.episodes.get(str(episode))
        if not names:
            return None
        if len(names) == 1:
            return next(iter(names))
        return self.scenes.get((str(episode), str(scene)))

    def episodes_in(self, split: str) -> set[str]:
        """The episodes with lines in ``split``."""
        return {episode for episode, names in self.episodes.items() if split in names}
