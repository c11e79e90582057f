"""The Telegram bot, driven end to end: the real aiogram client talks, through its custom-server
setting, to a fake Bot API server on 127.0.0.1 that serves queued updates and records every call."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass

import pytest
from aiogram.types import Chat, Message
from aiohttp import web

from conftest import FakeBackend, make_pack
from rolecast.cli import main
from rolecast.errors import SettingsError
from rolecast.serve.service import ChatService
from rolecast.serve.store import Store
from rolecast.serve.telegram import LiveReply, build_dispatcher, make_bot, poll, split_text
from rolecast.settings import BackendSettings, GenerationSettings, ServeSettings, TelegramSettings

TOKEN = "123456:TEST-token"
CHAT = 777
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Rolecast", "username": "rolecast_bot"}


@dataclass
class Call:
    method: str
    params: dict
    at: float


class FakeTelegram:
    """A Bot API server: getUpdates long-polls the queued updates; the rest is recorded and answered
    like Telegram does, including its refusals (empty, too long or unchanged text)."""

    def __init__(self):
        self.calls: list[Call] = []
        self.updates: list[dict] = []
        self.texts: dict[int, str] = {}  # message id → what the chat shows
        self.chats: dict[int, int] = {}  # message id → its chat
        self.flood_edits = 0  # answer this many editMessageText calls with a 429
        self._ids = itertools.count(1000)
        self._update_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._closing = False

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        self._closing = True
        self._wake()
        await self.runner.cleanup()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the test's side ----------------------------------------------------------
    def send(self, text: str, chat_id: int = CHAT) -> None:
        user = {"id": chat_id, "is_bot": False, "first_name": "Ann"}
        message = {"message_id": next(self._ids), "date": int(time.time()), "text": text, "from": user,
                   "chat": {"id": chat_id, "type": "private", "first_name": "Ann"}}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        self._push({"message": message})

    def press(self, data: str, chat_id: int = CHAT) -> None:
        message = self._message(chat_id, "Characters:")
        self._push({"callback_query": {"id": f"cb{len(self.updates)}", "chat_instance": "1", "data": data,
                                       "from": {"id": chat_id, "is_bot": False, "first_name": "Ann"},
                                       "message": message}})

    def _push(self, update: dict) -> None:
        self.updates.append({"update_id": next(self._update_ids), **update})
        self._wake()

    def of(self, *methods: str, chat_id: int = CHAT) -> list[Call]:
        return [c for c in self.calls if c.method in methods and int(c.params.get("chat_id", chat_id)) == chat_id]

    def shown(self, chat_id: int = CHAT) -> list[str]:
        """The bot's messages in the chat as the user sees them now (edits applied)."""
        return [text for i, text in self.texts.items() if self.chats[i] == chat_id]

    async def wait(self, done, timeout: float = 10.0) -> None:
        """Until ``done()`` is true, checked after every call."""
        deadline = time.monotonic() + timeout
        while not done():
            changed = self._changed
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; calls so far: {[(c.method, c.params) for c in self.calls]}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def sent(self, n: int, chat_id: int = CHAT) -> list[Call]:
        """Wait for the bot's n-th sendMessage to the chat, and for everything it does next to settle."""
        await self.wait(lambda: len(self.of("sendMessage", chat_id=chat_id)) >= n)
        await asyncio.sleep(0.3)
        return self.of("sendMessage", chat_id=chat_id)

    # -- the Bot API ----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != TOKEN:
            return self._error(401, "Unauthorized")
        params = dict(await request.post())
        if method != "getUpdates":
            self.calls.append(Call(method, params, time.monotonic()))
            self._wake()
        answer = getattr(self, method, None)
        if answer is None:
            return self._error(404, "Not Found: method not found")
        result = await answer(params)
        return result if isinstance(result, web.Response) else web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(code: int, description: str, **parameters) -> web.Response:
        body = {"ok": False, "error_code": code, "description": description}
        return web.json_response(body | ({"parameters": parameters} if parameters else {}), status=code)

    def _message(self, chat_id, text: str, message_id: int | None = None, **extra) -> dict:
        message_id = message_id or next(self._ids)
        self.texts[message_id], self.chats[message_id] = text, int(chat_id)
        return {"message_id": message_id, "date": int(time.time()), "chat": {"id": int(chat_id), "type": "private"},
                "from": BOT_USER, "text": text, **extra}

    def _refused(self, text: str) -> web.Response | None:
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        return None

    async def getMe(self, params):
        return BOT_USER

    async def getUpdates(self, params):
        offset, timeout = int(params.get("offset", 0)), float(params.get("timeout", 0))
        deadline = time.monotonic() + timeout
        while not self._closing:
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
        return []

    async def deleteWebhook(self, params):
        return True

    async def setMyCommands(self, params):
        return True

    async def sendChatAction(self, params):
        return True

    async def answerCallbackQuery(self, params):
        return True

    async def sendMessage(self, params):
        extra = {"reply_markup": json.loads(params["reply_markup"])} if "reply_markup" in params else {}
        return self._refused(params.get("text", "")) or self._message(params["chat_id"], params["text"], **extra)

    async def editMessageText(self, params):
        if self.flood_edits:
            self.flood_edits -= 1
            return self._error(429, "Too Many Requests: retry after 1", retry_after=1)
        message_id, text = int(params["message_id"]), params.get("text", "")
        if message_id not in self.texts:
            return self._error(400, "Bad Request: message to edit not found")
        if self.texts[message_id] == text:
            return self._error(400, "Bad Request: message is not modified")
        return self._refused(text) or self._message(params["chat_id"], text, message_id)

    async def deleteMessage(self, params):
        self.texts.pop(int(params["message_id"]), None)
        return True


