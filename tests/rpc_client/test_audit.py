"""The audit log kept open: each line is in the file before the answer leaves, whatever happens next."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpc_client.audit import AUDIT_FILE, AuditLog, CallRecord
from rpc_client.dispatcher import ClientContext, dispatch_request
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from schemas.jsonrpc import Request
from tests.rpc_client.helpers import NoApprover

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ClientContext]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    state = tmp_path / "state"
    state.mkdir()
    audit = AuditLog(state)
    with Sandbox(root) as sandbox:
        yield ClientContext(
            sandbox=sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
            report=lambda line: None,
            audit=audit,
        )
    audit.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


async def test_the_line_is_in_the_file_when_the_answer_is_ready(ctx: ClientContext) -> None:
    assert ctx.audit is not None
    for n in range(3):
        await dispatch_request(ctx, Request(id=n, method="read_files", params={"files": ["a.txt"]}))
        # Read through another descriptor, as `aihub-client log` (or anyone after a crash) would.
        assert [e["summary"] for e in lines(ctx.audit.path)] == ["a.txt"] * (n + 1)


async def test_a_log_moved_or_deleted_is_started_again_under_its_name(ctx: ClientContext) -> None:
    assert ctx.audit is not None
    path = ctx.audit.path
    await dispatch_request(ctx, Request(id=1, method="read_files", params={"files": ["a.txt"]}))
    path.rename(path.with_name("audit.old"))
    await dispatch_request(ctx, Request(id=2, method="read_files", params={"files": ["nope"]}))
    assert [e["status"] for e in lines(path)] == ["partial_failure"]
    assert [e["status"] for e in lines(path.with_name("audit.old"))] == ["ok"]
    path.unlink()
    await dispatch_request(ctx, Request(id=3, method="list_files", params={}))
    assert [e["method"] for e in lines(path)] == ["list_files"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_the_lines_are_those_append_jsonl_wrote(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    record = CallRecord("execute_command", "echo \u00e9 \x1b[31m", started=1700000000.12345)
    record.details["exit_code"] = 0
    audit.write(record, "ok", 12.345)
    audit.close()
    audit.write(CallRecord("undo", "checkpoint last", decision="refused"), "denied", 0.04)
    text = (tmp_path / AUDIT_FILE).read_text(encoding="ascii")
    first = text.splitlines()[0]
    assert first == (
        '{"time":1700000000.123,"method":"execute_command","summary":"echo \\u00e9 \\u001b[31m",'
        '"decision":"allowed","status":"ok","duration_ms":12.3,"exit_code":0}'
    )
    assert [e["decision"] for e in lines(tmp_path / AUDIT_FILE)] == ["allowed", "refused"]


def test_the_open_log_is_not_inherited_by_commands(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    audit.write(CallRecord("read_files", "a"), "ok", 1.0)
    fd = audit._fd
    assert fd is not None and fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    audit.close()
    assert audit._fd is None


def test_a_failed_write_opens_the_log_again_for_the_next_line(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    audit.write(CallRecord("read_files", "a"), "ok", 1.0)
    assert audit._fd is not None
    read_only = os.open(tmp_path / AUDIT_FILE, os.O_RDONLY)
    os.dup2(read_only, audit._fd)  # the same file, but the descriptor can no longer write (EBADF)
    os.close(read_only)
    with pytest.raises(OSError):
        audit.write(CallRecord("read_files", "b"), "ok", 1.0)
    assert audit._fd is None
    audit.write(CallRecord("read_files", "c"), "ok", 1.0)
    assert [e["summary"] for e in lines(tmp_path / AUDIT_FILE)] == ["a", "c"]
    audit.close()


def test_a_line_survives_the_client_being_killed_right_after(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from rpc_client.audit import AuditLog, CallRecord\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "for n in range(3):\n"
        "    log.write(CallRecord('read_files', f'f{n}'), 'ok', 0.1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=Path.cwd(), check=False)
    assert done.returncode == -signal.SIGKILL
    assert [e["summary"] for e in lines(tmp_path / AUDIT_FILE)] == ["f0", "f1", "f2"]
