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
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backends import Backend, create
from .backends.base import Message
from .errors import MessageError, RateLimitError, UnknownCharacterError
from .pack import Pack
from .performer import Performer, Reply, pack_adapter
from .settings import BackendSettings, GenerationSettings, PerformerSettings, ServeSettings
from .store import Store

log = logging.getLogger(__name__)


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

    @property
    def name(self) -> str:
        return self.performer.character


@dataclass
class ChatService:
    settings: ServeSettings
    store: Store
    characters: dict[str, Character] = field(default_factory=dict)
    _locks: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    #: called with (character id, Reply) after every generation (metrics)
    on_reply: Callable[[str, Reply], None] | None = None

    @classmethod
    def open(cls, packs: list[Path], settings: ServeSettings, backend: BackendSettings,
             perf: PerformerSettings | None = None, gen: GenerationSettings | None = None,
             make_backend: Callable[[BackendSettings, str | None], Backend] = create) -> ChatService:
        service = cls(settings, Store(settings.db))
        backends: dict[tuple, tuple[Backend, Pool]] = {}
        for path in packs:
            pack = Pack.open(path)
            adapter = pack_adapter(pack, backend)
            key = (backend.backend, backend.model, adapter)
            if key not in backends:
                shared = make_backend(backend, adapter)
                backends[key] = (shared, Pool(pack.name if adapter else (backend.model or "default"),
                                              settings.workers, settings.max_queue))
            shared, pool = backends[key]
            performer = Performer(pack, shared, perf=perf, gen=gen)
            if pack.name in service.characters:
                raise UnknownCharacterError(f"two packs are served as '{pack.name}'", "serve only one of them")
            service.characters[pack.name] = Character(pack.name, pack, performer, pool)
        return service

    def close(self) -> None:
        pools = {id(c.pool): c.pool for c in self.characters.values()}
        for pool in pools.values():
            pool.shutdown()
        backends = {id(c.performer.backend): c.performer.backend for c in self.characters.values()}
        for backend in backends.values():
            backend.close()
        self.store.close()

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
                    perf: PerformerSettings | None = None) -> Reply:
        char = self.character(model)
        reply = await char.pool.run(char.performer.reply, history, message, gen, perf)
        self._done(model, reply)
        return reply

    async def stream(self, model: str, history: list[Message], message: str, gen: GenerationSettings | None = None,
                     perf: PerformerSettings | None = None,
                     on_start: Callable[[], None] | None = None) -> AsyncIterator[str | Reply]:
        """Yield the reply's pieces, then the finished Reply. Stopping early cancels generation.

        ``on_start`` runs once a generation slot is granted, before generation begins.
        """
        char = self.character(model)
        char.pool.acquire()
        try:
            if on_start is not None:
                on_start()
        except BaseException:
            char.pool.release()
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                if cancelled.is_set():
                    return
                stream = char.performer.stream(history, message, gen, perf)
                for piece in stream:
                    put("piece", piece)
                    if cancelled.is_set():
                        stream.close()
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

    def _done(self, model: str, reply: Reply) -> None:
        if self.on_reply is not None:
            with contextlib.suppress(Exception):
                self.on_reply(model, reply)

    # -- conversations ------------------------------------------------------------
    async def turn_stream(self, conversation_id: str, message: str, gen: GenerationSettings | None = None,
                          perf: PerformerSettings | None = None, regenerate: bool = False) -> AsyncIterator[str | Reply]:
        """One turn of a stored conversation: the user's message is saved first, the reply when complete."""
        conv = self.store.conversation(conversation_id)
        async with self.lock(conversation_id):
            history = self.store.history(conversation_id)
            if regenerate:
                if history and history[-1]["role"] == "assistant":
                    self.store.delete_last(conversation_id, ("assistant",))
                    history = history[:-1]
                if not history or history[-1]["role"] != "user":
                    raise MessageError("nothing to regenerate in this conversation", "send a message first")
                message = history[-1]["content"]
                history = history[:-1]
                on_start = None
            else:
                self.character(conv["character"]).performer.check_message(message)  # an empty one saves nothing

                def on_start() -> None:  # once a slot is granted: a refused request saves nothing
                    self.store.add_message(conversation_id, "user", message)
            async for item in self.stream(conv["character"], history, message, gen, perf, on_start):
                if isinstance(item, Reply):
                    self.store.add_message(conversation_id, "assistant", item.text,
                                           {"scores": item.scores, "notices": item.notices,
                                            "finish_reason": item.finish_reason})
                yield item