class SlowBackend(FakeBackend):
    """Streams its reply ``words`` words a piece, ``delay`` seconds apart, like a model on a CPU."""

    delay = 0.0
    words = 1

    def stream(self, messages, settings):
        pieces = list(super().stream(messages, settings))
        for i in range(0, len(pieces), self.words):
            time.sleep(self.delay)
            yield "".join(pieces[i:i + self.words])


@pytest.fixture
def backend():
    return SlowBackend(BackendSettings(backend="fake", n_ctx=8192))  # room for a 5,000-character reply


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "chat.db")


@pytest.fixture
def service(tmp_path, backend, db):
    packs = [make_pack(tmp_path / "maggie", "Maggie", ["Otto"], "Evening, {{user}}. {{char}} is listening."),
             make_pack(tmp_path / "otto", "Otto", ["Otto"], "Otto here. Make it quick.")]
    service = ChatService.open(packs, ServeSettings(db=db, workers=1, max_queue=0), BackendSettings(backend="fake"),
                               gen=GenerationSettings(max_tokens=2048), make_backend=lambda s, a: backend)
    yield service
    service.close()


@contextlib.asynccontextmanager
async def running(service, **settings):
    """The bot polling the fake server for the duration of the block."""
    fake = FakeTelegram()
    url = await fake.start()
    tg = TelegramSettings(token=TOKEN, api_url=url, **settings)
    dispatcher = build_dispatcher(service, tg)
    task = asyncio.create_task(poll(dispatcher, make_bot(tg), handle_signals=False, polling_timeout=2))
    try:
        await fake.wait(lambda: task.done() or any(c.method == "getMe" for c in fake.calls))
        yield fake
    finally:
        if not task.done():
            await asyncio.wait_for(dispatcher.stop_polling(), 10)
        await asyncio.wait_for(task, 10)
        await fake.stop()


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario, 30))


def conversation(service, chat_id=CHAT):
    return service._store.chat(f"telegram:{chat_id}")


REPLY = ("Sit down before you fall down. The harbor lights are out again tonight, and nobody in this town "
         "will lift a finger about it. Tell Otto the boat leaves at dawn.")


# ----------------------------------------------------------------------------- tests


def test_start_greets_then_a_reply_streams_into_one_edited_message(service, backend):
    backend.delay = 0.2  # 27 words: about 5.4 s of streaming, so several throttled edits
    backend.queue(REPLY)

    async def scenario():
        async with running(service) as fake:
            fake.send("/start")
            [greeting] = await fake.sent(1)
            assert greeting.params["text"] == "Evening, User. Maggie is listening."
            fake.send("What happened to the lights?")
            await fake.wait(lambda: fake.of("editMessageText") and fake.of("editMessageText")[-1].params["text"] == REPLY)
            await asyncio.sleep(0.3)
            return fake

    fake = run(scenario())
    sends, edits = fake.of("sendMessage"), fake.of("editMessageText")
    assert len(sends) == 2 and len(edits) >= 3 and fake.shown() == [sends[0].params["text"], REPLY]
    assert {e.params["message_id"] for e in edits} == {str(max(fake.texts))}  # one message, edited
    updates = [sends[1], *edits]
    assert all(REPLY.startswith(c.params["text"]) for c in updates)  # the text only grows
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates[:-1])]  # the final edit comes as soon as it can
    assert min(gaps) >= 1.2 - 0.1, gaps
    assert fake.of("sendChatAction") and fake.of("setMyCommands") and fake.of("deleteWebhook")
    assert service._store.history(conversation(service)["conversation_id"]) == \
        [{"role": "user", "content": "What happened to the lights?"}, {"role": "assistant", "content": REPLY}]


