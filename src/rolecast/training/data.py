"""What a LoRA trains on: a pack's scenes (default) or its examples, as rows TRL's SFTTrainer takes.

    rows = load_rows(pack, "train", tokenizer, TrainSettings())                    # whole scenes
    rows = load_rows(pack, "train", tokenizer, TrainSettings(data="replies"))      # one row per reply

``scenes`` (the default, as CoSER and TRL's assistant-only loss train role-play): one
sequence per stretch of a scene around the character, the character's lines as assistant
turns with the loss on **every** one of them, the other speakers as user turns (named
when the scene has several), after the system turn the Performer sends (``system_turn``: compact
by default, the card's system prompt without its description, personality and scenario, which
were half the tokens of House's rows; the pack records it and the chat sends the same). A stretch begins
``max_context_turns`` lines before the character speaks and ends where the character is
silent for more than that; one longer than ``max_length`` tokens is split at turn
boundaries (never inside a line), the next part opening on the line the character answers.
The prompt of a scene is read once for all its replies instead of once per reply.
Rows are pre-tokenized: ``input_ids`` and ``assistant_masks`` (1 on each assistant turn's
tokens and its end-of-turn token), laid out by the base's own chat template through
:mod:`rolecast.models.templates` (which folds the system turn where a template refuses one, joins turns
where it wants them alternating, and turns Qwen3's thinking off), so every tested family's
official template works, with or without ``{% generation %}`` markers.

``replies``: each example is its own prompt-completion pair (the system turn and the last
``max_context_turns`` turns → the reply), pre-tokenized the same way with the loss on the reply; contexts too long for
``max_length`` lose their oldest turns (then the start of the oldest one), never the reply.

The splits are the pack's (by episode): a scene is in the split of its examples.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainingError
from ..ingest.script import Line, Script
from ..models.templates import SCENE_START, ChatTemplate
from ..pack import Pack
from ..pack.examples import context_messages, read_examples
from ..pack.system_turn import training_system_prompt
from ..settings import TrainSettings


@dataclass
class Rows:
    rows: list[dict]
    lengths: list[int]  # tokens of each row
    skipped: int  # examples (or scene lines) that do not fit max_length
    source: Path | None = None
    replies: int = 0  # character lines with a loss


def load_rows(pack: Pack, split: str, tokenizer, settings: TrainSettings, limit: int = 0) -> Rows:
    """The split as training rows (a seeded sample of ``limit`` rows when it has more)."""
    if settings.data == "scenes":
        return scene_rows(pack, split, tokenizer, settings, limit)
    return reply_rows(pack, split, tokenizer, settings, limit)


def conversation(example: dict, system: str, max_turns: int) -> dict:
    """An example as TRL's conversational prompt-completion pair."""
    turns = [m for m in example["messages"] if m["role"] != "system"]
    turns = turns[-max_turns:] if max_turns else []
    return {"prompt": [{"role": "system", "content": system}, *_user_first(turns)],
            "completion": [{"role": "assistant", "content": example["completion"][0]["content"]}]}


def _user_first(turns: list[dict]) -> list[dict]:
    # Strict templates (Llama 2, Mistral) want a user turn first; an empty context needs one too.
    return turns if turns and turns[0]["role"] == "user" else [{"role": "user", "content": SCENE_START}, *turns]


def fit(row: dict, count, max_length: int) -> tuple[dict, int] | None:
    """``row`` with its oldest context dropped until it takes at most ``max_length`` tokens, and its length.

    ``count(messages)`` is the tokenized length. The last context turn left is cut from its
    start, word by word, if need be; None when even the reply alone does not fit.
    """
    system, completion = row["prompt"][:1], row["completion"]
    turns = [t for t in row["prompt"][1:] if t["content"] != SCENE_START]  # _user_first puts it back when needed

    def size(ts):
        return count(system + _user_first(ts) + completion)

    n = size(turns)
    while n > max_length and len(turns) > 1:
        turns = turns[1:]
        n = size(turns)
    if n > max_length:
        pieces = re.findall(r"\S+\s*", turns[0]["content"]) if turns else []
        lo, hi = 0, len(pieces)  # the most trailing words of the turn that fit (binary search)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size([{**turns[0], "content": "".join(pieces[-mid:])}]) <= max_length:
                lo = mid
            else:
                hi = mid - 1
        turns = [{**turns[0], "content": "".join(pieces[-lo:])}] if lo else []
        n = size(turns)
        if n > max_length:
            return None
    return {"prompt": system + _user_first(turns), "completion": completion}, n


def reply_rows(pack: Pack, split: str, tokenizer, settings: TrainSettings, limit: int = 0) -> Rows:
    """The split's examples as fitted prompt-completion rows (a seeded sample of ``limit`` when it has more)."""
    path = pack.require("examples") / f"{split}.jsonl"
    examples = list(read_examples(path)) if path.exists() else []
    if limit and len(examples) > limit:
        examples = random.Random(settings.seed).sample(examples, limit)
    system = training_system_prompt(pack.card(), settings.system_turn)
    masker = Masker(tokenizer)

    def count(messages):
        return len(masker.template.tokens(tokenizer, messages))

    fitted = [fit(conversation(ex, system, settings.max_context_turns), count, settings.max_length) for ex in examples]
    kept = [f for f in fitted if f is not None]
    rows = []
    for row, _ in kept:
        ids, mask, _ = masker([*row["prompt"], *row["completion"]], only_last=True)
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return Rows(rows, [len(r["input_ids"]) for r in rows], len(fitted) - len(kept), path if path.exists() else None,
                len(kept))


