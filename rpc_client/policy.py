"""The command policy: which commands may run, and asking the user for consent.

Every command is judged by :mod:`rpc_client.rules` (a real bash grammar, every
simple command at any depth, wrappers unwrapped). Dangerous ones run only with
the user's consent (``--dangerous ask``), never (``deny``) or always
(``allow``). In read-only mode only commands known to be safe (read-only
tools such as ``ls``, ``grep``, ``git diff``) run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from rpc_client.rules import Judge, Probe, Verdict
from rpc_client.terminal import printable
from schemas.errors import ErrorCode, RpcError


class DangerousMode(enum.StrEnum):
    ASK = "ask"
    DENY = "deny"
    ALLOW = "allow"


class Approver(Protocol):
    async def approve(self, command: str, reasons: tuple[str, ...], timeout: float) -> bool:
        """Ask the user; ``True`` only for an explicit yes within ``timeout`` seconds."""
        ...


class TerminalApprover:
    """Asks on the client's terminal: yes once, no, or always (for the same command, this session).

    No terminal, or no answer within ``timeout`` seconds: refused. One question at a time.
    """

    def __init__(
        self, *, stdin: TextIO | None = None, stderr: TextIO | None = None, timeout: float = 120.0
    ) -> None:
        self._stdin = stdin or sys.stdin
        self._stderr = stderr or sys.stderr
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._always: set[str] = set()

    def _is_terminal(self) -> bool:
        try:
            return self._stdin.isatty()
        except (ValueError, OSError):
            return False

    async def _read_line(self, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        fd = self._stdin.fileno()
        answer: asyncio.Future[str] = loop.create_future()

        def on_readable() -> None:
            if not answer.done():
                answer.set_result(self._stdin.readline())

        loop.add_reader(fd, on_readable)
        try:
            return await asyncio.wait_for(answer, timeout)
        finally:
            loop.remove_reader(fd)

    async def approve(self, command: str, reasons: tuple[str, ...], timeout: float) -> bool:
        if command in self._always:
            return True
        if not self._is_terminal():
            return False
        async with self._lock:
            self._stderr.write(
                f"\n!! The AI wants to run a dangerous command ({printable('; '.join(reasons))}):\n"
                f"    {printable(command)}\n"
                "   Run it? [y]es once / [n]o / [a]lways this session: "
            )
            self._stderr.flush()
            try:
                reply = (await self._read_line(min(self._timeout, timeout))).strip().lower()
            except TimeoutError:
                self._stderr.write("\n   (no answer: refused)\n")
                return False
            if reply in ("a", "always"):
                self._always.add(command)
                return True
            return reply in ("y", "yes")


class CommandPolicy:
    """Decides whether a command may run; raises ``RpcError(DENIED)`` when it may not."""

    def __init__(
        self,
        mode: DangerousMode,
        *,
        read_only: bool,
        approver: Approver,
        probe: Probe | None = None,
        protected: Sequence[str] = (),
        secret: Callable[[str], bool] | None = None,
        root: Path | None = None,
        frozen: Sequence[str] = (),
    ) -> None:
        self.mode = mode
        self.read_only = read_only
        self._approver = approver
        self._judge = Judge(probe, protected, secret, root=root, frozen=frozen)

    def classify(self, command: str) -> Verdict:
        return self._judge.classify(command)

    def check_write(self, path: str) -> None:
        if self.read_only:
            raise RpcError(ErrorCode.DENIED, f"the client is read-only: writing {path!r} is refused")

    async def check_command(self, command: str, *, approval_timeout: float = float("inf")) -> str:
        """Raise ``RpcError(DENIED)`` unless ``command`` may run; else say why it may.

        The answer is the decision for the audit log: ``allowed`` (not dangerous),
        ``allowed-dangerous`` (``--dangerous allow``) or ``approved`` (the user said yes).

        ``approval_timeout`` bounds the wait for the user's answer (the hub stops
        waiting for the call at some point: a late yes must not run the command).
        """
        verdict = self.classify(command)
        if self.read_only and not verdict.safe:
            raise RpcError(
                ErrorCode.DENIED,
                "the client is read-only: only read-only commands (ls, cat, grep, git diff...) may run",
            )
        if not verdict.dangerous:
            return "allowed"
        if self.mode is DangerousMode.ALLOW:
            return "allowed-dangerous"
        why = "; ".join(verdict.reasons)
        if self.mode is DangerousMode.DENY:
            raise RpcError(
                ErrorCode.DENIED,
                f"refused: this command is dangerous ({why}) and the client refuses dangerous commands "
                "(--dangerous deny). Choose another way, or ask the user to run it.",
            )
        approved = False
        with contextlib.suppress(OSError, ValueError):
            approved = await self._approver.approve(command, verdict.reasons, approval_timeout)
        if not approved:
            raise RpcError(
                ErrorCode.DENIED,
                f"the user declined this dangerous command ({why}), or no one was at the client's "
                "terminal to approve it. Choose another way, or ask the user.",
            )
        return "approved"
