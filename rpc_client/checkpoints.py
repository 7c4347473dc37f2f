"""Checkpoints: every file write_file changes or creates is saved first, so it can be undone.

The previous content is kept by its sha256 under ``blobs/``; ``index.jsonl``
records each change (path, previous sha or "did not exist", new sha). Undo
restores the previous content (or deletes a file the write created), but only
if the file is still what that write left: the user's later edits are never
overwritten.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpc_client.sandbox import Sandbox, SandboxError
from rpc_client.state import append_jsonl, private_dirs, read_jsonl
from schemas.errors import ErrorCode, RpcError

INDEX_FILE = "index.jsonl"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Checkpoints:
    def __init__(self, folder: Path) -> None:
        self.folder = folder / "checkpoints"
        self.blobs = self.folder / "blobs"
        private_dirs(self.blobs)
        self.index = self.folder / INDEX_FILE
        self._lock = threading.Lock()

    def entries(self) -> list[dict[str, Any]]:
        """The index's well-formed entries (a damaged line is skipped, never fatal)."""
        good = []
        for entry in read_jsonl(self.index):
            change = (
                isinstance(entry.get("checkpoint"), int)
                and isinstance(entry.get("path"), str)
                and "new" in entry
            )
            if change or isinstance(entry.get("undo_of"), int):
                good.append(entry)
        return good

    def _store(self, data: bytes) -> str:
        digest = sha256(data)
        blob = self.blobs / digest
        if not blob.exists():
            temporary = blob.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, blob)
        return digest

    def record(self, path: str, previous: bytes | None, new: bytes) -> int:
        """Save ``previous`` (``None``: the file did not exist) before ``path`` becomes ``new``; the checkpoint id."""
        with self._lock:  # writes run in worker threads: numbers must stay unique
            number = 1 + max((int(e["checkpoint"]) for e in self.entries() if "checkpoint" in e), default=0)
            self._append_change(number, path, previous, new)
        return number

    def _append_change(self, number: int, path: str, previous: bytes | None, new: bytes) -> None:
        append_jsonl(
            self.index,
            {
                "checkpoint": number,
                "time": round(time.time(), 3),
                "path": path,
                "previous": self._store(previous) if previous is not None else None,
                "new": sha256(new),
            },
        )

    def cancel(self, checkpoint: int) -> None:
        """Mark a checkpoint whose write did not happen."""
        append_jsonl(self.index, {"undo_of": checkpoint, "time": round(time.time(), 3), "cancelled": True})

    def undo(
        self,
        sandbox: Sandbox,
        checkpoint: int | None = None,
        *,
        max_bytes: int,
        guard: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Undo checkpoint ``checkpoint`` (the last one not undone when ``None``)."""
        entries = self.entries()
        undone = {e["undo_of"] for e in entries if "undo_of" in e}
        changes = [e for e in entries if "checkpoint" in e and e["checkpoint"] not in undone]
        if checkpoint is not None:
            changes = [e for e in changes if e["checkpoint"] == checkpoint]
        if not changes:
            which = f"checkpoint {checkpoint}" if checkpoint is not None else "any change"
            raise RpcError(ErrorCode.NOT_FOUND, f"nothing to undo: no {which} left to undo")
        change = changes[-1]
        path = str(change["path"])
        try:
            current: bytes | None = sandbox.read_file(path, max_bytes=max_bytes)
        except SandboxError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            current = None
        if current is None or sha256(current) != change["new"]:
            raise RpcError(
                ErrorCode.CONFLICT,
                f"{path!r} changed since checkpoint {change['checkpoint']}; undo would overwrite those changes",
            )
        if guard is not None:
            guard(sandbox.resolve(path))
        if change["previous"] is None:
            sandbox.remove_file(path)
            restored = "deleted"
        else:
            try:
                previous = (self.blobs / str(change["previous"])).read_bytes()
            except OSError:
                raise RpcError(
                    ErrorCode.NOT_FOUND, f"the saved content of checkpoint {change['checkpoint']} is missing"
                ) from None
            sandbox.write_file(path, previous, guard=guard)
            restored = "previous content"
        append_jsonl(self.index, {"undo_of": change["checkpoint"], "time": round(time.time(), 3)})
        return {"checkpoint": change["checkpoint"], "path": path, "restored": restored}
