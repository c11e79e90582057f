"""The Telegram bot: a thin adapter over the chat core (ChatService), with aiogram 3 long polling.

    rolecast telegram packs/house packs/chandler --token "$TELEGRAM_TOKEN"   # or set ROLECAST_TOKEN

In a chat with the bot:

    /start            the current character greets you (card first_mes); a fresh conversation
    /reset            a fresh conversation with the same character
    /character        the characters, as buttons; /character NAME switches (model id or name, any case)
    anything else     the character's reply, streamed into one message that is edited as it grows

The first pack is the default character. Each chat's character and conversation are kept in the
same SQLite store as the HTTP server (chat key and conversation owner ``telegram:<chat id>``), so
histories survive restarts and show up next to the API's. ``--api-url`` points the bot at another
Bot API server (a local telegram-bot-api, or the tests' fake one) instead of Telegram's.

For tests and embedding: ``build_dispatcher(service, settings)`` and ``make_bot(settings)``, then
``await poll(dispatcher, bot)``; ``await run_bot(service, settings)`` does all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any, TypeVar

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramUnauthorizedError
from aiogram.filters import Command, CommandObject
from aiogram.methods import DeleteMessage, DeleteWebhook, EditMessageText, SendChatAction, SendMessage, SetMyCommands
from aiogram.methods.base import TelegramMethod
from aiogram.types import (
    BotCommand,
    CallbackQuery,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from aiogram.utils.token import TokenValidationError

from ..chat.performer import Reply
from ..errors import NotFoundError, RolecastError, SettingsError, UnknownCharacterError
from ..settings import TelegramSettings
from .service import ChatService, ServedModel

log = logging.getLogger(__name__)
T = TypeVar("T")

LIMIT = 4096  # Telegram refuses longer messages
RETRIES = 5  # flood-control waits per call before giving up
PICK = "character:"  # callback data prefix of the character buttons
COMMANDS = [BotCommand(command="start", description="greeting and a fresh conversation"),
            BotCommand(command="reset", description="start over with the same character"),
            BotCommand(command="character", description="list the characters, or /character NAME to switch")]
OOPS = "Something went wrong on my side; please try again."


# ----------------------------------------------------------------------------- sending


async def call(bot: Bot, method: TelegramMethod[T]) -> T:
    """Run a Bot API method; on flood control (429) wait as Telegram says and send it again,
    so a throttled edit delays the text instead of losing it."""
    for _ in range(RETRIES):
        try:
            return await bot(method)
        except TelegramRetryAfter as exc:
            log.info("Telegram flood control: waiting %ss before %s", exc.retry_after, type(method).__name__)
            await asyncio.sleep(exc.retry_after)
    return await bot(method)


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*\s")
_SPACE = re.compile(r"\s")


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Cut ``text`` into messages of at most ``limit`` characters, after a sentence when one ends in
    the second half of the window, else at a space, else hard. Each cut depends only on the text
    before it, so a reply that is still growing keeps its earlier parts."""
    parts: list[str] = []
    text = text.strip()
    while len(text) > limit:
        window = text[: limit + 1]  # a space right at the limit is a fine place to cut
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        spaces = [m.start() for m in _SPACE.finditer(window)]
        cut = ends[-1] if ends and ends[-1] > limit // 2 else (spaces[-1] if spaces and spaces[-1] > 0 else limit)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [*parts, text] if text else parts


class LiveReply:
    """One reply on screen while it streams: the first piece is sent, the growing text is edited in
    at most every ``interval`` seconds (Telegram throttles edits to about one a second per chat), and
    text beyond 4,096 characters continues in new messages."""

    def __init__(self, bot: Bot, chat_id: int, interval: float):
        self.bot, self.chat_id, self.interval = bot, chat_id, interval
        self.ids: list[int] = []  # message ids, one per part
        self.shown: list[str] = []  # what each of them shows now
        self.last = float("-inf")

    async def update(self, text: str) -> None:
        if time.monotonic() - self.last >= self.interval:
            await self.show(text)

    async def finish(self, text: str) -> None:
        """The complete (post-processed) text, which may differ from the streamed pieces."""
        await self.show(text if text.strip() else "…")

    async def show(self, text: str) -> None:
        parts = split_text(text)
        changed = False
        for i, part in enumerate(parts):
            if i == len(self.ids):
                sent = await call(self.bot, SendMessage(chat_id=self.chat_id, text=part))
                self.ids.append(sent.message_id)
                self.shown.append(part)
            elif part != self.shown[i]:  # Telegram refuses an edit that changes nothing
                await call(self.bot, EditMessageText(chat_id=self.chat_id, message_id=self.ids[i], text=part))
                self.shown[i] = part
            else:
                continue
            changed = True
        for message_id in self.ids[len(parts):]:  # the cleaned final text came out shorter
            await call(self.bot, DeleteMessage(chat_id=self.chat_id, message_id=message_id))
        del self.ids[len(parts):], self.shown[len(parts):]
        if changed:
            self.last = time.monotonic()


