"""Conversations in SQLite, shared by the API, the web chat and the Telegram bot.

    store = Store("rolecast.db")
    conv = store.create_conversation("house", owner="local")
    store.add_message(conv["id"], "user", "Is it lupus?")

Every turn is its own committed transaction (WAL journal, ``synchronous=FULL``): the
user's message is written before generation starts and the reply when it completes,
so a crash — even SIGKILL — loses at most the reply being generated.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import NotFoundError

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    character TEXT NOT NULL,
    owner TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_owner ON conversations(owner, updated);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS votes (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    character TEXT NOT NULL,
    message TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    reply_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    reply_b TEXT NOT NULL,
    choice TEXT,
    created REAL NOT NULL,
    decided REAL
);
CREATE INDEX IF NOT EXISTS votes_character ON votes(character, choice);
CREATE TABLE IF NOT EXISTS chats (
    key TEXT PRIMARY KEY,
    character TEXT NOT NULL,
    conversation_id TEXT
);
"""


class Store:
    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(SCHEMA)
        # Reads get a connection and a lock of their own: with WAL they see the last commit without waiting for a
        # writer's fsync, so a read on the event loop never waits on a turn being saved. (An in-memory database
        # exists per connection: there the writer's connection reads too.)
        self._reader, self._read_lock = self._conn, self._lock
        if self.path != ":memory:":
            self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._reader.row_factory = sqlite3.Row
            self._read_lock = threading.RLock()

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not self._conn:
                self._reader.close()
        with self._lock:
            self._conn.close()

    def _write(self, *statements: tuple[str, tuple]) -> sqlite3.Cursor:
        """Run the statements as one committed transaction; the first one's cursor."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cursors = [self._conn.execute(sql, args) for sql, args in statements]
                self._conn.execute("COMMIT")
                return cursors[0]
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            return [dict(row) for row in self._reader.execute(sql, args).fetchall()]

    # -- conversations ---------------------------------------------------------
    def create_conversation(self, character: str, owner: str, title: str = "") -> dict[str, Any]:
        now = time.time()
        conv = {"id": "conv_" + uuid.uuid4().hex, "character": character, "owner": owner, "title": title,
                "created": now, "updated": now}
        self._write(("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)", tuple(conv.values())))
        return conv

    def conversation(self, conversation_id: str, owner: str | None = None) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise NotFoundError(f"no conversation '{conversation_id}'", "list yours with GET /v1/conversations")
        return rows[0]

    def conversations(self, owner: str, character: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if character:
            return self._rows("SELECT * FROM conversations WHERE owner = ? AND character = ? ORDER BY updated DESC LIMIT ?",
                              (owner, character, limit))
        return self._rows("SELECT * FROM conversations WHERE owner = ? ORDER BY updated DESC LIMIT ?", (owner, limit))

    def delete_conversation(self, conversation_id: str, owner: str | None = None) -> None:
        self.conversation(conversation_id, owner)
        self._write(("DELETE FROM conversations WHERE id = ?", (conversation_id,)))

    # -- messages --------------------------------------------------------------
    def add_message(self, conversation_id: str, role: str, content: str, meta: dict | None = None,
                    replaces: int | None = None) -> int:
        """Store a message; ``replaces``: the id of one it takes the place of (a regenerated reply), in one commit."""
        now = time.time()
        statements = [
            ("INSERT INTO messages (conversation_id, role, content, meta, created) VALUES (?, ?, ?, ?, ?)",
             (conversation_id, role, content, json.dumps(meta or {}, default=str), now)),
            ("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))]
        if replaces is not None:
            statements.append(("DELETE FROM messages WHERE id = ? AND conversation_id = ?", (replaces, conversation_id)))
        cursor = self._write(*statements)
        return int(cursor.lastrowid)

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT id, role, content, meta, created FROM messages WHERE conversation_id = ? ORDER BY id",
                          (conversation_id,))
        for row in rows:
            row["meta"] = json.loads(row["meta"])
        return rows

    def history(self, conversation_id: str) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in self.messages(conversation_id)]

    def delete_last(self, conversation_id: str, roles: tuple[str, ...] = ("user", "assistant")) -> dict[str, Any] | None:
        """Remove and return the last message if its role is in ``roles`` (undo, regenerate)."""
        rows = self._rows("SELECT id, role, content FROM messages WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
                          (conversation_id,))
        if not rows or rows[0]["role"] not in roles:
            return None
        self._write(("DELETE FROM messages WHERE id = ?", (rows[0]["id"],)))
        return rows[0]

    def clear(self, conversation_id: str) -> None:
        self._write(("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)))

    # -- blind votes: two variants' replies to one message, and which one the user preferred
    def add_vote(self, conversation_id: str, character: str, message: str, a: tuple[str, str],
                 b: tuple[str, str]) -> str:
        """A pending vote between reply ``a`` and reply ``b`` (each ``(variant, text)``); its id."""
        vote_id = "vote_" + uuid.uuid4().hex
        self._write(("INSERT INTO votes (id, conversation_id, character, message, variant_a, reply_a, variant_b, "
                     "reply_b, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (vote_id, conversation_id, character, message, a[0], a[1], b[0], b[1], time.time())))
        return vote_id

    def pending_vote(self, conversation_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM votes WHERE conversation_id = ? AND choice IS NULL ORDER BY created DESC "
                          "LIMIT 1", (conversation_id,))
        return rows[0] if rows else None

    def decide_vote(self, vote_id: str, choice: str, reply: str, meta: dict | None = None) -> None:
        """Record the choice and store the chosen reply as the conversation's turn, in one transaction."""
        rows = self._rows("SELECT conversation_id FROM votes WHERE id = ? AND choice IS NULL", (vote_id,))
        if not rows:
            raise NotFoundError(f"no pending vote '{vote_id}'", "send a new message")
        now = time.time()
        conv = rows[0]["conversation_id"]
        self._write(("UPDATE votes SET choice = ?, decided = ? WHERE id = ?", (choice, now, vote_id)),
                    ("INSERT INTO messages (conversation_id, role, content, meta, created) VALUES (?, ?, ?, ?, ?)",
                     (conv, "assistant", reply, json.dumps(meta or {}, default=str), now)),
                    ("UPDATE conversations SET updated = ? WHERE id = ?", (now, conv)))

    def drop_pending_votes(self, conversation_id: str) -> None:
        self._write(("DELETE FROM votes WHERE conversation_id = ? AND choice IS NULL", (conversation_id,)))

    def votes(self, character: str | None = None) -> list[dict[str, Any]]:
        """Decided votes (of one character), oldest first."""
        if character:
            return self._rows("SELECT * FROM votes WHERE choice IS NOT NULL AND character = ? ORDER BY created",
                              (character,))
        return self._rows("SELECT * FROM votes WHERE choice IS NOT NULL ORDER BY created")

    # -- chats: an outside key (a Telegram chat, a browser) → its character and conversation
    def chat(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM chats WHERE key = ?", (key,))
        return rows[0] if rows else None

    def set_chat(self, key: str, character: str, conversation_id: str | None) -> None:
        self._write(("INSERT INTO chats (key, character, conversation_id) VALUES (?, ?, ?) ON CONFLICT(key) "
                     "DO UPDATE SET character = excluded.character, conversation_id = excluded.conversation_id",
                     (key, character, conversation_id)))
