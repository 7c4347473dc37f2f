"""Conversations kept in SQLite under ``AIHUB_HOME``, so a user can continue one after a restart.

One database file, ``conversations.sqlite3`` (mode 0600: it holds the project's
code as the model read it), in WAL mode. Every message of a conversation is kept
in order as the loop produces it, every tool call with its status and time, and
every turn with its stop reason and token usage. Writes are small and few per
tool call, so they run inline.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.llm.loop import Step
from hub.llm.model import Message, Usage
from schemas.framing import dump_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    workspace TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    turn INTEGER NOT NULL,
    workspace_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    stop_reason TEXT,
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    PRIMARY KEY (conversation_id, turn)
);
CREATE TABLE IF NOT EXISTS tool_calls (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    turn INTEGER NOT NULL,
    tool_call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    model_step INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    PRIMARY KEY (conversation_id, turn, tool_call_id)
);
"""

#: Longest title, taken from the first message.
TITLE_CHARS = 80


def new_id() -> str:
    return secrets.token_hex(8)


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 3] + "..."


class Conversations:
    """The store; one connection shared under a lock (the hub is one process)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    # --- conversations ---------------------------------------------------

    def create(self, workspace: str, model: str, first_message: str) -> str:
        conversation_id = new_id()
        now = time.time()
        self._write(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, _title(first_message), workspace, model, now, now),
        )
        return conversation_id

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return dict(rows[0]) if rows else None

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turns "
            "FROM conversations c ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    def history(self, conversation_id: str) -> list[Message]:
        """The messages to send the model again (every role but system), in order."""
        rows = self._rows(
            "SELECT message FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,)
        )
        messages: list[Message] = [json.loads(row["message"]) for row in rows]
        return messages

    def detail(self, conversation_id: str) -> dict[str, Any] | None:
        conversation = self.get(conversation_id)
        if conversation is None:
            return None
        conversation["messages"] = self.history(conversation_id)
        conversation["turns"] = [
            {
                "turn": row["turn"],
                "workspace_id": row["workspace_id"],
                "started_at": row["started_at"],
                "ended_at": row["ended_at"],
                "stop_reason": row["stop_reason"],
                "error": row["error"],
                "usage": Usage(row["prompt_tokens"] or 0, row["completion_tokens"] or 0).as_dict(),
            }
            for row in self._rows(
                "SELECT * FROM turns WHERE conversation_id = ? ORDER BY turn", (conversation_id,)
            )
        ]
        conversation["tool_calls"] = [
            {**dict(row), "arguments": json.loads(row["arguments"])}
            for row in self._rows(
                "SELECT turn, tool_call_id, tool, arguments, status, error, model_step, started_at, "
                "duration_ms FROM tool_calls WHERE conversation_id = ? ORDER BY started_at, rowid",
                (conversation_id,),
            )
        ]
        return conversation

    # --- turns -----------------------------------------------------------

    def begin_turn(self, conversation_id: str, workspace_id: str) -> TurnRecorder:
        with self._lock:
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(turn), 0) FROM turns WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            (seq,) = self._db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            now = time.time()
            self._db.execute(
                "INSERT INTO turns (conversation_id, turn, workspace_id, started_at) VALUES (?, ?, ?, ?)",
                (conversation_id, last + 1, workspace_id, now),
            )
            self._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return TurnRecorder(self, conversation_id, last + 1, seq)

    def end_turn(
        self, recorder: TurnRecorder, stop_reason: str, usage: Usage, error: str | None = None
    ) -> None:
        now = time.time()
        self._write(
            "UPDATE turns SET ended_at = ?, stop_reason = ?, error = ?, prompt_tokens = ?, "
            "completion_tokens = ? WHERE conversation_id = ? AND turn = ?",
            (
                now,
                stop_reason,
                error,
                usage.prompt_tokens,
                usage.completion_tokens,
                recorder.conversation_id,
                recorder.turn,
            ),
        )
        self._write("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, recorder.conversation_id))


@dataclass
class TurnRecorder:
    """The loop's :class:`~hub.llm.loop.Recorder` for one turn of one conversation."""

    store: Conversations
    conversation_id: str
    turn: int
    seq: int

    def message(self, message: Message) -> None:
        self.seq += 1
        self.store._write(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
            (self.conversation_id, self.seq, self.turn, dump_json(message), time.time()),
        )

    def step(self, step: Step) -> None:
        self.store._write(
            "INSERT OR REPLACE INTO tool_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.conversation_id,
                self.turn,
                step.tool_call_id,
                step.tool,
                dump_json(step.arguments),
                step.status,
                step.error,
                step.model_step,
                step.started_at,
                step.duration_ms,
            ),
        )