# ----------------------------------------------------------------------------- whole scenes


def stretches(scene: list[Line], character: str, lead: int) -> list[list[Line]]:
    """The parts of a scene around the character: from ``lead`` lines before a line of theirs to their last line
    before a silence of more than ``lead`` lines (or the scene's end)."""
    mine = [i for i, line in enumerate(scene) if line.speaker == character]
    out: list[list[Line]] = []
    start = end = None
    for i in mine:
        if start is not None and i - end - 1 <= lead:
            end = i
            continue
        if start is not None:
            out.append(scene[start:end + 1])
        start, end = max(0, i - lead), i
    if start is not None:
        out.append(scene[start:end + 1])
    return out


def scene_conversations(pack: Pack, split: str, lead: int) -> list[list[dict]]:
    """The split's stretches of scenes as chat turns (no system turn), in script order."""
    path = pack.require("examples") / f"{split}.jsonl"
    keys = {(ex["episode"], ex["scene"]) for ex in read_examples(path)} if path.exists() else set()
    if not keys:
        return []
    script = Script.load(pack.require("script"))
    character, out = pack.character, []
    for scene in script.scenes():
        if (scene[0].episode, scene[0].scene) not in keys:
            continue
        named = len({x.speaker for x in scene if x.speaker != character and x.is_character}) > 1
        out += [context_messages(part, character, named, 0) for part in stretches(scene, character, lead)]
    return out


class Masker:
    """Token ids of a conversation and the mask of its assistant turns, laid out by the base's chat template.

    An assistant turn's mask covers what the model writes when asked for that turn: the template's
    lead (if any), the reply and its end marker (:meth:`ChatTemplate.layout`), so the mask holds on
    templates whose rendering of a conversation's start is no prefix of the whole (Qwen3, Phi-4).
    """

    def __init__(self, tokenizer, template: ChatTemplate | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise TrainingError("training needs a fast tokenizer (to map text to tokens)",
                                "pass a base whose tokenizer.json loads as a fast tokenizer")
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate.of_tokenizer(tokenizer)

    def __call__(self, messages: list[dict], only_last: bool = False) -> tuple[list[int], list[int], list[int]]:
        """(input_ids, assistant_masks, token index where each given message ends); ``only_last``: the loss on
        the last assistant turn alone."""
        text, turns, owner = self.template.layout_map(messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        starts = [start for start, _ in offsets]
        spans = [t.span for t in turns if t.role == "assistant"]
        mask = [0] * len(ids)
        for a, b in spans[-1:] if only_last else spans:
            for t in range(bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)):
                mask[t] = 1
        ends = [bisect.bisect_left(starts, t.end + self.template.closing(text[t.end:])) for t in turns]
        return ids, mask, [ends[owner[i]] for i in range(len(messages))]


def chunks(turns: list[dict], system: dict, masker: Masker, max_length: int, counts: Counter) -> list[dict]:
    """Rows of at most ``max_length`` tokens, split at turn boundaries, each with at least one assistant turn."""
    rows: list[dict] = []
    while turns:
        # Lay out about what fills a row (English: ~4 characters a token), not the whole stretch.
        window, chars = 0, 0
        while window < len(turns) and chars <= 4 * max_length:
            chars += len(turns[window]["content"])
            window += 1
        turns_all, turns = turns, turns[:window]
        messages = [system, *_user_first(turns)]
        offset = len(messages) - len(turns)
        ids, mask, ends = masker(messages)
        take = len(turns) if len(ids) <= max_length else \
            max((k + 1 - offset for k in range(offset, len(messages)) if ends[k] <= max_length), default=0)
        if 1 < take < len(turns_all) and turns[take - 1]["role"] == "user":
            take -= 1  # a part ends on the character's line; the user's line opens the next one
        if take == 0:  # a single turn longer than max_length: dropped
            counts["too_long"] += turns[0]["role"] == "assistant"
            turns = turns_all[1:]
            continue
        if take < len(turns):
            ids, mask, _ = masker([system, *_user_first(turns[:take])])
            while len(ids) > max_length and take > 1:  # the template closes a shorter conversation differently
                take -= 1
                ids, mask, _ = masker([system, *_user_first(turns[:take])])
        if any(mask):
            rows.append({"input_ids": ids, "assistant_masks": mask})
            counts["replies"] += sum(t["role"] == "assistant" for t in turns[:take])
        rest = turns_all[take:]
        if rest and rest[0]["role"] == "assistant" and turns[take - 1]["role"] == "user":
            rest = [turns[take - 1], *rest]  # the line the character answers opens the next part
        turns = rest if len(rest) < len(turns_all) else rest[1:]
    return rows


def scene_rows(pack: Pack, split: str, tokenizer, settings: TrainSettings, limit: int = 0) -> Rows:
    """The split's scenes as pre-tokenized rows with the loss on every line of the character."""
    conversations = scene_conversations(pack, split, settings.max_context_turns)
    if limit and len(conversations) > limit:
        conversations = random.Random(settings.seed).sample(conversations, limit)
    system = {"role": "system", "content": training_system_prompt(pack.card(), settings.system_turn)}
    masker, counts = Masker(tokenizer), Counter()
    rows = [row for turns in conversations for row in chunks(turns, system, masker, settings.max_length, counts)]
    path = pack.path / "script.jsonl"
    return Rows(rows, [len(r["input_ids"]) for r in rows], counts["too_long"], path, counts["replies"])
