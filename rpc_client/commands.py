"""execute_command: a shell command in the workspace root, bounded in time and output.

The command runs in a new session (its own process group) with stdin closed.
On timeout, cancellation or normal exit the whole group is killed, so nothing
the command started is left behind. Output beyond the cap keeps its head and
its tail, with a marker in the middle saying how much was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rpc_client.confine import Confinement
from schemas.errors import ErrorCode, RpcError

#: Commands run under bash (the grammar the policy judges), or /bin/sh where there is no bash.
SHELL = shutil.which("bash") or "/bin/sh"
#: Variables never passed on to a command: the client's own (its token among them).
CLIENT_ENV_PREFIX = "AIHUB_"
#: How long to wait for the pipes to close once the process group is dead.
DRAIN_GRACE_S = 2.0
_CHUNK = 64 * 1024


@dataclass
class OutputBuffer:
    """Keeps the first and last ``cap // 2`` bytes of a stream."""

    cap: int
    head: bytearray = field(default_factory=bytearray)
    tail: deque[bytes] = field(default_factory=deque)
    tail_bytes: int = 0
    total: int = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        limit = self.cap - self.cap // 2
        while self.tail_bytes - len(self.tail[0]) >= limit:
            self.tail_bytes -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        tail = b"".join(self.tail)
        if not self.truncated:
            return (bytes(self.head) + tail).decode("utf-8", errors="replace")
        keep = self.cap - self.cap // 2
        tail = tail[-keep:] if keep else b""
        cut = self.total - len(self.head) - len(tail)
        marker = f"\n[... {cut} bytes of output cut here; {self.total} bytes in all ...]\n"
        return (
            bytes(self.head).decode("utf-8", errors="replace")
            + marker
            + tail.decode("utf-8", errors="replace")
        )


def command_env() -> dict[str, str]:
    """The client's environment without its own variables (``AIHUB_*``: the token, the state folder)."""
    return {key: value for key, value in os.environ.items() if not key.startswith(CLIENT_ENV_PREFIX)}


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _wait_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for the shell itself to exit, whatever its children do with the pipes.

    (asyncio's own ``Process.wait`` also waits for the pipes to close, which a
    background child can hold open forever.) A pidfd becomes readable when the
    process exits; without pidfd support a worker thread waits instead.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(process.wait)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()


#: Called with ("stdout" or "stderr", bytes) as output arrives, for live streaming.
OnOutput = Callable[[str, bytes], None]


async def _pump(
    pipe: IO[bytes] | None,
    buffer: OutputBuffer,
    transports: list[asyncio.BaseTransport],
    stream: str,
    on_output: OnOutput | None,
) -> None:
    if pipe is None:
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    transports.append(transport)
    while chunk := await reader.read(_CHUNK):
        buffer.feed(chunk)
        if on_output is not None:
            on_output(stream, chunk)


async def run_command(
    command: str,
    *,
    cwd: Path,
    timeout: float,
    output_cap: int,
    confinement: Confinement | None = None,
    asked_timeout: float | None = None,
    on_output: OnOutput | None = None,
    cancelled: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run ``command`` through :data:`SHELL` in ``cwd``; the result fields of execute_command.

    A non-zero exit is a normal result. A timeout raises ``RpcError(TIMEOUT)``
    and ``cancelled`` being set raises ``RpcError(CANCELLED)``, both with what
    the command printed so far in their data; a command that cannot start
    raises ``RpcError(CANNOT_START)``. ``on_output`` sees the output live.
    """
    started = time.monotonic()
    try:
        process = subprocess.Popen(  # noqa: ASYNC220 - fork+exec is quick; the waiting is async
            confinement.wrap([SHELL, "-c", command]) if confinement else [SHELL, "-c", command],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=command_env(),
        )
    except OSError as exc:
        raise RpcError(ErrorCode.CANNOT_START, f"the command could not start: {exc.strerror}") from None
    out, err = OutputBuffer(output_cap), OutputBuffer(output_cap)
    transports: list[asyncio.BaseTransport] = []
    pumps = asyncio.gather(
        _pump(process.stdout, out, transports, "stdout", on_output),
        _pump(process.stderr, err, transports, "stderr", on_output),
    )
    exited = asyncio.ensure_future(_wait_exit(process))
    stop = asyncio.ensure_future(cancelled.wait()) if cancelled is not None else None
    timed_out = was_cancelled = False
    try:
        done, _ = await asyncio.wait(
            {exited} | ({stop} if stop else set()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        was_cancelled = exited not in done and stop is not None and stop in done
        timed_out = not done
    finally:
        for waiter in (exited, stop):
            if waiter is not None and not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        # Normal exit, timeout or cancellation: nothing of the group survives.
        _kill_group(process.pid)
        try:
            await asyncio.wait_for(asyncio.shield(pumps), DRAIN_GRACE_S)
        except (TimeoutError, asyncio.CancelledError):
            # A process that left the group still holds a pipe: stop reading.
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
        finally:
            for transport in transports:
                transport.close()
            process.wait()  # the group is dead: this reaps at once
    fields: dict[str, Any] = {
        "stdout": out.text(),
        "stderr": err.text(),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if out.truncated or err.truncated:
        fields["truncated"] = True
    if was_cancelled:
        fields["exit_code"] = None
        raise RpcError(
            ErrorCode.CANCELLED, "the command was cancelled and killed with its process group", fields
        )
    if timed_out:
        fields["exit_code"] = None
        raise RpcError(
            ErrorCode.TIMEOUT,
            f"the command timed out (timeout {asked_timeout or timeout:g} s) and was killed with its process group",
            fields,
        )
    code = process.returncode
    assert code is not None
    if code < 0:  # killed by a signal: report it as a shell would (128 + N)
        fields["signal"] = signal.Signals(-code).name
        code = 128 - code
    fields["exit_code"] = code
    return fields