# ----------------------------------------------------------------------------- the bot


class TelegramChats:
    """The handlers, and each chat's character and conversation in the service's store."""

    def __init__(self, service: ChatService, settings: TelegramSettings):
        if not service.models():
            raise SettingsError("no character to serve", "pass at least one pack")
        self.service, self.settings = service, settings
        self.default = service.models()[0].id

    # -- state ------------------------------------------------------------------
    @staticmethod
    def key(chat_id: int) -> str:
        return f"telegram:{chat_id}"

    def character(self, chat_id: int) -> ServedModel:
        row = self.service.binding(self.key(chat_id))
        # a character no longer served (the bot restarted with other packs) falls back on the default
        served = {m.id for m in self.service.models()}
        return self.service.model(row["character"] if row and row["character"] in served else self.default)

    async def conversation(self, chat_id: int) -> str:
        row = self.service.binding(self.key(chat_id))
        char = self.character(chat_id)
        if row and row["conversation_id"] and row["character"] == char.id:
            try:
                return self.service.conversation(row["conversation_id"])["id"]
            except NotFoundError:  # deleted through the API: start over
                pass
        return (await self.fresh(chat_id, char))[0]

    async def fresh(self, chat_id: int, char: ServedModel) -> tuple[str, str]:
        """A new conversation, and the character's greeting to open it. As in the web chat, the greeting
        is shown but not stored: a history opening on the assistant breaks strict chat templates."""
        conv = await self.service.create_conversation(char.id, owner=self.key(chat_id), title="Telegram")
        await self.service.bind(self.key(chat_id), char.id, conv["id"])
        greeting = self.service.greeting(char.id)
        return conv["id"], greeting or f"(You are talking to {char.name}.)"

    def find(self, name: str) -> ServedModel:
        wanted = name.strip().casefold()
        for char in self.service.models():
            if wanted in (char.id.casefold(), char.name.casefold()):
                return char
        raise UnknownCharacterError(f"no character '{name.strip()}'",
                                    f"choose one of: {', '.join(m.id for m in self.service.models())}")

    # -- handlers ---------------------------------------------------------------
    async def start(self, message: Message, bot: Bot) -> None:
        await self.greet(bot, message.chat.id, self.character(message.chat.id))

    async def greet(self, bot: Bot, chat_id: int, char: ServedModel) -> None:
        await call(bot, SendMessage(chat_id=chat_id, text=(await self.fresh(chat_id, char))[1]))

    async def choose(self, message: Message, bot: Bot, command: CommandObject) -> None:
        if command.args and command.args.strip():
            await self.greet(bot, message.chat.id, self.find(command.args))
            return
        current = self.character(message.chat.id).id
        lines = [f"{'→' if c.id == current else '•'} {c.name} ({c.id})" for c in self.service.models()]
        buttons = [[InlineKeyboardButton(text=c.name, callback_data=PICK + c.id)] for c in self.service.models()]
        text = "Characters:\n" + "\n".join(lines) + "\n\nTap one, or send /character NAME."
        await call(bot, SendMessage(chat_id=message.chat.id, text=text,
                                    reply_markup=InlineKeyboardMarkup(inline_keyboard=buttons)))

    async def picked(self, query: CallbackQuery, bot: Bot) -> None:
        await call(bot, query.answer())  # stops the button's spinner
        chat_id = query.message.chat.id if query.message else query.from_user.id
        await self.greet(bot, chat_id, self.find((query.data or "")[len(PICK):]))

    async def text(self, message: Message, bot: Bot) -> None:
        chat_id = message.chat.id
        self.service.check_rate(self.key(chat_id))  # RateLimitError: its one line goes to the chat
        conversation_id = await self.conversation(chat_id)
        with contextlib.suppress(TelegramAPIError):  # "typing…" until the first piece: cosmetic
            await bot(SendChatAction(chat_id=chat_id, action="typing"))
        live, text = LiveReply(bot, chat_id, self.settings.edit_interval), ""
        async for item in self.service.turn_stream(conversation_id, message.text or ""):
            if isinstance(item, Reply):
                await live.finish(item.text)
            else:
                text += item
                await live.update(text)

    async def unknown(self, message: Message, bot: Bot) -> None:
        if message.chat.type != "private":  # in a group, other bots' commands are none of ours
            return
        text = ("I don't know that command: /start, /reset, /character [NAME]." if (message.text or "").startswith("/")
                else "I can only read text messages.")
        await call(bot, SendMessage(chat_id=message.chat.id, text=text))

    async def failed(self, event: ErrorEvent, bot: Bot) -> None:
        """Any handler's error: a RolecastError's one line goes to the chat, anything else is logged
        with its traceback; the polling loop goes on either way."""
        exc = event.exception
        if not isinstance(exc, RolecastError):
            log.error("Telegram update %s failed", event.update.update_id, exc_info=exc)
        chat_id = _chat_id(event.update)
        if chat_id is None:
            return
        try:
            await call(bot, SendMessage(chat_id=chat_id, text=f"⚠️ {exc}" if isinstance(exc, RolecastError) else OOPS))
        except Exception:  # the Bot API itself is failing; the log already has the cause
            log.warning("could not report the error to chat %s", chat_id, exc_info=True)