def test_flood_control_429_is_waited_out_and_the_text_arrives(service, backend):
    backend.delay = 0.15
    backend.queue(REPLY)

    async def scenario():
        async with running(service) as fake:
            fake.flood_edits = 1
            fake.send("Hello?")
            await fake.wait(lambda: [e for e in fake.of("editMessageText") if e.params["text"] == REPLY], 15)
            return fake

    fake = run(scenario())
    refused, retried, *_ = fake.of("editMessageText")
    assert retried.params == refused.params  # the same text again, after the wait Telegram asked for
    assert retried.at - refused.at >= 1.0 - 0.05
    assert fake.shown() == [REPLY]


def test_a_long_reply_is_split_into_messages_at_sentences(service, backend):
    reply = " ".join(f"Sentence number {i} is about the harbor and the boats in it." for i in range(90))
    assert len(reply) > 5000
    backend.words = 10  # the post-processor re-reads the whole text per piece: word by word takes seconds here
    backend.queue(reply)

    async def scenario():
        async with running(service, edit_interval=0.2) as fake:
            fake.send("Tell me everything.")
            await fake.wait(lambda: sum(map(len, fake.shown())) >= len(reply) - 1, 20)
            await asyncio.sleep(0.5)
            return fake

    fake = run(scenario())
    parts = fake.shown()
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert parts[0].endswith(".") and " ".join(parts) == reply
    assert service._store.history(conversation(service)["conversation_id"])[-1]["content"] == reply


def test_characters_switch_reset_and_buttons(service):
    async def scenario():
        async with running(service) as fake:
            fake.send("/start")
            await fake.sent(1)
            first = conversation(service)["conversation_id"]
            fake.send("/character")
            listing = (await fake.sent(2))[-1]
            buttons = json.loads(listing.params["reply_markup"])["inline_keyboard"]
            assert "Maggie" in listing.params["text"] and "Otto" in listing.params["text"]
            assert [row[0]["callback_data"] for row in buttons] == ["character:maggie", "character:otto"]
            fake.send("/character OTTO")
            assert (await fake.sent(3))[-1].params["text"] == "Otto here. Make it quick."
            switched = conversation(service)
            assert switched["character"] == "otto" and switched["conversation_id"] != first
            fake.send("/character Nobody")
            assert "no character 'Nobody'" in (await fake.sent(4))[-1].params["text"]
            fake.send("/reset")
            assert (await fake.sent(5))[-1].params["text"] == "Otto here. Make it quick."
            reset = conversation(service)
            assert reset["character"] == "otto" and reset["conversation_id"] != switched["conversation_id"]
            fake.press("character:maggie")
            assert (await fake.sent(6))[-1].params["text"] == "Evening, User. Maggie is listening."
            assert fake.of("answerCallbackQuery") and conversation(service)["character"] == "maggie"

    run(scenario())


