"""The chat core behind every server adapter (HTTP API, web chat, Telegram).

    service = ChatService.open([Path("packs/house")], ServeSettings(), BackendSettings())
    reply = await service.reply("house", history, "Is it lupus?")
    async for piece in service.stream("house", history, "Hi"): ...
    await service.turn(conversation_id, "Hi")                  # history from SQLite, turn saved

Characters are loaded once; packs that share a base model and adapter share one
backend. Each backend runs at most ``workers`` generations at once in its own thread
pool, with at most ``max_queue`` more waiting: beyond that, RateLimitError (HTTP 429).
Turns of one conversation are serialised. A stream that is abandoned (client gone)
stops generating at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import Backend, create
from ..backends.base import Message
from ..chat.performer import VARIANTS, Performer, Reply, variant_settings
from ..chat.served import pack_backend
from ..errors import MessageError, NotFoundError, RateLimitError, SettingsError, UnknownCharacterError
from ..pack import Pack
from ..pack.card import render
from ..settings import BackendSettings, GenerationSettings, PerformerSettings, ServeSettings
from .store import Store

log = logging.getLogger(__name__)


class RateLimiter:
    """A token bucket per API key: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.buckets: dict[str, tuple[float, float]] = {}
        self._swept = time.monotonic()

    def check(self, who: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._forget_idle(now)
        tokens, last = self.buckets.get(who, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[who] = (tokens, now)
            raise RateLimitError("too many requests for this API key", "slow down", retry_after=(1 - tokens) / self.rate)
        self.buckets[who] = (tokens - 1, now)

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have filled up again: an idle caller costs nothing, and the table does not keep
        every key, address and Telegram chat ever seen (a sweep at most once a refill period)."""
        full = self.capacity / self.rate
        if now - self._swept < full:
            return
        self._swept = now
        self.buckets = {who: (t, last) for who, (t, last) in self.buckets.items() if now - last < full}


def blind_variants(wanted: list[str], has_adapter: bool) -> list[str]:
    """The variants a blind test compares: those asked for (default: every one the pack can play with a card)."""
    playable = [n for n, v in VARIANTS.items() if v.card and (has_adapter or not v.adapter)]
    unknown = [n for n in wanted if n not in VARIANTS]
    if unknown:
        raise SettingsError(f"unknown blind variant(s) {', '.join(unknown)}", "use some of: " + ", ".join(playable),
                            param="blind_variants")
    # By default, the ways the pack is served; lora+card (a diagnostic of the system turn) only when asked for.
    chosen = [n for n in wanted if n in playable] if wanted else [n for n in playable if VARIANTS[n].system_turn == "auto"]
    if len(chosen) < 2:
        raise SettingsError(f"the blind test needs two variants the pack can play; it has {', '.join(chosen) or 'none'}",
                            "pick two of: " + ", ".join(playable) + " (an adapter adds lora, lora+rerank)",
                            param="blind_variants")
    return chosen


class Pool:
    """A bounded thread pool for one backend: ``workers`` running, ``max_queue`` waiting."""

    def __init__(self, name: str, workers: int, max_queue: int):
        self.name = name
        self.workers = workers
        self.limit = workers + max_queue
        self.pending = 0
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"gen-{name}")

    def acquire(self) -> None:
        with self._lock:
            if self.pending >= self.limit:
                raise RateLimitError(f"the model '{self.name}' is busy ({self.pending} requests queued)",
                                     "retry in a moment", retry_after=2.0)
            self.pending += 1

    def release(self) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, fn: Callable, *args):
        self.acquire()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.release()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Character:
    id: str
    pack: Pack
    performer: Performer
    pool: Pool
    #: variant name -> (its Performer, its pool): what the blind test compares (``--blind``)
    arms: dict[str, tuple[Performer, Pool]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.performer.character


@dataclass(frozen=True)
class ServedModel:
    """What an adapter shows of a served character: its model id, name, show, pack date and avatar picture."""

    id: str
    name: str
    show: str
    created: int
    avatar: Path | None


@dataclass
class ChatService:
    settings: ServeSettings
    _store: Store
    characters: dict[str, Character] = field(default_factory=dict)
    _locks: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    #: called with (character id, Reply) after every generation (metrics)
    on_reply: Callable[[str, Reply], None] | None = None
    limiter: RateLimiter | None = None

    def __post_init__(self) -> None:
        self.limiter = self.limiter or RateLimiter(self.settings.rate_limit)

    def check_rate(self, who: str) -> None:
        """Count a request of ``who`` (an API key's hash, a web user, a Telegram chat); RateLimitError beyond the rate."""
        self.limiter.check(who)

    @classmethod
    def open(cls, packs: list[Path], settings: ServeSettings, backend: BackendSettings,
             perf: PerformerSettings | None = None, gen: GenerationSettings | None = None,
             make_backend: Callable[[BackendSettings, str | None], Backend] = create) -> ChatService:
        service = cls(settings, Store(settings.db))
        backends: dict[tuple, tuple[Backend, Pool]] = {}

        def shared(pack: Pack, served: BackendSettings, adapter: str | None) -> tuple[Backend, Pool]:
            key = (served.backend, served.model, adapter)
            if key not in backends:
                backends[key] = (make_backend(served.updated(adapter=adapter, no_adapter=adapter is None), adapter),
                                 Pool(pack.name if adapter else (served.model or "default"), settings.workers,
                                      settings.max_queue))
            return backends[key]

        try:
            for path in packs:
                pack = Pack.open(path)
                served = pack_backend(pack, backend)
                adapter = served.adapter
                model, pool = shared(pack, served, adapter)
                performer = Performer(pack, model, perf=perf, gen=gen)
                if pack.name in service.characters:
                    first = service.characters[pack.name].pack.path
                    raise SettingsError(f"two packs are served as '{pack.name}' ({first} and {pack.path})",
                                        "serve only one of them, or rename one in its pack.json")
                char = service.characters[pack.name] = Character(pack.name, pack, performer, pool)
                if settings.blind:
                    for name in blind_variants(settings.blind_variants, adapter is not None):
                        variant = VARIANTS[name]
                        arm_model, arm_pool = (model, pool) if variant.adapter else shared(pack, served, None)
                        arm = Performer(pack, arm_model, perf=variant_settings(variant, performer.perf), gen=gen,
                                        index=performer.index, style=performer.style)
                        char.arms[name] = (arm, arm_pool)
        except BaseException:  # a bad pack among several: what was opened is closed, not leaked
            for model, pool in backends.values():
                pool.shutdown()
                model.close()
            service._store.close()
            raise
        return service

    # -- what the adapters read: a character's defaults, greeting and stored conversations ----------
    def defaults(self, model: str) -> tuple[GenerationSettings, PerformerSettings]:
        """The character's generation and performer settings, for a request or the web chat's sliders to update."""
        performer = self.character(model).performer
        return performer.gen, performer.perf

    def greeting(self, model: str) -> str:
        """The card's first message with its macros filled in ("" when the card has none)."""
        performer = self.character(model).performer
        return render(performer.card["data"].get("first_mes") or "", performer.character, performer.user).strip()

    def conversation(self, conversation_id: str, owner: str | None = None) -> dict[str, Any]:
        """A stored conversation (NotFoundError when it is gone or someone else's)."""
        return self._store.conversation(conversation_id, owner)

    def conversations(self, owner: str, model: str | None = None) -> list[dict[str, Any]]:
        return self._store.conversations(owner, model)

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """A conversation's stored turns, oldest first, each with its ``meta`` (scores, notices)."""
        return self._store.messages(conversation_id)

    async def create_conversation(self, model: str, owner: str, title: str = "") -> dict[str, Any]:
        self.character(model)
        return await self._write(self._store.create_conversation, model, owner, title)

    async def delete_conversation(self, conversation_id: str, owner: str | None = None) -> None:
        async with self.lock(conversation_id):
            await self._write(self._store.delete_conversation, conversation_id, owner)

    def binding(self, key: str) -> dict[str, Any] | None:
        """What a chat outside the API (a Telegram chat) is bound to: its character and conversation, or None."""
        return self._store.chat(key)

    async def bind(self, key: str, model: str, conversation_id: str | None) -> None:
        await self._write(self._store.set_chat, key, model, conversation_id)

    def pools(self) -> list[Pool]:
        """Every generation pool this service runs, the blind arms' included, each once."""
        pools = [pool for c in self.characters.values() for pool in [c.pool, *(pool for _, pool in c.arms.values())]]
        return list({id(pool): pool for pool in pools}.values())

    def close(self) -> None:
        """Every pool and backend this service opened, the blind arms' included (each once: arms share them)."""
        performers = [p for c in self.characters.values() for p in [c.performer, *(arm for arm, _ in c.arms.values())]]
        for pool in self.pools():
            pool.shutdown()
        for backend in {id(p.backend): p.backend for p in performers}.values():
            backend.close()
        self._store.close()

    def models(self) -> list[ServedModel]:
        """Every served character, by model id: the whole view the adapters have of them."""
        return [self.model(cid) for cid in sorted(self.characters)]

    def model(self, model: str) -> ServedModel:
        char = self.character(model)
        avatar = char.pack.path / "avatar.png"
        return ServedModel(char.id, char.name, char.pack.show, char.pack.created, avatar if avatar.is_file() else None)

    def blind_turn_due(self) -> bool:
        """Whether the next web chat turn is a blind A/B turn (``serve --blind``, at ``--blind-rate``)."""
        return bool(self.settings.blind) and random.random() < self.settings.blind_rate

    def character(self, model: str) -> Character:
        try:
            return self.characters[model]
        except KeyError:
            known = ", ".join(sorted(self.characters)) or "none"
            raise UnknownCharacterError(f"no character '{model}'; served here: {known}",
                                        "use one of these as the model (GET /v1/models lists them)", param="model") from None

    def lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    # -- generation -------------------------------------------------------------
    async def reply(self, model: str, history: list[Message], message: str, gen: GenerationSettings | None = None,
                    perf: PerformerSettings | None = None, cancel: threading.Event | None = None) -> Reply:
        """The whole reply (best-of-n, reranked); setting ``cancel`` stops its sampling at the next token."""
        char = self.character(model)
        reply = await char.pool.run(char.performer.reply, history, message, gen, perf, cancel)
        self._done(model, reply)
        return reply

    async def stream(self, model: str, history: list[Message], message: str, gen: GenerationSettings | None = None,
                     perf: PerformerSettings | None = None,
                     on_start: Callable[[], Any] | None = None) -> AsyncIterator[str | Reply]:
        """Yield the reply's pieces, then the finished Reply. Stopping early cancels generation.

        ``on_start`` (a function or a coroutine function) runs once a generation slot is
        granted, before generation begins.
        """
        char = self.character(model)
        char.pool.acquire()
        try:
            if on_start is not None:
                started = on_start()
                if inspect.isawaitable(started):
                    await started
        except BaseException:
            char.pool.release()
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        started: list = []  # the ReplyStream, once the worker made it: closed from here when the client leaves

        def put(kind: str, value) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                if cancelled.is_set():
                    return
                stream = char.performer.stream(history, message, gen, perf)
                started.append(stream)
                if cancelled.is_set():  # gone while the stream was being made
                    stream.close()
                for piece in stream:
                    put("piece", piece)
                put("done", stream.reply)
            except BaseException as exc:  # handed to the consumer, which raises it
                put("error", exc)
            finally:
                char.pool.release()

        loop.run_in_executor(char.pool.executor, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    self._done(model, value)
                yield value
                if kind == "done":
                    return
        finally:
            cancelled.set()
            for stream in started:  # a best-of-n reply sends nothing before it is done: stop it now, not after
                stream.close()

    def _done(self, model: str, reply: Reply) -> None:
        if self.on_reply is not None:
            with contextlib.suppress(Exception):
                self.on_reply(model, reply)

    @staticmethod
    async def _write(fn: Callable, *args, **kwargs):
        """A store write (a committed, fsynced transaction) in a thread: the event loop never waits on the disk."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- conversations ------------------------------------------------------------
    async def turn_stream(self, conversation_id: str, message: str, gen: GenerationSettings | None = None,
                          perf: PerformerSettings | None = None, regenerate: bool = False) -> AsyncIterator[str | Reply]:
        """One turn of a stored conversation: the user's message is saved first, the reply when complete."""
        conv = self._store.conversation(conversation_id)
        async with self.lock(conversation_id):
            self._no_pending_vote(conversation_id)
            messages = self._store.messages(conversation_id)
            history = [{"role": m["role"], "content": m["content"]} for m in messages]
            replaced = None  # the reply a regeneration replaces: deleted only once the new one is stored
            if regenerate:
                if history and history[-1]["role"] == "assistant":
                    replaced = messages[-1]["id"]
                    history = history[:-1]
                if not history or history[-1]["role"] != "user":
                    raise MessageError("nothing to regenerate in this conversation", "send a message first")
                message = history[-1]["content"]
                history = history[:-1]
                on_start = None
            else:
                self.character(conv["character"]).performer.check_message(message)  # an empty one saves nothing

                async def on_start() -> None:  # once a slot is granted: a refused request saves nothing
                    await self._write(self._store.add_message, conversation_id, "user", message)
            async for item in self.stream(conv["character"], history, message, gen, perf, on_start):
                if isinstance(item, Reply):
                    await self._write(self._store.add_message, conversation_id, "assistant", item.text,
                                           {"scores": item.scores, "notices": item.notices,
                                            "finish_reason": item.finish_reason}, replaces=replaced)
                yield item


    # -- blind A/B turns (``serve --blind``) ---------------------------------------
    def _no_pending_vote(self, conversation_id: str) -> None:
        if self._store.pending_vote(conversation_id):
            raise MessageError("two replies are waiting for your vote", "pick the better one (A, B or equal) first")

    async def blind_turn(self, conversation_id: str, message: str, gen: GenerationSettings | None = None) -> dict:
        """Two variants, drawn at random, answer the message; the message and a pending vote are stored.

        Returns ``{"a": text, "b": text}`` — never the variants' names, which only the store keeps.
        Nothing is stored when a generation fails: the message can be sent again.
        """
        conv = self._store.conversation(conversation_id)
        char = self.character(conv["character"])
        if len(char.arms) < 2:
            raise MessageError("this server runs no blind test", "start it with: rolecast serve PACKS --blind")
        async with self.lock(conversation_id):
            self._no_pending_vote(conversation_id)
            message = char.performer.check_message(message)[0]
            history = self._store.history(conversation_id)
            names = random.sample(sorted(char.arms), 2)
            texts = []
            for name in names:
                performer, pool = char.arms[name]
                reply = await pool.run(performer.reply, history, message, gen)
                self._done(conv["character"], reply)
                texts.append(reply.text)
            await self._write(self._store.add_message, conversation_id, "user", message)
            await self._write(self._store.add_vote, conversation_id, conv["character"], message, (names[0], texts[0]),
                              (names[1], texts[1]))
            return {"a": texts[0], "b": texts[1]}

    def pending_vote(self, conversation_id: str) -> dict | None:
        """The two replies waiting for a vote in this conversation (names hidden), or None."""
        pending = self._store.pending_vote(conversation_id)
        return {"a": pending["reply_a"], "b": pending["reply_b"]} if pending else None

    async def vote(self, conversation_id: str, choice: str) -> str:
        """Record which reply was better (``a``, ``b`` or ``tie``); the chosen one (``a`` on a tie) becomes the turn."""
        if choice not in ("a", "b", "tie"):
            raise MessageError(f"unknown choice '{choice}'", "vote a, b or tie")
        async with self.lock(conversation_id):
            pending = self._store.pending_vote(conversation_id)
            if not pending:
                raise NotFoundError("no replies are waiting for a vote here", "send a message")
            text = pending["reply_b"] if choice == "b" else pending["reply_a"]
            await self._write(self._store.decide_vote, pending["id"], choice, text, {"blind": True})
            return text

    async def undo(self, conversation_id: str) -> str | None:
        """Remove the last exchange (and a vote waiting on it); the user's message, to edit, or None."""
        async with self.lock(conversation_id):
            await self._write(self._store.drop_pending_votes, conversation_id)
            await self._write(self._store.delete_last, conversation_id, ("assistant",))
            removed = await self._write(self._store.delete_last, conversation_id, ("user",))
            return removed["content"] if removed else None

    async def clear(self, conversation_id: str) -> None:
        async with self.lock(conversation_id):
            await self._write(self._store.drop_pending_votes, conversation_id)
            await self._write(self._store.clear, conversation_id)
