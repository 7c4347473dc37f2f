"""Checkpoints, undo, expected_sha256 and the audit log, through the dispatcher and the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpc_client.audit import AuditLog
from rpc_client.checkpoints import Checkpoints
from rpc_client.dispatcher import ClientContext
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from rpc_client.state import project_state_dir
from schemas.errors import ErrorCode
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AIHUB_HOME", str(home))
    return home


@pytest.fixture
def ctx(tmp_path: Path, home: Path) -> Iterator[ClientContext]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "main.py").write_text("v1\n")
    with Sandbox(root) as sandbox:
        state = project_state_dir(sandbox.root)
        policy = CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover())
        yield ClientContext(
            sandbox=sandbox,
            policy=policy,
            report=lambda line: None,
            audit=AuditLog(state),
            checkpoints=Checkpoints(state),
        )


async def test_every_write_can_be_undone_newest_first(ctx: ClientContext) -> None:
    root = ctx.sandbox.root
    first = (await call(ctx, "write_file", {"path": "main.py", "content": "v2\n"}))["result"]
    second = (await call(ctx, "write_file", {"path": "new/mod.py", "content": "new\n"}))["result"]
    assert (first["checkpoint"], second["checkpoint"]) == (1, 2)
    assert (await call(ctx, "undo", {}))["result"] == {
        "checkpoint": 2,
        "path": "new/mod.py",
        "restored": "deleted",
    }
    assert not (root / "new" / "mod.py").exists()
    assert (await call(ctx, "undo", {}))["result"]["restored"] == "previous content"
    assert (root / "main.py").read_text() == "v1\n"
    assert (await call(ctx, "undo", {}))["error"]["code"] == ErrorCode.NOT_FOUND


async def test_undo_never_overwrites_the_users_later_edits(ctx: ClientContext) -> None:
    await call(ctx, "write_file", {"path": "main.py", "content": "ai\n"})
    (ctx.sandbox.root / "main.py").write_text("the user's own edit\n")
    error = (await call(ctx, "undo", {}))["error"]
    assert error["code"] == ErrorCode.CONFLICT
    assert (ctx.sandbox.root / "main.py").read_text() == "the user's own edit\n"


async def test_a_write_with_a_stale_sha256_is_refused(ctx: ClientContext) -> None:
    read = (await call(ctx, "read_files", {"files": ["main.py"]}))["result"]
    digest = read["sha256"]["main.py"]
    assert digest == hashlib.sha256(b"v1\n").hexdigest()
    (ctx.sandbox.root / "main.py").write_text("changed by the user\n")
    error = (await call(ctx, "write_file", {"path": "main.py", "content": "ai", "expected_sha256": digest}))[
        "error"
    ]
    assert error["code"] == ErrorCode.CONFLICT
    assert (ctx.sandbox.root / "main.py").read_text() == "changed by the user\n"
    fresh = hashlib.sha256(b"changed by the user\n").hexdigest()
    ok = await call(ctx, "write_file", {"path": "main.py", "content": "ai", "expected_sha256": fresh})
    assert ok["result"]["bytes_written"] == 2


async def test_a_refused_write_leaves_no_checkpoint_to_undo(ctx: ClientContext) -> None:
    await call(ctx, "write_file", {"path": "main.py", "content": "v2\n"})
    (ctx.sandbox.root / "dir").mkdir()
    assert "error" in await call(ctx, "write_file", {"path": "dir", "content": "x"})
    assert (await call(ctx, "undo", {}))["result"]["path"] == "main.py"


async def test_every_request_is_in_the_audit_log_with_its_decision(ctx: ClientContext) -> None:
    await call(ctx, "read_files", {"files": ["main.py"]})
    await call(ctx, "write_file", {"path": "main.py", "content": "v2\n"})
    await call(ctx, "execute_command", {"command": "rm main.py"})
    await call(ctx, "execute_command", {"command": "echo hi"})
    assert ctx.audit is not None
    entries = ctx.audit.tail(10)
    assert [(e["method"], e["status"], e["decision"]) for e in entries] == [
        ("read_files", "ok", "allowed"),
        ("write_file", "ok", "allowed"),
        ("execute_command", "denied", "refused"),
        ("execute_command", "ok", "allowed"),
    ]
    assert entries[1]["checkpoint"] == 1 and entries[3]["exit_code"] == 0
    assert all(isinstance(e["duration_ms"], float) for e in entries)
    state = project_state_dir(ctx.sandbox.root)
    assert not str(state).startswith(str(ctx.sandbox.root))  # kept outside the project
    assert oct(os.stat(state).st_mode & 0o777) == oct(0o700)


def test_undo_and_log_work_from_the_command_line_after_a_restart(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "proj2"
    root.mkdir()
    (root / "a.txt").write_text("before\n")
    with Sandbox(root) as sandbox:
        state = project_state_dir(sandbox.root)
        from rpc_client import files
        from schemas.tools import WriteFileParams

        files.write_file(
            sandbox,
            WriteFileParams(path="a.txt", content="after\n"),
            files.FileLimits(),
            None,
            Checkpoints(state),
        )
    env = {**os.environ, "AIHUB_HOME": str(home)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rpc_client.cli", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    listed = run("undo", "--list")
    assert listed.returncode == 0 and "a.txt" in listed.stdout
    done = run("undo")
    assert done.returncode == 0 and "undid checkpoint 1" in done.stderr
    assert (root / "a.txt").read_text() == "before\n"
    again = run("undo")
    assert again.returncode == 1 and "nothing to undo" in again.stderr and "Traceback" not in again.stderr
    assert run("log").returncode == 0


async def test_concurrent_writes_get_distinct_checkpoints(ctx: ClientContext) -> None:
    import asyncio

    answers = await asyncio.gather(
        *(call(ctx, "write_file", {"path": f"f{i}.txt", "content": str(i)}) for i in range(20))
    )
    numbers = [a["result"]["checkpoint"] for a in answers]
    assert sorted(numbers) == list(range(1, 21))
