"""The command policy: which commands need the user's consent, and asking for it.

This first version judges the words of a command: after shell-style splitting
(which removes quotes and escapes, so ``\\rm`` and ``r''m`` are ``rm``) and
dropping a leading path (``/bin/rm`` is ``rm``), a word from
:data:`DANGEROUS_WORDS` makes the command dangerous, and so does text that
cannot be split at all. It over-refuses on purpose (``grep rm notes.txt`` is
asked about too); a later version parses the shell grammar. The interface,
:func:`classify` and :class:`CommandPolicy`, stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

from schemas.errors import ErrorCode, RpcError

DANGEROUS_WORDS = {
    "rm": "deletes files",
    "rmdir": "deletes folders",
    "unlink": "deletes files",
    "shred": "destroys file contents",
    "dd": "writes raw data",
    "mkfs": "formats a file system",
    "sudo": "raises privilege",
    "su": "raises privilege",
    "doas": "raises privilege",
}


class DangerousMode(enum.StrEnum):
    ASK = "ask"
    DENY = "deny"
    ALLOW = "allow"


@dataclass(frozen=True)
class Verdict:
    dangerous: bool
    reasons: tuple[str, ...] = ()


#: Characters that can glue a command name to shell syntax: `rm`, $(rm, x=`rm`, {rm,-rf}.
_GLUE = re.compile(r"[`$(){}=;|&<>,!]+")


def _word_reasons(word: str) -> list[str]:
    return [r for part in _GLUE.split(word) if part and (r := _word_reason(part))]


def _word_reason(word: str) -> str | None:
    name = word.rsplit("/", 1)[-1]
    if name.startswith("mkfs."):
        name = "mkfs"
    reason = DANGEROUS_WORDS.get(name)
    return f"{name}: {reason}" if reason else None


def classify(command: str) -> Verdict:
    """Judge a command before it runs. When in doubt, it is dangerous."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:  # unbalanced quotes, a trailing escape
        return Verdict(True, (f"cannot be analysed ({exc})",))
    reasons = tuple(dict.fromkeys(r for w in words for r in _word_reasons(w)))
    return Verdict(bool(reasons), reasons)


class Approver(Protocol):
    async def approve(self, command: str, reasons: tuple[str, ...]) -> bool:
        """Ask the user; ``True`` only for an explicit yes."""
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

    async def _read_line(self) -> str:
        loop = asyncio.get_running_loop()
        fd = self._stdin.fileno()
        answer: asyncio.Future[str] = loop.create_future()

        def on_readable() -> None:
            if not answer.done():
                answer.set_result(self._stdin.readline())

        loop.add_reader(fd, on_readable)
        try:
            return await asyncio.wait_for(answer, self._timeout)
        finally:
            loop.remove_reader(fd)

    async def approve(self, command: str, reasons: tuple[str, ...]) -> bool:
        if command in self._always:
            return True
        if not self._is_terminal():
            return False
        async with self._lock:
            self._stderr.write(
                f"\n!! The AI wants to run a dangerous command ({'; '.join(reasons)}):\n    {command}\n"
                "   Run it? [y]es once / [n]o / [a]lways this session: "
            )
            self._stderr.flush()
            try:
                reply = (await self._read_line()).strip().lower()
            except TimeoutError:
                self._stderr.write("\n   (no answer: refused)\n")
                return False
            if reply in ("a", "always"):
                self._always.add(command)
                return True
            return reply in ("y", "yes")


class CommandPolicy:
    """Decides whether a command may run; raises ``RpcError(DENIED)`` when it may not."""

    def __init__(self, mode: DangerousMode, *, read_only: bool, approver: Approver) -> None:
        self.mode = mode
        self.read_only = read_only
        self._approver = approver

    def check_write(self, path: str) -> None:
        if self.read_only:
            raise RpcError(ErrorCode.DENIED, f"the client is read-only: writing {path!r} is refused")

    async def check_command(self, command: str) -> Verdict:
        if self.read_only:
            raise RpcError(ErrorCode.DENIED, "the client is read-only: commands are refused")
        verdict = classify(command)
        if not verdict.dangerous or self.mode is DangerousMode.ALLOW:
            return verdict
        why = "; ".join(verdict.reasons)
        if self.mode is DangerousMode.DENY:
            raise RpcError(
                ErrorCode.DENIED,
                f"refused: this command is dangerous ({why}) and the client refuses dangerous commands "
                "(--dangerous deny). Choose another way, or ask the user to run it.",
            )
        approved = False
        with contextlib.suppress(OSError, ValueError):
            approved = await self._approver.approve(command, verdict.reasons)
        if not approved:
            raise RpcError(
                ErrorCode.DENIED,
                f"the user declined this dangerous command ({why}), or no one was at the client's "
                "terminal to approve it. Choose another way, or ask the user.",
            )
        return verdict
