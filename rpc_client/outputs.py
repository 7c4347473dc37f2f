"""Full command output, kept when the answer had to cut it, for the AI to read in pages later.

While a command runs its output is also written to ``outputs/<id>.stdout`` and
``.stderr`` in the project's state folder (outside the root), up to
:data:`SPOOL_CAP` bytes per stream. If the answer cut the output, the files
stay and the answer carries ``output_id``; ``read_output`` pages through them.
Only the newest :data:`KEEP` outputs are kept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from rpc_client.state import private_dirs
from schemas.errors import ErrorCode, RpcError

SPOOL_CAP = 64 * 1024 * 1024
KEEP = 20
STREAMS = ("stdout", "stderr")


class Spool:
    """The full output of one command, written as it arrives."""

    def __init__(self, folder: Path, cap: int = SPOOL_CAP) -> None:
        private_dirs(folder)
        self.folder = folder
        self.id = secrets.token_hex(8)
        self.cap = cap
        self._files: dict[str, BinaryIO] = {}
        self._sizes = dict.fromkeys(STREAMS, 0)

    def path(self, stream: str) -> Path:
        return self.folder / f"{self.id}.{stream}"

    def write(self, stream: str, chunk: bytes) -> None:
        room = self.cap - self._sizes[stream]
        if room <= 0:
            return
        if stream not in self._files:
            fd = os.open(self.path(stream), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self._files[stream] = os.fdopen(fd, "wb")
        self._files[stream].write(chunk[:room])
        self._sizes[stream] += min(len(chunk), room)

    def finish(self, keep: bool) -> str | None:
        """Close the files; keep them (and return the id) or delete them."""
        for f in self._files.values():
            f.close()
        if not keep:
            for stream in self._files:
                with contextlib.suppress(FileNotFoundError):
                    self.path(stream).unlink()
            return None
        for stream in STREAMS:  # an empty stream still has a file to read
            self.path(stream).touch(mode=0o600, exist_ok=True)
        _prune(self.folder)
        return self.id


def _prune(folder: Path) -> None:
    ids = sorted(
        {p.stem for p in folder.glob("*.stdout")}, key=lambda i: (folder / f"{i}.stdout").stat().st_mtime
    )
    for old in ids[:-KEEP]:
        for stream in STREAMS:
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{old}.{stream}").unlink()


def read_output(folder: Path, output_id: str, stream: str, offset: int, limit: int) -> dict[str, Any]:
    """A page of a kept output: ``data`` (UTF-8, bad bytes replaced) from byte ``offset``."""
    path = folder / f"{output_id}.{stream}"
    try:
        with open(path, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        raise RpcError(
            ErrorCode.NOT_FOUND, f"no kept output {output_id!r} (only the newest {KEEP} are kept)"
        ) from None
    end = offset + len(data)
    return {
        "data": data.decode("utf-8", errors="replace"),
        "offset": offset,
        "next_offset": end,
        "total_bytes": total,
        "eof": end >= total,
    }
