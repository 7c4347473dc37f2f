"""The first command policy: words that make a command dangerous, and the three modes."""

from __future__ import annotations

import asyncio
import io
import os
import pty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import pytest

from rpc_client.policy import CommandPolicy, DangerousMode, TerminalApprover
from rpc_client.rules import classify
from schemas.errors import ErrorCode, RpcError

pytestmark = pytest.mark.anyio

DANGEROUS = [
    "rm -rf build",
    "/bin/rm x",
    "\\rm x",
    "r''m x",
    '"rm" x',
    "rm -r -f .",
    "ls && rm x",
    "ls; rmdir d",
    "echo `rm x`",
    "echo $(rm -rf x)",
    "unlink f",
    "shred -u secret",
    "dd if=/dev/zero of=disk",
    "mkfs.ext4 /dev/sda1",
    "sudo ls",
    "x=1 sudo id",
    "echo 'unbalanced",
]
ORDINARY = [
    "pytest -q",
    "npm test",
    "git diff",
    "python -c 'print(1)'",
    "make build",
    "ls -la",
    "cargo test",
    "grep -rn TODO .",
]


@pytest.mark.parametrize("command", DANGEROUS)
def test_dangerous_spellings_are_dangerous(command: str) -> None:
    verdict = classify(command)
    assert verdict.dangerous and verdict.reasons


@pytest.mark.parametrize("command", ORDINARY)
def test_ordinary_commands_of_a_coding_session_are_not(command: str) -> None:
    assert not classify(command).dangerous


class Scripted:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def approve(self, command: str, reasons: tuple[str, ...], timeout: float) -> bool:
        self.asked.append(command)
        return self.answer


async def test_deny_refuses_without_asking_and_allow_runs_without_asking() -> None:
    approver = Scripted(True)
    with pytest.raises(RpcError) as refused:
        await CommandPolicy(DangerousMode.DENY, read_only=False, approver=approver).check_command("rm x")
    assert refused.value.code == ErrorCode.DENIED and "dangerous" in refused.value.message
    await CommandPolicy(DangerousMode.ALLOW, read_only=False, approver=approver).check_command("rm x")
    assert approver.asked == []


async def test_ask_runs_only_what_the_user_approves() -> None:
    await CommandPolicy(DangerousMode.ASK, read_only=False, approver=Scripted(True)).check_command("rm x")
    with pytest.raises(RpcError) as declined:
        await CommandPolicy(DangerousMode.ASK, read_only=False, approver=Scripted(False)).check_command(
            "rm x"
        )
    assert "declined" in declined.value.message


async def test_ordinary_commands_are_not_asked_about() -> None:
    approver = Scripted(False)
    await CommandPolicy(DangerousMode.ASK, read_only=False, approver=approver).check_command("pytest")
    assert approver.asked == []


async def test_read_only_refuses_every_command_not_known_safe_and_every_write() -> None:
    policy = CommandPolicy(DangerousMode.ALLOW, read_only=True, approver=Scripted(True))
    await policy.check_command("ls -la && git diff | grep x")
    for command in ("touch a", "pytest", "rm x", "ls > listing.txt"):
        with pytest.raises(RpcError):
            await policy.check_command(command)
    with pytest.raises(RpcError):
        policy.check_write("a.txt")


async def test_the_terminal_approver_refuses_without_a_terminal() -> None:
    stderr = io.StringIO()
    approver = TerminalApprover(stdin=io.StringIO("y\n"), stderr=stderr)
    assert await approver.approve("rm x", ("rm: deletes files",), 10) is False
    assert stderr.getvalue() == ""  # nobody to ask: no prompt either


@dataclass
class Terminal:
    """A pseudo-terminal: the approver reads ``stdin``; the test types answers."""

    stdin: TextIO
    leader: int

    def type(self, line: str) -> None:
        os.write(self.leader, line.encode() + b"\n")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "r", closefd=False) as stdin:
            yield Terminal(stdin, leader)
    finally:
        os.close(leader)
        os.close(follower)


async def test_the_terminal_approver_asks_on_a_terminal_and_remembers_always(terminal: Terminal) -> None:
    stderr = io.StringIO()
    approver = TerminalApprover(stdin=terminal.stdin, stderr=stderr, timeout=10)
    asking = asyncio.create_task(approver.approve("rm x", ("rm: deletes files",), 10))
    await asyncio.sleep(0)
    terminal.type("a")
    assert await asking is True
    assert "rm x" in stderr.getvalue()
    assert await approver.approve("rm x", (), 10) is True  # remembered: not asked again
    no = asyncio.create_task(approver.approve("rm y", (), 10))
    await asyncio.sleep(0)
    terminal.type("n")
    assert await no is False
    silent = TerminalApprover(stdin=terminal.stdin, stderr=io.StringIO(), timeout=0.05)
    assert await silent.approve("rm z", (), 10) is False  # no answer in time: refused


async def test_the_prompt_shows_control_characters_escaped_so_it_cannot_be_spoofed(
    terminal: Terminal,
) -> None:
    stderr = io.StringIO()
    approver = TerminalApprover(stdin=terminal.stdin, stderr=stderr, timeout=10)
    sneaky = "rm -rf ~/ #\r\x1b[2K\x1b[1A\x1b[2K    ls -la"
    asking = asyncio.create_task(approver.approve(sneaky, ("rm: deletes files",), 10))
    await asyncio.sleep(0)
    terminal.type("n")
    assert await asking is False
    shown = stderr.getvalue()
    assert "\x1b" not in shown and "\r" not in shown
    assert "rm -rf ~/ #\\r\\x1b[2K" in shown


async def test_the_wait_for_approval_is_bounded_by_the_command_timeout(terminal: Terminal) -> None:
    approver = TerminalApprover(stdin=terminal.stdin, stderr=io.StringIO(), timeout=3600)
    policy = CommandPolicy(DangerousMode.ASK, read_only=False, approver=approver)
    with pytest.raises(RpcError) as refused:
        await asyncio.wait_for(policy.check_command("rm x", approval_timeout=0.05), 10)
    assert refused.value.code == ErrorCode.DENIED