def _chat_id(update: Update) -> int | None:
    if update.message is not None:
        return update.message.chat.id
    query = update.callback_query
    if query is not None:
        return query.message.chat.id if query.message else query.from_user.id
    return None


def build_dispatcher(service: ChatService, settings: TelegramSettings) -> Dispatcher:
    """The Dispatcher with every handler, over ``service``; feed it updates or poll with it."""
    chats = TelegramChats(service, settings)
    router = Router(name="rolecast")
    router.message.register(chats.start, Command("start", "reset"))
    router.message.register(chats.choose, Command("character", "characters"))
    router.callback_query.register(chats.picked, F.data.startswith(PICK))
    router.message.register(chats.text, F.text & ~F.text.startswith("/"))
    router.message.register(chats.unknown)
    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    dispatcher.errors.register(chats.failed)
    return dispatcher


def require_token(settings: TelegramSettings) -> None:
    if not settings.token:
        raise SettingsError("no Telegram bot token", "get one from @BotFather, then pass --token or set ROLECAST_TOKEN")


def make_bot(settings: TelegramSettings) -> Bot:
    """The aiogram Bot, talking to ``settings.api_url`` when it is set (else to Telegram)."""
    require_token(settings)
    api = TelegramAPIServer.from_base(settings.api_url) if settings.api_url else None
    session = AiohttpSession(api=api) if api else AiohttpSession()
    try:
        return Bot(settings.token, session=session)
    except TokenValidationError:
        raise SettingsError("that is not a Telegram bot token (they look like 123456:ABC-DEF...)",
                            "copy it from @BotFather, then pass --token or set ROLECAST_TOKEN") from None


async def poll(dispatcher: Dispatcher, bot: Bot, **polling: Any) -> None:
    """Long-poll until stopped (SIGINT/SIGTERM, or ``dispatcher.stop_polling()``); closes the bot."""
    try:
        try:  # polling is refused while a webhook is set, and the first call checks the token
            await call(bot, DeleteWebhook())
        except TelegramUnauthorizedError:
            raise SettingsError("Telegram refused the bot token", "check --token or ROLECAST_TOKEN") from None
        except TelegramNetworkError as exc:
            raise SettingsError(f"cannot reach the Bot API ({exc})", "check the network, or --api-url") from None
        with contextlib.suppress(TelegramAPIError):  # the command menu in Telegram's apps: cosmetic
            await call(bot, SetMyCommands(commands=COMMANDS))
        await dispatcher.start_polling(bot, **polling)
    finally:
        await bot.session.close()


async def run_bot(service: ChatService, settings: TelegramSettings) -> None:
    """Serve ``service``'s characters on Telegram until interrupted."""
    bot, dispatcher = make_bot(settings), build_dispatcher(service, settings)
    log.info("Telegram bot serving %s", ", ".join(m.id for m in service.models()))
    await poll(dispatcher, bot)
