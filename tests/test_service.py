"""The chat core behind every adapter: turns saved before generation, the worker pool, serialised conversations."""

import asyncio
import threading
import time

import pytest

from conftest import FakeBackend, make_pack
from rolecast.chat.performer import Reply
from rolecast.errors import MessageError, NotFoundError, RateLimitError, UnknownCharacterError
from rolecast.serve.service import ChatService, Pool
from rolecast.settings import BackendSettings, ServeSettings


class CountingSlow(FakeBackend):
    """Streams a 40-word reply slowly and counts the pieces it actually produced."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.produced = 0
        self.closed = threading.Event()

    def _next(self) -> str:
        return " ".join(f"w{i}." for i in range(40))

    def stream(self, messages, settings):
        try:
            for piece in super().stream(messages, settings):
                time.sleep(0.02)
                self.produced += 1
                yield piece
        finally:
            self.closed.set()


@pytest.fixture
def service(tmp_path):
    backend = CountingSlow(BackendSettings(backend="fake", n_ctx=8192))
    serve = ServeSettings(db=str(tmp_path / "c.db"), web=False)
    svc = ChatService.open([make_pack(tmp_path / "maggie", "Maggie")], serve, BackendSettings(backend="fake"),
                           make_backend=lambda s, a: backend)
    svc.characters["maggie"].performer.index = svc.characters["maggie"].performer.style = None
    yield svc, backend
    svc.close()


def test_an_abandoned_stream_stops_generating(service):
    svc, backend = service

    async def read_two_then_leave():
        stream = svc.stream("maggie", [], "Hi")
        pieces = [await anext(stream), await anext(stream)]
        await stream.aclose()
        return pieces

    assert len(asyncio.run(read_two_then_leave())) == 2
    assert backend.closed.wait(5), "the backend's generator is closed"
    assert backend.produced < 20, f"generation went on after the client left: {backend.produced} of 40 pieces"
    deadline = time.time() + 5
    while svc.characters["maggie"].pool.pending and time.time() < deadline:
        time.sleep(0.05)
    assert svc.characters["maggie"].pool.pending == 0, "the slot is given back"


def test_turns_of_one_conversation_are_serialised(service):
    svc, _ = service
    conv = svc._store.create_conversation("maggie", "local")

    async def turn(text):
        async for item in svc.turn_stream(conv["id"], text):
            if isinstance(item, Reply):
                return item.text

    async def both():
        return await asyncio.gather(turn("first"), turn("second"))

    asyncio.run(both())
    roles = [(m["role"], m["content"][:6]) for m in svc._store.messages(conv["id"])]
    assert [r for r, _ in roles] == ["user", "assistant", "user", "assistant"], roles
    assert roles[0][1] == "first" and roles[2][1] == "second"


def test_an_empty_message_saves_nothing(service):
    svc, _ = service
    conv = svc._store.create_conversation("maggie", "local")

    async def send():
        async for _ in svc.turn_stream(conv["id"], "   "):
            pass

    with pytest.raises(MessageError):
        asyncio.run(send())
    assert svc._store.messages(conv["id"]) == []


def test_pool_refuses_beyond_workers_plus_queue():
    pool = Pool("m", workers=1, max_queue=1)
    pool.acquire()
    pool.acquire()
    with pytest.raises(RateLimitError) as err:
        pool.acquire()
    assert err.value.retry_after > 0 and err.value.status == 429
    pool.release()
    pool.acquire()


def test_regenerate_keeps_the_old_reply_until_the_new_one_is_stored(service):
    svc, _ = service
    conv = svc._store.create_conversation("maggie", "local")

    async def turn(text="", regenerate=False):
        async for item in svc.turn_stream(conv["id"], text, regenerate=regenerate):
            if isinstance(item, Reply):
                return item.text

    asyncio.run(turn("Hi"))
    before = svc._store.messages(conv["id"])
    pool = svc.characters["maggie"].pool
    held = [pool.acquire() for _ in range(pool.limit)]  # every slot taken: the regeneration gets 429
    with pytest.raises(RateLimitError):
        asyncio.run(turn(regenerate=True))
    for _ in held:
        pool.release()
    assert svc._store.messages(conv["id"]) == before, "a refused regeneration lost the stored reply"
    asyncio.run(turn(regenerate=True))
    after = svc._store.messages(conv["id"])
    assert [m["role"] for m in after] == ["user", "assistant"] and after[1]["id"] != before[1]["id"]


def test_two_packs_with_one_name_are_refused_and_nothing_leaks(tmp_path):
    from rolecast.errors import SettingsError

    closed = []

    class Tracked(FakeBackend):
        def close(self):
            closed.append(self)

    first = make_pack(tmp_path / "a" / "maggie", "Maggie")
    second = make_pack(tmp_path / "b" / "maggie", "Maggie")
    serve = ServeSettings(db=str(tmp_path / "c.db"), web=False)
    with pytest.raises(SettingsError, match="two packs are served as 'maggie'"):
        ChatService.open([first, second], serve, BackendSettings(backend="fake"), make_backend=lambda s, a: Tracked())
    assert len(closed) == 1, "the backend opened for the first pack is closed"


def test_store_writes_never_run_on_the_event_loop(service):
    svc, _ = service
    conv = svc._store.create_conversation("maggie", "local")
    writes = []
    original = svc._store.add_message

    def add_message(*args, **kwargs):
        writes.append(threading.get_ident())
        return original(*args, **kwargs)

    svc._store.add_message = add_message

    async def turn():
        loop_thread = threading.get_ident()
        async for _ in svc.turn_stream(conv["id"], "Hi"):
            pass
        return loop_thread

    loop_thread = asyncio.run(turn())
    assert len(writes) == 2 and loop_thread not in writes, "a commit with fsync ran on the event loop"


def test_the_adapters_reach_the_chat_core_only_through_its_methods():
    import ast
    from pathlib import Path

    import rolecast

    src = Path(rolecast.__file__).parent / "serve"
    public = {name for name in dir(ChatService) if not name.startswith("_")} - {"characters", "settings"}

    def on_service(node) -> bool:  # `service.x` or `self.service.x`
        value = node.value
        return (isinstance(value, ast.Name) and value.id == "service") or \
            (isinstance(value, ast.Attribute) and value.attr == "service")

    for module in ("server.py", "webchat.py", "telegram.py", "metrics.py"):
        tree = ast.parse((src / module).read_text())
        attributes = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
        touched = {node.attr for node in attributes}
        assert not touched & {"store", "_store", "performer", "arms", "pack", "pool"}, \
            f"{module} reaches into ChatService's parts"
        used = {node.attr for node in attributes if on_service(node)}
        assert used <= public, f"{module} reads {sorted(used - public)} of the service: give ChatService a method"
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "store" not in imported, f"{module} imports the store"
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert "Character" not in names, f"{module} imports the service's Character"


def test_greeting_defaults_and_conversations_through_the_service(service):
    svc, _ = service
    assert svc.greeting("maggie") == "Evening."
    gen, perf = svc.defaults("maggie")
    assert gen.max_tokens > 0 and perf.candidates >= 1

    async def scenario():
        conv = await svc.create_conversation("maggie", "local", "t")
        await svc.bind("telegram:1", "maggie", conv["id"])
        assert svc.binding("telegram:1")["conversation_id"] == conv["id"]
        assert [c["id"] for c in svc.conversations("local")] == [conv["id"]]
        await svc.delete_conversation(conv["id"], "local")
        return conv

    conv = asyncio.run(scenario())
    assert svc.conversations("local") == []
    with pytest.raises(NotFoundError):
        svc.conversation(conv["id"])
    with pytest.raises(UnknownCharacterError):
        asyncio.run(svc.create_conversation("nobody", "local"))


class SlowBestOf(FakeBackend):
    """Samples n candidates for 2 s (100 steps), checking ``cancel`` at every step as the real backends do."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0
        self.returned = threading.Event()

    def complete(self, messages, settings, n=1, cancel=None):
        for _ in range(100):
            if cancel is not None and cancel.is_set():
                break
            time.sleep(0.02)
            self.steps += 1
        self.returned.set()
        return super().complete(messages, settings, n, cancel)


