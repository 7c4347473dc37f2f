"""The client's dispatcher: JSON-RPC text in, JSON-RPC text out, over a real sandbox on a temp folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rpc_client.dispatcher import ClientContext, dispatch
from rpc_client.files import FileLimits
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ClientContext]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "bin.dat").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "secret").write_text("s3cret")
    lines: list[str] = []
    with Sandbox(root) as sandbox:
        policy = CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover())
        yield ClientContext(
            sandbox=sandbox,
            policy=policy,
            limits=FileLimits(max_file_bytes=1000, max_answer_bytes=2000),
            report=lines.append,
        )


async def test_a_read_answers_the_content(ctx: ClientContext) -> None:
    result = (await call(ctx, "read_files", {"files": ["a.txt"]}))["result"]
    assert result["files"] == {"a.txt": "alpha\n"}
    assert result["sha256"] == {"a.txt": hashlib.sha256(b"alpha\n").hexdigest()}


async def test_a_partial_read_is_an_error_that_keeps_the_files_read(ctx: ClientContext) -> None:
    error = (await call(ctx, "read_files", {"files": ["a.txt", "nope", "../secret", "bin.dat"]}))["error"]
    assert error["code"] == ErrorCode.PARTIAL_FAILURE
    assert error["data"]["files"] == {"a.txt": "alpha\n"}
    assert set(error["data"]["errors"]) == {"nope", "../secret", "bin.dat"}
    assert "base64" in error["data"]["errors"]["bin.dat"]
    assert "s3cret" not in json.dumps(error)


async def test_binary_files_can_be_read_as_base64(ctx: ClientContext) -> None:
    result = (await call(ctx, "read_files", {"files": ["bin.dat"], "encoding": "base64"}))["result"]
    assert result["files"] == {"bin.dat": "//4AYmluYXJ5"}


async def test_the_answer_budget_refuses_what_does_not_fit(ctx: ClientContext) -> None:
    root = ctx.sandbox.root
    for name in ("b", "c", "d"):
        (root / name).write_text("x" * 900)
    (root / "big").write_text("x" * 1001)
    error = (await call(ctx, "read_files", {"files": ["b", "c", "d", "big"]}))["error"]
    assert set(error["data"]["files"]) == {"b", "c"}
    assert "does not fit" in error["data"]["errors"]["d"]
    assert "too large" in error["data"]["errors"]["big"] or "1000" in error["data"]["errors"]["big"]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("read_files", {"files": "a.txt"}),
        ("read_files", {}),
        ("list_files", {"recursive": "yes"}),
        ("execute_command", {"command": "ls", "timeout": -1}),
        ("write_file", {"path": "x"}),
        ("write_file", {"path": "x", "content": "y", "mode": 777}),
    ],
)
async def test_invalid_params_are_named(ctx: ClientContext, method: str, params: dict[str, Any]) -> None:
    error = (await call(ctx, method, params))["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS and error["data"]["errors"]


async def test_an_unknown_method_is_method_not_found(ctx: ClientContext) -> None:
    assert (await call(ctx, "format_disk", {}))["error"]["code"] == ErrorCode.METHOD_NOT_FOUND


async def test_a_write_then_a_listing(ctx: ClientContext) -> None:
    written = (await call(ctx, "write_file", {"path": "new/b.txt", "content": "beta"}))["result"]
    assert written == {"path": "new/b.txt", "bytes_written": 4, "created": True}
    listing = (await call(ctx, "list_files", {"path": "new"}))["result"]
    assert listing["files"] == [{"name": "b.txt", "is_dir": False, "path": "new/b.txt", "size": 4}]
    assert listing["truncated"] is False


async def test_a_refused_command_says_why_and_runs_nothing(ctx: ClientContext) -> None:
    error = (await call(ctx, "execute_command", {"command": "rm a.txt"}))["error"]
    assert error["code"] == ErrorCode.DENIED and "dangerous" in error["message"]
    assert (ctx.sandbox.root / "a.txt").exists()


async def test_a_notification_gets_no_answer(ctx: ClientContext) -> None:
    assert await dispatch(ctx, json.dumps({"jsonrpc": "2.0", "method": "list_files", "params": {}})) == ""


async def test_each_request_is_logged_in_one_line(ctx: ClientContext) -> None:
    lines: list[str] = []
    ctx.report = lines.append
    await call(ctx, "read_files", {"files": ["a.txt"]})
    await call(ctx, "read_files", {"files": ["nope"]})
    assert len(lines) == 2
    assert "read_files a.txt -> ok" in lines[0] and "-> partial_failure" in lines[1]
