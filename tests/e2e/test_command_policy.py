"""The command policy through the real hub and the real client: refusals, consent on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.canaries import fingerprint, make_canaries
from tests.dangerous_spellings import PRIVILEGED, SPELLINGS
from tests.e2e.conftest import Hub, stop, wait_until

pytestmark = pytest.mark.e2e


def test_every_destructive_spelling_is_refused_by_a_deny_client_and_the_canaries_survive(
    hub: Hub, tmp_path: Path, start_client
) -> None:
    root = tmp_path / "canaries"
    make_canaries(root)
    before = fingerprint(root)
    wid = hub.workspace_id(start_client(hub, root, "--dangerous", "deny").name)
    for command in SPELLINGS + PRIVILEGED:
        answer = hub.call(wid, "execute_command", {"command": command, "timeout": 10}).json()
        assert answer["status"] == "error", command
        assert answer["error_code"] == -32003 and "dangerous" in answer["error_message"], answer
        assert fingerprint(root) == before, f"{command!r} harmed a canary"


def test_ordinary_commands_run_without_a_prompt_even_with_no_terminal(
    hub: Hub, tmp_path: Path, start_client
) -> None:
    root = tmp_path / "proj"
    make_canaries(root)
    wid = hub.workspace_id(start_client(hub, root).name)  # --dangerous ask, stdin is not a terminal
    for command in [
        "git diff --stat",
        "git status --short",
        "ls",
        f"{sys.executable} -c 'print(1)'",
        "make --version",
        "echo hi > new.txt",
    ]:
        answer = hub.call(wid, "execute_command", {"command": command}).json()
        assert answer["status"] == "success", (command, answer)
    refused = hub.call(wid, "execute_command", {"command": "rm canary.txt"}).json()
    assert refused["status"] == "error" and "declined" in refused["error_message"]
    assert (root / "canary.txt").exists()


class Terminal:
    """A real client process on a pseudo-terminal: read what it shows, type answers."""

    def __init__(self, command: list[str]) -> None:
        leader, follower = pty.openpty()
        self.leader = leader
        self.process = subprocess.Popen(
            command, stdin=follower, stdout=follower, stderr=follower, start_new_session=True
        )
        os.close(follower)
        self.screen = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.leader, 4096)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def wait_for(self, text: str, count: int = 1) -> None:
        wait_until(
            lambda: self.screen.decode(errors="replace").count(text) >= count,
            what=f"{text!r} on the terminal",
        )

    def type(self, line: str) -> None:
        os.write(self.leader, line.encode() + b"\n")

    def close(self) -> None:
        stop(self.process)
        os.close(self.leader)


def test_the_user_is_asked_on_the_terminal_and_decides(hub: Hub, tmp_path: Path) -> None:
    root = tmp_path / "asked"
    make_canaries(root)
    (root / "second.txt").write_text("2\n")
    term = Terminal(
        [
            sys.executable,
            "-m",
            "rpc_client.cli",
            "--hub",
            hub.ws,
            "--root",
            str(root),
            "--name",
            "asked",
            "--token",
            hub.token,
        ]
    )
    try:
        wid = hub.workspace_id("asked")
        results: list[dict[str, object]] = []

        def run(command: str) -> threading.Thread:
            worker = threading.Thread(
                target=lambda: results.append(hub.call(wid, "execute_command", {"command": command}).json())
            )
            worker.start()
            return worker

        # no: refused, the canary survives
        worker = run("rm canary.txt")
        term.wait_for("Run it?")
        assert "rm: deletes files" in term.screen.decode()
        term.type("n")
        worker.join(30)
        assert results[-1]["status"] == "error" and "declined" in str(results[-1]["error_message"])
        assert (root / "canary.txt").exists()

        # yes once: it runs
        worker = run("rm canary.txt")
        term.wait_for("Run it?", 2)
        term.type("y")
        worker.join(30)
        assert results[-1]["status"] == "success" and not (root / "canary.txt").exists()

        # always: it runs, and the same command is not asked about again
        worker = run("rm -f second.txt")
        term.wait_for("Run it?", 3)
        term.type("a")
        worker.join(30)
        assert results[-1]["status"] == "success" and not (root / "second.txt").exists()
        (root / "second.txt").write_text("again\n")
        run("rm -f second.txt").join(30)
        assert results[-1]["status"] == "success" and not (root / "second.txt").exists()
        assert term.screen.decode(errors="replace").count("Run it?") == 3
    finally:
        term.close()