def test_history_persists_in_the_sqlite_file(service, backend, db):
    backend.queue("Sit down.")

    async def scenario():
        async with running(service) as fake:
            fake.send("Hi")  # no /start first: the chat gets the default character
            await fake.sent(1)

    run(scenario())
    other = Store(db)
    try:
        [conv] = other.conversations(f"telegram:{CHAT}")
        assert conv["character"] == "maggie"
        assert other.history(conv["id"]) == [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Sit down."}]
        assert other.chat(f"telegram:{CHAT}")["conversation_id"] == conv["id"]
    finally:
        other.close()


def test_errors_become_a_reply_and_polling_goes_on(service, backend, caplog):
    backend.delay = 0.3
    backend.queue("One two three four five six seven.", "Fine then.")

    async def scenario():
        async with running(service) as fake:
            fake.send("Talk to me.")  # holds the only generation slot for about 2 s
            await fake.sent(1)
            fake.send("Me too!", chat_id=CHAT + 1)  # no queue: refused as busy
            busy = (await fake.sent(1, chat_id=CHAT + 1))[-1].params["text"]
            assert busy.startswith("⚠️") and "busy" in busy
            backend.stream = None  # the next generation hits a bug
            await fake.wait(lambda: "seven." in fake.shown()[0])
            fake.send("Again?", chat_id=CHAT + 1)
            await fake.wait(lambda: len(fake.of("sendMessage", chat_id=CHAT + 1)) >= 2)
            assert fake.of("sendMessage", chat_id=CHAT + 1)[-1].params["text"].startswith("Something went wrong")
            del backend.stream  # fixed: the bot still answers
            backend.delay = 0
            fake.send("Still there?", chat_id=CHAT + 1)
            await fake.sent(3, chat_id=CHAT + 1)
            assert fake.shown(CHAT + 1)[-1] == "Fine then."

    with caplog.at_level(logging.ERROR, logger="rolecast.serve.telegram"):
        run(scenario())
    assert any(r.exc_info for r in caplog.records if "failed" in r.getMessage())


def test_missing_token_is_a_settings_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(SettingsError, match="pass --token or set ROLECAST_TOKEN"):
        make_bot(TelegramSettings())
    with pytest.raises(SettingsError, match="not a Telegram bot token"):
        make_bot(TelegramSettings(token="nope"))
    monkeypatch.delenv("ROLECAST_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["telegram", str(tmp_path / "no-such-pack")]) == 2
    assert "pass --token or set ROLECAST_TOKEN" in capsys.readouterr().err


def test_a_refused_token_is_a_settings_error(service):
    async def scenario():
        fake = FakeTelegram()
        tg = TelegramSettings(token="999:wrong", api_url=await fake.start())
        try:
            with pytest.raises(SettingsError, match="Telegram refused the bot token"):
                await poll(build_dispatcher(service, tg), make_bot(tg), handle_signals=False)
        finally:
            await fake.stop()

    run(scenario())


class RecordingBot:
    """Stands in for aiogram's Bot where only the methods sent matter."""

    def __init__(self):
        self.methods = []

    async def __call__(self, method):
        self.methods.append(method)
        return Message(message_id=len(self.methods), date=0, chat=Chat(id=CHAT, type="private"))


def test_live_reply_deletes_parts_the_final_text_no_longer_has():
    async def scenario():
        bot = RecordingBot()
        live = LiveReply(bot, CHAT, interval=0)
        await live.update("Word. " * 800)  # 4,800 characters: two messages
        await live.finish("Word. " * 10)
        return bot.methods

    sent, _, edited, deleted = run(scenario())
    assert [type(m).__name__ for m in (sent, edited, deleted)] == ["SendMessage", "EditMessageText", "DeleteMessage"]
    assert edited.text == ("Word. " * 10).strip() and deleted.message_id == 2


def test_split_text_prefers_sentences_then_spaces():
    assert split_text("Short.") == ["Short."]
    assert split_text("   ") == []
    text = "Aa bb. " * 10 + "cc dd ee ff"
    parts = split_text(text, limit=20)
    assert all(len(p) <= 20 for p in parts) and all(p.endswith(".") for p in parts[:-1])
    assert " ".join(parts) == text.strip()
    assert split_text("word " * 10, limit=12) == ["word word", "word word", "word word", "word word", "word word"]
    assert split_text("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_each_chat_counts_against_the_rate_limit(service, backend):
    from rolecast.serve.service import RateLimiter

    service.limiter = RateLimiter(1)  # one message a minute per chat
    backend.queue("First.", "Other chat.")

    async def scenario():
        async with running(service) as fake:
            fake.send("Hello.")
            await fake.sent(1)
            fake.send("Again!")
            await fake.wait(lambda: len(fake.of("sendMessage", chat_id=CHAT)) >= 2)
            refused = fake.of("sendMessage", chat_id=CHAT)[-1].params["text"]
            assert refused.startswith("⚠️") and "too many requests" in refused
            fake.send("Me first.", chat_id=CHAT + 1)  # another chat has its own allowance
            await fake.sent(1, chat_id=CHAT + 1)

    run(scenario())