def test_a_best_of_n_stream_left_before_its_reply_stops_sampling(tmp_path):
    backend = SlowBestOf(BackendSettings(backend="fake"))
    serve = ServeSettings(db=str(tmp_path / "c.db"), web=False)
    svc = ChatService.open([make_pack(tmp_path / "maggie", "Maggie")], serve, BackendSettings(backend="fake"),
                           make_backend=lambda s, a: backend)
    svc.characters["maggie"].performer.index = svc.characters["maggie"].performer.style = None
    perf = svc.characters["maggie"].performer.perf.updated(candidates=4)

    async def leave_early():
        stream = svc.stream("maggie", [], "Hi", perf=perf)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        waiting.cancel()  # the client went away before the best of four was ready
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await stream.aclose()

    try:
        asyncio.run(leave_early())
        assert backend.returned.wait(5)
        assert backend.steps < 50, f"sampling went on after the client left: {backend.steps} of 100 steps"
    finally:
        svc.close()


def test_close_shuts_the_blind_arms_pool_and_backend_and_metrics_count_it(service):
    """ChatService.close() left the blind arms' backend and pool open, and /metrics did not count that pool."""
    from rolecast.chat.performer import Performer

    service, _ = service
    class Closing(FakeBackend):
        closed = False

        def close(self):
            self.closed = True

    char = next(iter(service.characters.values()))
    arm_backend, arm_pool = Closing(), Pool("maggie-arm", 1, 1)
    char.arms["prompt"] = (Performer(char.pack, arm_backend), arm_pool)
    assert arm_pool in service.pools() and char.pool in service.pools()
    service.close()
    assert arm_backend.closed
    with pytest.raises(RuntimeError):  # a shut pool takes no more work
        arm_pool.executor.submit(lambda: None)


