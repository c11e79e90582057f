"""The Performer: a pack and a backend in, the character's reply out.

    performer = Performer.load("packs/house")                       # default backend and model
    reply = performer.reply(history, "I have chest pain. Should I be worried?")
    reply.text, reply.candidates                                    # the best one, and every one with its scores

    stream = performer.stream(history, "Hi")                        # one candidate, token by token
    for piece in stream: print(piece, end="")
    stream.reply                                                    # the finished Reply

Per turn: retrieve the character's real exchanges nearest to the message, build the
prompt (``prompt.py``), sample one or several candidates, clean each
(``postprocess.py``), score them — style (the pack's classifier), relevance to the
message, repetition of the history — and return the best. A reply is never empty:
an empty candidate set is resampled with new seeds, then the card's fallback line is used.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..backends import Backend, create
from ..backends.base import Message
from ..errors import MessageError, PackError
from ..pack import Pack
from ..settings import BackendSettings, GenerationSettings, PerformerSettings
from .postprocess import Cleaned, PostProcessor, ends_sentence
from .prompt import Prompt, build_prompt
from .served import pack_backend

log = logging.getLogger(__name__)
DEFAULT_FALLBACK = "Hm."
AUTO = object()  # load the pack's part when it has one
ECHO = 0.9  # similarity to the message from which a reply is a parrot, not an answer
OFF_TOPIC = 10.0  # what a candidate below the relevance gate loses: every on-topic one ranks above it
LOOPED = 1.0  # a candidate the loop rule repaired (the model was degenerating) loses the style score's range


def clears_gate(relevance: float, floor: float) -> bool:
    """Whether a candidate is on topic enough for its style to count: ``floor`` <= similarity < ``ECHO``."""
    return floor <= relevance < ECHO


@dataclass
class Candidate:
    text: str
    raw: str
    rules: list[str]
    tokens: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0


@dataclass
class Reply:
    text: str
    candidates: list[Candidate] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str = "stop"
    fallback: bool = False

    @property
    def scores(self) -> dict[str, float]:
        best = next((c for c in self.candidates if c.text == self.text), None)
        return best.scores if best else {}

    def as_dict(self) -> dict:
        return asdict(self) | {"scores": self.scores}


class Performer:
    def __init__(self, pack: Pack, backend: Backend, perf: PerformerSettings | None = None,
                 gen: GenerationSettings | None = None, index=AUTO, style=AUTO, user: str = "User", card: bool = True):
        """``card`` False plays the bare model: no system turn, no examples (the evaluation's ``base`` variant)."""
        self.pack = pack
        self.uses_card = card
        self.backend = backend
        self.perf = perf or PerformerSettings()
        self.gen = gen or GenerationSettings()
        self.card = pack.card()
        self.character = self.card["data"]["name"]
        self.user = user
        ext = self.card["data"].get("extensions", {}).get("rolecast", {})
        self.fallback = ext.get("fallback") or DEFAULT_FALLBACK
        self.typical_words = float(ext.get("stats", {}).get("words_per_line_median") or 12)
        self.post = pack_postprocessor(pack, self.card, user)
        self.index = _optional(pack, "index", _load_index) if index is AUTO else index
        self.style = _optional(pack, "style", _load_style) if style is AUTO else style

    @classmethod
    def load(cls, pack_path: str | Path, backend: BackendSettings | None = None, **kwargs) -> Performer:
        """A Performer for the pack, on the backend the settings name (the pack's adapter when it has one)."""
        pack = Pack.open(pack_path)
        settings = backend or BackendSettings()
        return cls(pack, create(pack_backend(pack, settings)), **kwargs)

    # -- the turn ------------------------------------------------------------------
    def prompt(self, history: list[Message], message: str, perf: PerformerSettings | None = None,
               gen: GenerationSettings | None = None) -> Prompt:
        perf, gen = self.system_turn(perf or self.perf), gen or self.gen
        message, notices = self.check_message(message, perf)
        card = self.card if self.uses_card else None
        examples = self.index.search(message, k=perf.examples) if card and self.index is not None and perf.examples else []
        prompt = build_prompt(card, history, message, examples, self.backend, perf, gen, self.user)
        prompt.notices[:0] = notices
        return prompt

    def system_turn(self, perf: PerformerSettings) -> PerformerSettings:
        """``perf`` with system_turn "auto" resolved: what the pack's adapter was trained with when one is served."""
        if perf.system_turn != "auto":
            return perf
        trained = self.pack.info.get("parts", {}).get("adapter", {}).get("system_turn", "card")
        return perf.updated(system_turn=trained if self.backend.adapter else "card")

    def reply(self, history: list[Message], message: str, gen: GenerationSettings | None = None,
              perf: PerformerSettings | None = None, cancel: threading.Event | None = None) -> Reply:
        """The best of ``perf.candidates`` cleaned candidates, with every candidate's scores.

        Setting ``cancel`` (from any thread) stops sampling at the next token: no retry, no rerank,
        and a Reply with ``finish_reason`` "cancelled".
        """
        perf, gen = perf or self.perf, gen or self.gen
        start = time.perf_counter()
        prompt = self.prompt(history, message, perf, gen)
        candidates: list[Candidate] = []
        for attempt in range(perf.retries + 1):
            settings = self._generation(gen, attempt)
            completions = self.backend.complete(prompt.messages, settings, n=perf.candidates, cancel=cancel)
            batch = [self._candidate(self.post(c.text), c.tokens) for c in completions]
            candidates += batch
            if cancel is not None and cancel.is_set():
                return Reply("", candidates, prompt.notices, completion_tokens=sum(c.tokens for c in candidates),
                             seconds=time.perf_counter() - start, finish_reason="cancelled")
            if any(c.text for c in batch):
                break
        self._score([c for c in candidates if c.text], message, history, perf)
        usable = [c for c in candidates if c.text]
        best = max(usable, key=lambda c: c.total) if usable else None
        return Reply(
            text=best.text if best else self.fallback,
            candidates=candidates,
            notices=prompt.notices,
            examples=[asdict(ex) for ex in prompt.examples],
            prompt_tokens=prompt.tokens,
            completion_tokens=sum(c.tokens for c in candidates),
            seconds=time.perf_counter() - start,
            fallback=best is None,
        )

    def stream(self, history: list[Message], message: str, gen: GenerationSettings | None = None,
               perf: PerformerSettings | None = None) -> ReplyStream:
        """One candidate, cleaned as it streams. With ``candidates > 1`` the best is sent whole."""
        return ReplyStream(self, history, message, gen or self.gen, perf or self.perf)

    def score_reply(self, history: list[Message], message: str, reply: str) -> tuple[float, int]:
        """The log-likelihood of ``reply`` (and its token count) as the answer to this Performer's prompt."""
        return self.backend.score_reply(self.prompt(history, message).messages, reply)

    # -- pieces --------------------------------------------------------------------
    def check_message(self, message: str, perf: PerformerSettings | None = None) -> tuple[str, list[str]]:
        """The message to answer (trimmed to max_message_chars, with a notice), or MessageError when empty."""
        perf = perf or self.perf
        if not isinstance(message, str) or not message.strip():
            raise MessageError("the message is empty", "type something for the character to answer")
        message = message.strip()
        if len(message) > perf.max_message_chars:
            cut = message[: perf.max_message_chars].rsplit(" ", 1)[0]
            return cut, [f"your message was cut to its first {len(cut):,} characters (max_message_chars)"]
        return message, []

    def _generation(self, gen: GenerationSettings, attempt: int) -> GenerationSettings:
        seed = gen.seed if attempt == 0 else (gen.seed or random.getrandbits(30)) + 1009 * attempt
        return gen.model_copy(update={"stop": [*gen.stop, *self.post.stop_strings], "seed": seed})

    @staticmethod
    def _candidate(cleaned: Cleaned, tokens: int) -> Candidate:
        return Candidate(cleaned.text, cleaned.raw, cleaned.rules, tokens)

    def _score(self, candidates: list[Candidate], message: str, history: list[Message], perf: PerformerSettings) -> None:
        if not candidates:
            return
        texts = [c.text for c in candidates]
        style = self.style.score_many([message] * len(texts), texts) if self.style is not None else np.full(len(texts), 0.5)
        relevance = self._relevance(message, texts) if len(texts) > 1 or perf.candidates > 1 else None
        said = [m["content"] for m in history if m.get("role") == "assistant"]
        for k, (c, s) in enumerate(zip(candidates, style)):
            r = 0.0 if relevance is None else float(relevance[k])
            # Style only for candidates that answer the message: a small model's most in-voice
            # candidate is often off the point, and style alone would pick it. Below the gate,
            # relevance decides (an echo counts as not relevant at all).
            on_topic = relevance is None or clears_gate(r, perf.relevance_floor)
            answer = r if r < ECHO else 0.0
            rep = repetition(c.text, said)
            length = abs(math.log((len(c.text.split()) + 1) / (self.typical_words + 1)))
            unfinished = 0.0 if ends_sentence(c.text) and not c.text.endswith("...") else 1.0
            looped = float("loops" in c.rules)
            c.scores = {"style": round(float(s), 4), "relevance": round(r, 4), "repetition": round(rep, 4),
                        "length": round(length, 4), "on_topic": float(on_topic), "looped": looped}
            c.total = round(perf.weight_style * float(s) * on_topic + perf.weight_relevance * answer
                            - perf.weight_repetition * rep - perf.weight_length * length - 0.25 * unfinished
                            - LOOPED * looped - (0.0 if on_topic else OFF_TOPIC), 4)

    def _relevance(self, message: str, texts: list[str]) -> np.ndarray | None:
        """Cosine of each text's embedding with the message's; None without an embedder (no gate then)."""
        model = getattr(self.index, "model", None)
        if model is None:
            return None
        vectors = model.encode([message, *texts])
        return vectors[1:] @ vectors[0]


class ReplyStream:
    """Iterate for the reply's pieces; ``reply`` holds the finished Reply; ``close()`` cancels."""

    def __init__(self, performer: Performer, history: list[Message], message: str,
                 gen: GenerationSettings, perf: PerformerSettings):
        self.performer = performer
        self.history, self.message, self.gen, self.perf = history, message, gen, perf
        self.reply: Reply | None = None
        self.prompt = performer.prompt(history, message, perf, gen)  # errors surface before streaming starts
        self._source = None
        self._closed = False
        self._cancel = threading.Event()  # stops a best-of-n reply mid-sampling

    def __iter__(self) -> Iterator[str]:
        if self.perf.candidates > 1:
            if self._closed:  # gone before generation started: sample nothing
                self.reply = Reply("", notices=self.prompt.notices, finish_reason="cancelled")
                return
            self.reply = self.performer.reply(self.history, self.message, self.gen, self.perf, self._cancel)
            if self.reply.finish_reason != "cancelled":
                yield self.reply.text
            return
        yield from self._stream_one()

    def _stream_one(self) -> Iterator[str]:
        p = self.performer
        start = time.perf_counter()
        first = None
        cleaner = p.post.stream()
        tokens = 0
        self._source = p.backend.stream(self.prompt.messages, p._generation(self.gen, 0))
        try:
            for piece in self._source:
                tokens += 1
                out = cleaner.feed(piece)
                if out:
                    first = first if first is not None else time.perf_counter() - start
                    yield out
                if cleaner.stopped or self._closed:
                    break
        finally:
            self._source.close()
        tail = cleaner.finish() if not self._closed else ""
        text = cleaner.text
        fallback = not text and not self._closed  # a client that left gets nothing resampled
        if fallback:  # nothing usable came out: fall back on a full resample, then the card's line
            retry = p.reply(self.history, self.message, self.gen, self.perf.updated(candidates=1))
            text, fallback, tail = retry.text, retry.fallback, retry.text
        if tail:
            yield tail
        candidate = Candidate(text, cleaner.raw, [], tokens)
        p._score([candidate], self.message, self.history, self.perf)
        self.reply = Reply(text, [candidate], self.prompt.notices, [asdict(e) for e in self.prompt.examples],
                           self.prompt.tokens, tokens, time.perf_counter() - start, first,
                           "cancelled" if self._closed else "stop", fallback)

    def close(self) -> None:
        """Stop generating (a client went away) at the next token; the partial reply is kept.

        Call it from any thread: the thread iterating the stream closes the backend's generator.
        """
        self._closed = True
        self._cancel.set()


@dataclass(frozen=True)
class Variant:
    card: bool  # the card's system prompt
    examples: int  # retrieved real exchanges in the prompt
    adapter: bool  # the pack's LoRA adapter
    candidates: int  # sampled and reranked
    system_turn: str = "auto"  # PerformerSettings.system_turn: auto sends a LoRA the system turn it was trained with


#: Named configurations of the Performer, compared by ``rolecast eval`` and by the web chat's blind test.
VARIANTS: dict[str, Variant] = {
    "base": Variant(card=False, examples=0, adapter=False, candidates=1),
    "prompt": Variant(card=True, examples=0, adapter=False, candidates=1),
    "retrieval": Variant(card=True, examples=4, adapter=False, candidates=1),
    "rerank": Variant(card=True, examples=4, adapter=False, candidates=4),
    "lora": Variant(card=True, examples=4, adapter=True, candidates=1),
    "lora+rerank": Variant(card=True, examples=4, adapter=True, candidates=4),
    # The LoRA given the card's whole system turn whatever it was trained with (does a compact one serve better?).
    "lora+card": Variant(card=True, examples=4, adapter=True, candidates=1, system_turn="card"),
}


def pack_postprocessor(pack: Pack, card: dict | None = None, user: str = "User") -> PostProcessor:
    """The post-processor of a pack's character: the card's name and aliases, the pack's other speakers."""
    data = (card or pack.card())["data"]
    aliases = data.get("extensions", {}).get("rolecast", {}).get("aliases", [])
    return PostProcessor(data["name"], pack.info.get("speakers", []), aliases, user)


def variant_settings(variant: Variant, perf: PerformerSettings) -> PerformerSettings:
    """The Performer settings that play ``variant`` (the card itself is the caller's: see ``Variant.card``)."""
    return perf.updated(candidates=variant.candidates, examples=variant.examples, system_turn=variant.system_turn)


def repetition(text: str, said: list[str]) -> float:
    """Share of the text's word trigrams already said by the character in this conversation."""
    grams = _trigrams(text)
    if not grams or not said:
        return 0.0
    before = set().union(*(_trigrams(s) for s in said))
    return len(grams & before) / len(grams)


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.casefold())
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def _load_index(pack: Pack):
    from .retrieval import LineIndex  # lazily: it needs the chat extra (sentence-transformers)

    return LineIndex.load(pack)


def _load_style(pack: Pack):
    from .style import StyleScorer

    return StyleScorer.load(pack)


def _optional(pack: Pack, part: str, load):
    """A pack part's loader result, or None (logged) when the part or its extra is missing."""
    if not pack.has(part):
        log.warning("%s has no %s; replies will be less in character (build it: rolecast %s %s)",
                    pack.path, part, "index" if part == "index" else "style train", pack.path)
        return None
    try:
        return load(pack)
    except (ImportError, PackError) as exc:
        log.warning("could not load the %s of %s: %s", part, pack.path, exc)
        return None
