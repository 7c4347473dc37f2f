"""The audit log: one JSON line per request the client served, with its decision and outcome.

Each line is written (one ``write`` to a file opened with ``O_APPEND``) when the
request ends and before its answer is sent: once the hub has an answer, its line
is in the file, even if the client is killed the next instant. The file is kept
open between requests, but checked by path before each line: a log the user
moved or deleted is started again under its name, as when it was opened each time.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpc_client.state import read_jsonl

AUDIT_FILE = "audit.jsonl"
#: As ``state.append_jsonl`` writes a line (json.dumps builds this encoder anew on every call).
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


@dataclass
class CallRecord:
    """What one request did; filled in while it runs, written when it ends."""

    method: str
    summary: str
    started: float = field(default_factory=time.time)
    #: For commands: "allowed" (not dangerous), "approved"/"refused" (asked), "denied" (policy, read-only).
    decision: str = "allowed"
    details: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    def __init__(self, folder: Path) -> None:
        self.path = folder / AUDIT_FILE
        self._fd: int | None = None
        #: (device, inode) of the open file: the path must still name it.
        self._identity: tuple[int, int] = (0, 0)
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[..., AuditLog] | None = None

    def write(self, record: CallRecord, status: str, duration_ms: float) -> None:
        """Append the request's line; it is in the file when this returns (OSError if it cannot be)."""
        line = _ENCODER.encode(
            {
                "time": round(record.started, 3),
                "method": record.method,
                "summary": record.summary,
                "decision": record.decision,
                "status": status,
                "duration_ms": round(duration_ms, 1),
                **record.details,
            }
        )
        data = (line + "\n").encode("ascii")
        with self._lock:
            fd = self._current()
            try:
                while data:  # a short write (a disk filling up) goes on where it stopped
                    data = data[os.write(fd, data) :]
            except OSError:
                self._close()  # opened again for the next line
                raise

    def _current(self) -> int:
        """The open log, opened (again) when the path no longer names it."""
        fd = self._fd
        if fd is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                pass
            else:
                if (st.st_dev, st.st_ino) == self._identity:
                    return fd
            self._close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        self._fd, self._identity = fd, (st.st_dev, st.st_ino)
        self._finalizer = weakref.finalize(self, os.close, fd)
        return fd

    def _close(self) -> None:
        finalizer, self._fd, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            with contextlib.suppress(OSError):
                finalizer()  # closes the descriptor, once

    def close(self) -> None:
        """Close the file (the next line opens it again)."""
        with self._lock:
            self._close()

    def tail(self, count: int) -> list[dict[str, Any]]:
        return read_jsonl(self.path)[-count:] if count > 0 else []


def format_entry(entry: dict[str, Any]) -> str:
    """One line for ``aihub-client log``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("time", 0))))
    extra = " ".join(f"{k}={entry[k]}" for k in ("checkpoint", "bytes_written", "exit_code") if k in entry)
    return (
        f"{when}  {entry.get('method', '?'):<15} {entry.get('status', '?'):<16} {entry.get('decision', ''):<9} "
        f"{entry.get('duration_ms', 0):>8} ms  {entry.get('summary', '')}" + (f"  [{extra}]" if extra else "")
    )