def test_idle_rate_limit_buckets_are_forgotten(monkeypatch):
    """The limiter kept one entry per key, address and Telegram chat forever."""
    from rolecast.serve import service as svc_module
    from rolecast.serve.service import RateLimiter

    now = [1000.0]
    monkeypatch.setattr(svc_module.time, "monotonic", lambda: now[0])
    limiter = RateLimiter(per_minute=60)
    for i in range(100):
        limiter.check(f"telegram:{i}")
    assert len(limiter.buckets) == 100
    now[0] += 61  # every bucket has filled up again
    limiter.check("key:abc")
    assert set(limiter.buckets) == {"key:abc"}
    with pytest.raises(RateLimitError):  # a caller still counting keeps its bucket
        for _ in range(61):
            limiter.check("key:abc")


def test_a_read_on_the_event_loop_does_not_wait_for_a_commit(service):
    """Reads shared the writer's lock, and a commit fsyncs: a read on the loop stalled every other request."""
    svc, _ = service
    conv = svc._store.create_conversation("maggie", "local")
    holding = threading.Event()

    def long_commit():  # what a slow fsync looks like from the outside: the writer's lock held for a second
        with svc._store._lock:
            holding.set()
            time.sleep(1.0)

    async def scenario():
        gaps, last = [], time.perf_counter()

        async def ticker():
            nonlocal last
            for _ in range(60):
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        writer = threading.Thread(target=long_commit)
        writer.start()
        holding.wait()
        await asyncio.sleep(0)
        assert svc.conversation(conv["id"])["id"] == conv["id"] and svc.messages(conv["id"]) == []
        await tick
        writer.join()
        return max(gaps)

    assert asyncio.run(scenario()) < 0.3, "the event loop waited for the commit"
