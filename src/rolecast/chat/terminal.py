"""A chat session with one character, and the terminal chat built on it.

    rolecast chat packs/house            # /retry /reset /save FILE /settings [name=value] /help /quit

``ChatSession`` keeps the history and the settings of one conversation and turns a
user message into a streamed reply; a turn enters the history only when its reply
is complete, so an error (an empty message, an unknown setting) never loses a turn.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..backends.base import Message
from ..errors import RolecastError, SettingsError
from ..files import atomic_write
from ..settings import GenerationSettings, PerformerSettings, parse_assignment
from .performer import Performer, Reply

log = logging.getLogger(__name__)

HELP = """/retry            another reply to your last message
/reset            start over
/save FILE        save the conversation as JSON
/settings         show the settings; /settings name=value changes one
/help             this help
/quit             leave (or Ctrl-D)"""


class ChatSession:
    def __init__(self, performer: Performer, gen: GenerationSettings | None = None, perf: PerformerSettings | None = None):
        self.performer = performer
        self.gen = gen or performer.gen
        self.perf = perf or performer.perf
        self.history: list[Message] = []
        self.last: Reply | None = None

    @property
    def greeting(self) -> str:
        from ..pack.card import render

        return render(self.performer.card["data"].get("first_mes", ""), self.performer.character, self.performer.user)

    def send(self, message: str) -> Iterator[str]:
        """Stream the reply to ``message``; history is updated once the reply is complete."""
        stream = self.performer.stream(self.history, message, self.gen, self.perf)
        yield from stream
        self.last = stream.reply
        self.history += [{"role": "user", "content": message.strip()}, {"role": "assistant", "content": stream.reply.text}]

    def retry(self) -> Iterator[str]:
        if len(self.history) < 2:
            raise SettingsError("nothing to retry yet", "send a message first")
        message = self.history[-2]["content"]
        self.history = self.history[:-2]
        yield from self.send(message)

    def reset(self) -> None:
        self.history = []
        self.last = None

    def save(self, path: Path) -> None:
        data = {"character": self.performer.character, "pack": str(self.performer.pack.path),
                "settings": {"generation": self.gen.model_dump(), "performer": self.perf.model_dump()},
                "messages": self.history}
        atomic_write(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def set(self, assignment: str) -> str:
        """Apply ``name=value`` to the generation or performer settings."""
        name = assignment.partition("=")[0].strip().replace("-", "_")
        if name in GenerationSettings.model_fields:
            self.gen = self.gen.updated(**parse_assignment(GenerationSettings, assignment))
            return f"{name} = {getattr(self.gen, name)}"
        if name in PerformerSettings.model_fields:
            self.perf = self.perf.updated(**parse_assignment(PerformerSettings, assignment))
            return f"{name} = {getattr(self.perf, name)}"
        valid = ", ".join(sorted([*GenerationSettings.model_fields, *PerformerSettings.model_fields]))
        raise SettingsError(f"unknown setting '{name}'; valid settings: {valid}")

    def describe(self) -> str:
        rows = {**self.gen.model_dump(), **self.perf.model_dump()}
        return "\n".join(f"{k} = {v}" for k, v in rows.items())


def run_terminal(session: ChatSession, read: Callable[[str], str] = input, write=None) -> None:
    """The read-eval-print loop of ``rolecast chat``."""
    write = write or _write
    name = session.performer.character
    if session.greeting:
        write(f"{name}: {session.greeting}\n")
    write("(type /help for commands)\n")
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if not line:
            continue
        try:
            if not _command(session, line, name, write):
                return
        except RolecastError as err:
            write(f"error: {err}\n")


def _command(session: ChatSession, line: str, name: str, write) -> bool:
    """Handle one input line; False to quit."""
    if not line.startswith("/"):
        _print_reply(session.send(line), session, name, write)
        return True
    command, _, arg = line.partition(" ")
    arg = arg.strip()
    if command in ("/quit", "/exit", "/q"):
        return False
    if command == "/help":
        write(HELP + "\n")
    elif command == "/retry":
        _print_reply(session.retry(), session, name, write)
    elif command == "/reset":
        session.reset()
        write(f"(new conversation)\n{name}: {session.greeting}\n")
    elif command == "/save":
        if not arg:
            raise SettingsError("/save needs a file name", "e.g. /save chat.json")
        session.save(Path(arg))
        write(f"(saved to {arg})\n")
    elif command == "/settings":
        write((session.set(arg) if arg else session.describe()) + "\n")
    else:
        raise SettingsError(f"unknown command {command}", "type /help for the commands")
    return True


def _print_reply(pieces: Iterator[str], session: ChatSession, name: str, write) -> None:
    write(f"{name}: ")
    for piece in pieces:
        write(piece)
    write("\n")
    for notice in session.last.notices if session.last else []:
        write(f"({notice})\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
