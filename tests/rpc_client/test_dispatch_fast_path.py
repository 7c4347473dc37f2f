"""The dispatcher's own call of a known method answers exactly as jsonrpcserver's dispatch did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc_client import dispatcher
from rpc_client.dispatcher import METHODS, ClientContext, _through_jsonrpcserver, dispatch_request
from rpc_client.files import FileLimits
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode
from schemas.jsonrpc import Request
from tests.rpc_client.helpers import NoApprover

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ClientContext]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "b.bin").write_bytes(b"\xff\x00")
    (root / ".env").write_text("TOKEN=hidden\n")
    with Sandbox(root) as sandbox:
        yield ClientContext(
            sandbox=sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=True, approver=NoApprover()),
            limits=FileLimits(max_file_bytes=1000, max_answer_bytes=2000),
            report=lambda line: None,
            inline_reads=True,
        )


#: Requests that change nothing (the client is read-only), so each can be served twice.
REQUESTS: list[tuple[str, dict[str, Any] | None]] = [
    ("read_files", {"files": ["a.txt"]}),
    ("read_files", {"files": ["a.txt", "nope", ".env", "b.bin", "../x"]}),
    ("read_files", {"files": ["a.txt"], "offset": 1, "limit": 1}),
    ("read_files", {"files": "a.txt"}),
    ("read_files", {}),
    ("read_files", None),
    ("read_files", {"files": ["a.txt"], "extra": 1}),
    ("list_files", {"ctx": 1}),
    ("list_files", {"path": "./", "recursive": True}),
    ("list_files", None),
    ("search_files", {"pattern": "alpha"}),
    ("search_files", {"pattern": "(unclosed"}),
    ("write_file", {"path": "c.txt", "content": "x"}),
    ("edit_file", {"path": "a.txt", "old_string": "alpha", "new_string": "beta"}),
    ("execute_command", {"command": "rm -rf /"}),
    ("undo", {}),
    ("read_output", {"output_id": "0" * 32}),
    ("format_disk", {}),
    ("__init__", None),
    ("", {}),
]


@pytest.mark.parametrize(("method", "params"), REQUESTS)
@pytest.mark.parametrize("request_id", [1, "abc", 0, -(2**70)])
async def test_known_and_unknown_methods_answer_as_jsonrpcserver_did(
    ctx: ClientContext, method: str, params: dict[str, Any] | None, request_id: int | str
) -> None:
    request = Request.model_construct(id=request_id, method=method, params=params)
    ours = await dispatch_request(ctx, request)
    reference = await _through_jsonrpcserver(ctx, request)
    assert json.loads(ours) == json.loads(reference)
    assert list(json.loads(ours)) == list(json.loads(reference))  # the members in the same order


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(sorted(METHODS)),
    params=st.dictionaries(
        st.sampled_from(["files", "path", "pattern", "command", "offset", "limit", "x", "ctx"]),
        st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3),
        max_size=3,
    ),
)
async def test_any_params_answer_as_jsonrpcserver_did(
    ctx: ClientContext, method: str, params: dict[str, Any]
) -> None:
    request = Request.model_construct(id=7, method=method, params=params)
    assert json.loads(await dispatch_request(ctx, request)) == json.loads(
        await _through_jsonrpcserver(ctx, request)
    )


async def test_a_method_that_fails_unexpectedly_answers_internal_error_as_jsonrpcserver_did(
    ctx: ClientContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: ClientContext, /, **params: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(METHODS, "read_files", broken)
    request = Request.model_construct(id=3, method="read_files", params={})
    ours = json.loads(await dispatch_request(ctx, request))
    assert ours == json.loads(await _through_jsonrpcserver(ctx, request))
    assert ours["error"] == {"code": ErrorCode.INTERNAL_ERROR, "message": "Internal error", "data": "boom"}


async def test_the_inline_limits_are_computed_once(ctx: ClientContext) -> None:
    first = dispatcher._inline_limits(ctx.limits)
    assert first is dispatcher._inline_limits(FileLimits(max_file_bytes=1000, max_answer_bytes=2000))
    assert first.max_file_bytes == 1000
    assert dispatcher._inline_limits(FileLimits()).max_file_bytes == dispatcher.INLINE_MAX_BYTES


@given(text=st.text(max_size=30) | st.sampled_from(["a.py", "é/ü.txt", "\x1b[31m", "a\nb", "\u202e", ""]))
def test_a_summary_shows_paths_as_printable_does(text: str) -> None:
    from rpc_client.terminal import printable

    assert dispatcher._shown(text) == printable(text)
