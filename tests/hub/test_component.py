"""WorkspaceHub as a component: the typed Python API, the host's auth hooks, the lifespan.

The Python API is driven through a fake client (a ``send`` that answers);
auth and lifespan through a host app of the test's own, in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Header, HTTPException, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import hub as hub_package
from hub import (
    AmbiguousName,
    CallTimeout,
    HubSettings,
    InvalidParams,
    KeyUnsupported,
    ToolError,
    UnknownTool,
    WorkspaceError,
    WorkspaceGone,
    WorkspaceHub,
    WorkspaceNotFound,
)
from hub.app import create_app
from hub.component import OneLineFrameErrors
from hub.registry import Workspace
from schemas.errors import ErrorCode
from schemas.framing import Framing
from schemas.jsonrpc import ErrorObject, ErrorResponse, Notification, Response
from schemas.protocol import OUTPUT_CHUNK
from schemas.tools import TOOLS, ExecuteCommandResult, ReadFilesResult

API_KEY = "host-user-key"
CLIENT_SECRET = "host-client-secret"
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}})

Answer = Callable[[dict[str, Any]], Response | ErrorResponse | None]


class FakeClient:
    """A connected workspace whose client answers each request with ``answer(request)``."""

    def __init__(
        self, hub: WorkspaceHub, answer: Answer | None, name: str = "proj", tools: list[str] | None = None
    ) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.workspace = Workspace(name=name, framing=Framing.JSONRPC, send=self.send, tools=tools)
        hub.registry.add(self.workspace)

    async def send(self, text: str) -> None:
        request = json.loads(text)
        if "id" not in request:  # a notification ($/cancelRequest)
            return
        self.requests.append(request)
        reply = self.answer(request) if self.answer is not None else None
        if reply is not None:
            asyncio.get_running_loop().call_soon(self.workspace.on_answer, reply)


def reads(request: dict[str, Any]) -> Response:
    files = request["params"]["files"]
    return Response(id=request["id"], result={"files": {f: f"content of {f}" for f in files}})


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[WorkspaceHub]:
    workspaces = WorkspaceHub(HubSettings(home=tmp_path, token="t", call_timeout=2))
    yield workspaces
    workspaces.conversations.close()


# --- the typed Python API ---------------------------------------------------


@pytest.mark.anyio
async def test_call_returns_the_tools_result_model_and_sends_only_the_params_given(hub: WorkspaceHub) -> None:
    client = FakeClient(hub, reads)
    result = await hub.call("proj", "read_files", files=["a.py"])
    assert isinstance(result, ReadFilesResult) and result.files == {"a.py": "content of a.py"}
    assert client.requests[0]["method"] == "read_files"
    assert client.requests[0]["params"] == {"files": ["a.py"]}
    by_id = await hub.call(client.workspace.id, "read_files", files=["b.py"])
    assert by_id.files == {"b.py": "content of b.py"}


@pytest.mark.anyio
async def test_timeout_is_the_commands_own_and_call_timeout_is_the_wait(hub: WorkspaceHub) -> None:
    def run(request: dict[str, Any]) -> Response:
        request_id = request["id"]
        client.workspace.on_notification(
            Notification(method=OUTPUT_CHUNK, params={"id": request_id, "stream": "stdout", "data": "hi\n"})
        )
        return Response(id=request_id, result={"stdout": "hi\n", "stderr": "", "exit_code": 0})

    client = FakeClient(hub, run)
    printed: list[tuple[str, str]] = []
    result = await hub.call(
        "proj", "execute_command", command="echo hi", timeout=5, on_output=lambda s, t: printed.append((s, t))
    )
    assert isinstance(result, ExecuteCommandResult) and result.exit_code == 0
    assert client.requests[0]["params"] == {"command": "echo hi", "timeout": 5}
    assert printed == [("stdout", "hi\n")]

    client.answer = None  # silent from now on
    with pytest.raises(CallTimeout):
        await hub.call("proj", "execute_command", command="sleep 60", timeout=60, call_timeout=0.05)


@pytest.mark.anyio
async def test_an_error_answer_is_a_tool_error_that_keeps_the_partial_result(hub: WorkspaceHub) -> None:
    def partly(request: dict[str, Any]) -> ErrorResponse:
        error = ErrorObject(
            code=ErrorCode.PARTIAL_FAILURE,
            message="could not read 1 of 2 file(s): '../x' leaves the workspace root",
            data={"files": {"a.py": "A"}, "errors": {"../x": "leaves the workspace root"}},
        )
        return ErrorResponse(id=request["id"], error=error)

    FakeClient(hub, partly)
    with pytest.raises(ToolError) as failed:
        await hub.call("proj", "read_files", files=["a.py", "../x"])
    assert failed.value.code == ErrorCode.PARTIAL_FAILURE and failed.value.name == "partial_failure"
    assert failed.value.data["files"] == {"a.py": "A"} and "../x" in failed.value.message


@pytest.mark.anyio
async def test_a_result_that_does_not_match_the_tools_model_is_a_tool_error(hub: WorkspaceHub) -> None:
    FakeClient(hub, lambda request: Response(id=request["id"], result={"files": "not a dict"}))
    with pytest.raises(ToolError) as failed:
        await hub.call("proj", "read_files", files=["a.py"])
    assert failed.value.code == ErrorCode.INTERNAL_ERROR and "files" in failed.value.message
    assert failed.value.data == {"result": {"files": "not a dict"}}


@pytest.mark.anyio
async def test_every_failure_is_a_typed_workspace_error(hub: WorkspaceHub) -> None:
    client = FakeClient(hub, None)
    with pytest.raises(WorkspaceNotFound):
        await hub.call("nowhere", "read_files", files=["a"])
    with pytest.raises(UnknownTool):
        await hub.call("proj", "rm_rf")
    with pytest.raises(InvalidParams) as invalid:
        await hub.call("proj", "read_files", files="a.py")
    assert invalid.value.errors[0]["loc"] == ["files"] and "files" in str(invalid.value)

    pending = asyncio.create_task(hub.call("proj", "list_files"))
    while not client.requests:
        await asyncio.sleep(0)
    client.workspace.fail_all("the client went away")
    with pytest.raises(WorkspaceGone):
        await pending

    FakeClient(hub, None, name="twin")
    FakeClient(hub, None, name="twin")
    with pytest.raises(AmbiguousName):
        await hub.call("twin", "list_files")
    for error in (WorkspaceNotFound, AmbiguousName, UnknownTool, InvalidParams, ToolError, CallTimeout):
        assert issubclass(error, WorkspaceError)


@pytest.mark.anyio
async def test_an_idempotency_key_goes_on_the_wire_as_the_requests_id(hub: WorkspaceHub) -> None:
    client = FakeClient(hub, lambda request: Response(id=request["id"], result={"files": {"a": "A"}}))
    with pytest.raises(KeyUnsupported):  # a client that does not resume sessions cannot honour a key
        await hub.call("proj", "read_files", files=["a"], idempotency_key="report-1")
    client.workspace.resumable = True
    result = await hub.call("proj", "read_files", files=["a"], idempotency_key="report-1")
    assert result.files == {"a": "A"} and client.requests[0]["id"] == "idem:report-1"
    for bad in ("", "two words", "k" * 129, "caf\u00e9"):
        with pytest.raises(InvalidParams) as invalid:
            await hub.call("proj", "read_files", files=["a"], idempotency_key=bad)
        assert invalid.value.errors[0]["loc"] == ["idempotency_key"]
    assert len(client.requests) == 1


def test_the_typed_overloads_return_each_tools_own_result_model() -> None:
    overloads = typing.get_overloads(WorkspaceHub.call)
    named = 0
    for overload in overloads:
        hints = typing.get_type_hints(overload)
        if typing.get_origin(hints["tool"]) is typing.Literal:
            (tool,) = typing.get_args(hints["tool"])
            assert hints["return"] is TOOLS[tool].result, tool
            named += 1
    assert named >= 4 and len(overloads) == named + 1


@pytest.mark.anyio
async def test_tools_for_llm_lists_the_served_tools_and_answers_the_model_in_text(tmp_path: Path) -> None:
    hub = WorkspaceHub(HubSettings(home=tmp_path, token="t", max_tool_result_chars=500))
    try:
        FakeClient(hub, reads, tools=["read_files", "list_files"])
        tools, execute = hub.tools_for_llm("proj")
        assert [t["function"]["name"] for t in tools] == ["list_files", "read_files"]

        answer = json.loads(await execute("read_files", '{"files": ["a.py"]}'))
        assert answer == {"status": "success", "files": {"a.py": "content of a.py"}}
        long = await execute("read_files", json.dumps({"files": [f"f{i}" * 20 for i in range(40)]}))
        assert len(long) < 900 and "cut" in long

        assert "not valid JSON" in await execute("read_files", "{")
        assert "files" in json.loads(await execute("read_files", '{"files": 3}'))["error_message"]
        refused = json.loads(await execute("write_file", '{"path": "a", "content": ""}'))
        assert refused["status"] == "error" and "list_files, read_files" in refused["error_message"]

        hub.registry.remove(hub.registry.all()[0])
        gone = json.loads(await execute("read_files", '{"files": ["a.py"]}'))
        assert gone["status"] == "error" and "no connected workspace 'proj'" in gone["error_message"]
        with pytest.raises(WorkspaceNotFound):
            hub.tools_for_llm("proj")
    finally:
        hub.conversations.close()


# --- the host's auth ----------------------------------------------------------


async def api_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
    if x_api_key != API_KEY:
        raise HTTPException(401, "missing or wrong X-Api-Key")


def secret_check(ws: WebSocket) -> bool:
    return ws.headers.get("authorization") == f"Bearer {CLIENT_SECRET}"


async def async_secret_check(ws: WebSocket) -> bool:
    await asyncio.sleep(0)
    return secret_check(ws)


def host_app(hub: WorkspaceHub) -> FastAPI:
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router, prefix="/ai")
    return app


def test_without_a_token_the_host_must_give_both_checks(tmp_path: Path) -> None:
    settings = HubSettings(home=tmp_path)
    for hooks in ({}, {"api_auth": api_key}, {"authorize_client": secret_check}):
        with pytest.raises(ValueError, match="authorize_client and api_auth"):
            WorkspaceHub(settings, **hooks)
    WorkspaceHub(settings, authorize_client=secret_check, api_auth=api_key).conversations.close()


@pytest.mark.parametrize("check", [secret_check, async_secret_check], ids=["sync", "async"])
def test_the_hosts_checks_replace_the_token_on_rest_and_the_websocket(
    tmp_path: Path, check: Callable[[WebSocket], Any]
) -> None:
    hub = WorkspaceHub(HubSettings(home=tmp_path), authorize_client=check, api_auth=api_key)
    with TestClient(host_app(hub)) as client:
        for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": f"Bearer {CLIENT_SECRET}"}):
            assert client.get("/ai/api/workspaces", headers=headers).status_code == 401
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": API_KEY}):
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                client.websocket_connect("/ai/ws/workspace", headers=headers),
            ):
                pass
            assert refused.value.code == 1008
        with client.websocket_connect(
            "/ai/ws/workspace", headers={"Authorization": f"Bearer {CLIENT_SECRET}"}
        ) as ws:
            ws.send_text(INIT)
            workspace_id = ws.receive_json()["result"]["workspace_id"]
            listed = client.get("/ai/api/workspaces", headers={"X-Api-Key": API_KEY}).json()
            assert [w["id"] for w in listed] == [workspace_id]


def test_a_check_that_raises_refuses_the_client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(ws: WebSocket) -> bool:
        raise RuntimeError("the host's user store is down")

    hub = WorkspaceHub(HubSettings(home=tmp_path), authorize_client=broken, api_auth=api_key)
    with TestClient(host_app(hub)) as client:
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ai/ws/workspace", headers={"Authorization": "Bearer x"}),
        ):
            pass
        assert refused.value.code == 1008 and "authorize_client failed" in caplog.text


def test_with_one_host_check_the_token_still_guards_the_other_side(tmp_path: Path) -> None:
    hub = WorkspaceHub(HubSettings(home=tmp_path, token="hub-token"), api_auth=api_key)
    with TestClient(host_app(hub)) as client:
        assert client.get("/ai/api/tools", headers={"Authorization": "Bearer hub-token"}).status_code == 401
        assert client.get("/ai/api/tools", headers={"X-Api-Key": API_KEY}).status_code == 200
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/ai/ws/workspace", headers={"X-Api-Key": API_KEY}),
        ):
            pass
        with client.websocket_connect(
            "/ai/ws/workspace", headers={"Authorization": "Bearer hub-token"}
        ) as ws:
            ws.send_text(INIT)
            assert ws.receive_json()["result"]["workspace_id"]


# --- the lifespan ---------------------------------------------------------------


def test_aclose_closes_each_client_with_1012_fails_its_calls_and_turns_new_ones_away(
    tmp_path: Path,
) -> None:
    hub = WorkspaceHub(HubSettings(home=tmp_path, token="t"))
    auth = {"Authorization": "Bearer t"}
    with TestClient(host_app(hub)) as client:
        with client.websocket_connect("/ai/ws/workspace", headers=auth) as ws:
            ws.send_text(INIT)
            ws.receive_json()
            portal = client.portal
            assert portal is not None  # the TestClient's event loop, where the app runs
            pending = portal.start_task_soon(partial(hub.call, "p", "list_files"))
            assert ws.receive_json()["method"] == "list_files"
            portal.call(hub.aclose)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 1012 and "shutting down" in closed.value.reason
            with pytest.raises(WorkspaceGone):
                pending.result(5)
            assert hub.connected() == []
        with client.websocket_connect("/ai/ws/workspace", headers=auth) as late:
            late.send_text(INIT)
            with pytest.raises(WebSocketDisconnect) as later:
                late.receive_text()
            assert later.value.code == 1012  # not a refusal: aihub-client tries again
        with pytest.raises(sqlite3.ProgrammingError):
            hub.conversations.recent()


class FakeModel:
    name = "fake"

    def __init__(self) -> None:
        self.closed = False

    async def stream(self, messages: Any, tools: Any) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield

    async def aclose(self) -> None:
        self.closed = True


def test_the_lifespan_composes_with_the_hosts_and_closes_only_the_model_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = FakeModel()
    monkeypatch.setattr("hub.component.make_model", lambda config, **kw: made)
    settings = HubSettings(home=tmp_path, token="t", llm_base_url="http://127.0.0.1:1/v1", llm_model="m")
    hub = WorkspaceHub(settings)
    given = FakeModel()
    other = WorkspaceHub(HubSettings(home=tmp_path / "other", token="t"), model=given)
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host up")
        async with hub.lifespan(app), other.lifespan(app):
            yield
        events.append(f"host down; model closed: {made.closed}")

    app = FastAPI(lifespan=lifespan)
    app.include_router(hub.router, prefix="/ai")
    with TestClient(app) as client:
        assert client.get("/ai/api/tools", headers={"Authorization": "Bearer t"}).status_code == 200
    assert events == ["host up", "host down; model closed: True"]
    assert made.closed and not given.closed


def test_create_app_runs_the_components_lifespan(tmp_path: Path) -> None:
    app = create_app(HubSettings(home=tmp_path, token="t"))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok", "workspaces": 0}
    with pytest.raises(sqlite3.ProgrammingError):
        app.state.hub.conversations.recent()


def test_the_package_exports_the_component_and_its_errors() -> None:
    assert hub_package.WorkspaceHub is WorkspaceHub
    for name in hub_package.__all__:
        assert getattr(hub_package, name) is not None


def test_uvicorns_traceback_for_a_frame_that_is_not_utf8_becomes_one_warning_line(tmp_path: Path) -> None:
    WorkspaceHub(HubSettings(home=tmp_path, token="t"))  # installs the filter (once)
    WorkspaceHub(HubSettings(home=tmp_path, token="t"))
    logger = logging.getLogger("uvicorn.error")
    assert sum(isinstance(f, OneLineFrameErrors) for f in logger.filters) == 1
    try:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    except UnicodeDecodeError:
        record = logger.makeRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, OneLineFrameErrors.MESSAGE, (), sys.exc_info()
        )
    assert logger.filter(record)
    assert record.exc_info is None and record.levelno == logging.WARNING and "1007" in record.getMessage()
