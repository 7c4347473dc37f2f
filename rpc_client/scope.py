"""The request being served, for code deep in a method: its id, how to notify the hub, whether it was withdrawn.

jsonrpcserver calls a method with its params only; the transport sets
:data:`CURRENT` in the request's own task context, so a command can stream its
output as notifications that name the request, and stop when the hub sends
``$/cancelRequest``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from schemas.jsonrpc import RequestId
from schemas.protocol import OUTPUT_CHUNK

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class RequestScope:
    id: RequestId
    notify: Notify
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


CURRENT: ContextVar[RequestScope | None] = ContextVar("aihub_request", default=None)


class OutputStreamer:
    """Sends a command's output to the hub as ``command_output_chunk`` notifications.

    Output is batched (every ``interval`` seconds or ``batch`` characters), decoded
    as UTF-8 without splitting characters, sent in order, and capped at ``limit``
    characters per command (the final answer still holds head and tail).
    """

    def __init__(
        self,
        scope: RequestScope,
        *,
        interval: float = 0.05,
        batch: int = 32 * 1024,
        limit: int = 4 * 1024 * 1024,
    ) -> None:
        self.scope = scope
        self.interval, self.batch, self.limit = interval, batch, limit
        self._decoders = {
            s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")
        }
        self._pending: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._size = 0
        self._sent = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Task[None] | None = None

    def __call__(self, stream: str, chunk: bytes) -> None:
        text = self._decoders[stream].decode(chunk)
        if not text or self._sent >= self.limit:
            return
        self._pending[stream].append(text)
        self._size += len(text)
        if self._size >= self.batch:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream, parts in self._pending.items():
            if not parts:
                continue
            data = "".join(parts)[: max(0, self.limit - self._sent)]
            parts.clear()
            self._sent += len(data)
            if self._sent >= self.limit:
                data += "\n[... live output stops here; the answer has the end ...]\n"
            if data:
                self._send({"id": self.scope.id, "stream": stream, "data": data})
        self._size = 0

    def _send(self, params: dict[str, Any]) -> None:
        previous = self._last

        async def send() -> None:
            if previous is not None:  # in order: each chunk after the one before
                with contextlib.suppress(Exception):
                    await previous
            await self.scope.notify(OUTPUT_CHUNK, params)

        self._last = asyncio.get_running_loop().create_task(send())

    async def close(self) -> None:
        """Send what is left; return when every chunk is sent (before the final answer)."""
        for stream, decoder in self._decoders.items():
            if tail := decoder.decode(b"", final=True):
                self._pending[stream].append(tail)
        self.flush()
        if self._last is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._last, 5)
