"""The registry and a workspace's calls in flight, driven through a fake ``send``."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from hub.errors import HubShuttingDown, KeyInFlight, KeyUnsupported, RequestTooLarge, WorkspaceBusy
from hub.registry import AmbiguousName, CallTimeout, Registry, Workspace, WorkspaceGone
from schemas.framing import Framing
from schemas.jsonrpc import ErrorObject, ErrorResponse, Notification, Response

pytestmark = pytest.mark.anyio


class FakeSocket:
    """Collects sent frames and lets the test wait for them."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.broken = False

    async def send(self, text: str) -> None:
        if self.broken:
            raise WorkspaceGone("socket closed")
        await self.frames.put(json.loads(text))


def workspace(sock: FakeSocket, framing: Framing = Framing.JSONRPC, *, resumable: bool = False) -> Workspace:
    return Workspace(name="proj", framing=framing, send=sock.send, resumable=resumable)


async def test_answers_out_of_order_reach_their_own_callers() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    first = asyncio.create_task(ws.call("read_files", {"files": ["a"]}, timeout=5))
    second = asyncio.create_task(ws.call("read_files", {"files": ["b"]}, timeout=5))
    req_a, req_b = await sock.frames.get(), await sock.frames.get()
    ws.on_answer(Response(id=req_b["id"], result={"files": {"b": "B"}}))
    ws.on_answer(Response(id=req_a["id"], result={"files": {"a": "A"}}))
    assert (await first).result == {"files": {"a": "A"}}
    assert (await second).result == {"files": {"b": "B"}}
    assert ws.in_flight == 0


async def test_a_call_times_out_and_its_late_answer_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    with pytest.raises(CallTimeout):
        await ws.call("list_files", {}, timeout=0.01)
    request = await sock.frames.get()
    assert ws.in_flight == 0
    with caplog.at_level(logging.WARNING, logger="aihub.hub"):
        ws.on_answer(Response(id=request["id"], result={"files": []}))
    assert "unknown or expired id" in caplog.text


async def test_an_unknown_id_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    ws = workspace(FakeSocket())
    with caplog.at_level(logging.WARNING, logger="aihub.hub"):
        ws.on_answer(ErrorResponse(id=None, error=ErrorObject(code=-32700, message="parse error")))
        ws.on_answer(Response(id="nope", result={}))
    assert caplog.text.count("dropping") == 2


async def test_fail_all_fails_every_waiting_call_at_once_and_later_calls_fail_immediately() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    calls = [
        asyncio.create_task(ws.call("execute_command", {"command": "sleep 100"}, timeout=3600))
        for _ in range(3)
    ]
    for _ in calls:
        await sock.frames.get()
    ws.fail_all("client disconnected")
    for call in calls:
        with pytest.raises(WorkspaceGone):
            await call
    with pytest.raises(WorkspaceGone):
        await ws.call("list_files", {}, timeout=5)


async def test_a_send_that_fails_is_a_gone_workspace_not_a_hang() -> None:
    sock = FakeSocket()
    sock.broken = True
    ws = workspace(sock)
    with pytest.raises(WorkspaceGone):
        await ws.call("list_files", {}, timeout=5)
    assert ws.in_flight == 0


async def test_envelope_workspaces_are_sent_envelopes_with_string_ids() -> None:
    sock = FakeSocket()
    ws = workspace(sock, Framing.ENVELOPE)
    call = asyncio.create_task(ws.call("list_files", {"path": "./"}, timeout=5))
    frame = await sock.frames.get()
    assert frame == {"type": "list_files", "request_id": "1", "payload": {"path": "./"}}
    ws.on_answer(Response(id="1", result={"files": []}))
    assert (await call).result == {"files": []}


def test_the_registry_finds_by_id_or_by_a_name_only_one_workspace_has() -> None:
    registry = Registry()
    first = Workspace(name="proj", framing=Framing.JSONRPC, send=FakeSocket().send)
    second = Workspace(name="proj", framing=Framing.JSONRPC, send=FakeSocket().send)
    registry.add(first)
    assert registry.find("proj") is first
    registry.add(second)
    assert registry.find(first.id) is first
    with pytest.raises(AmbiguousName) as ambiguous:
        registry.find("proj")
    assert set(ambiguous.value.ids) == {first.id, second.id}
    registry.remove(second)
    assert registry.find("proj") is first and len(registry) == 1
    assert registry.find("other") is None


async def test_an_answer_must_carry_the_id_with_its_json_type() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    call = asyncio.create_task(ws.call("list_files", {}, timeout=5))
    request = await sock.frames.get()
    assert request["id"] == 1
    ws.on_answer(Response(id="1", result={"files": ["wrong"]}))  # a string is not the integer 1
    assert not call.done()
    ws.on_answer(Response(id=1, result={"files": []}))
    assert (await call).result == {"files": []}


async def test_the_timeout_covers_a_send_that_never_completes() -> None:
    async def stuck(text: str) -> None:
        await asyncio.Event().wait()

    ws = Workspace(name="p", framing=Framing.JSONRPC, send=stuck)
    with pytest.raises(CallTimeout):
        await ws.call("list_files", {}, timeout=0.05)
    assert ws.in_flight == 0


async def test_a_call_given_up_is_withdrawn_from_the_client() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    with pytest.raises(CallTimeout):
        await ws.call("execute_command", {"command": "sleep 9"}, timeout=0.05)
    request = await sock.frames.get()
    withdrawal = await asyncio.wait_for(sock.frames.get(), 5)
    assert withdrawal == {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request["id"]}}


async def test_notifications_reach_the_listener_of_their_call_only() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    heard: list[dict[str, object]] = []
    call = asyncio.create_task(
        ws.call("execute_command", {"command": "ls"}, timeout=5, on_event=lambda m, p: heard.append(p))
    )
    request = await sock.frames.get()
    chunk = {"id": request["id"], "stream": "stdout", "data": "a\n"}
    ws.on_notification(Notification(method="command_output_chunk", params=chunk))
    ws.on_notification(Notification(method="command_output_chunk", params={"id": 999, "data": "x"}))
    ws.on_notification(Notification(method="command_output_chunk", params={"id": True}))
    ws.on_answer(Response(id=request["id"], result={"stdout": "a\n", "stderr": "", "exit_code": 0}))
    await call
    assert heard == [chunk]
    assert sock.frames.empty()  # answered: nothing withdrawn


async def test_calls_past_the_in_flight_limit_are_refused_at_once_not_queued() -> None:
    sock = FakeSocket()
    ws = Workspace(name="proj", framing=Framing.JSONRPC, send=sock.send, max_in_flight=2)
    first = asyncio.create_task(ws.call("read_files", {"files": ["a"]}, timeout=5))
    second = asyncio.create_task(ws.call("read_files", {"files": ["b"]}, timeout=5))
    req_a, _ = await sock.frames.get(), await sock.frames.get()
    with pytest.raises(WorkspaceBusy, match="2 calls in flight"):
        await ws.call("read_files", {"files": ["c"]}, timeout=5)
    assert sock.frames.empty()  # the refused call never reached the client
    ws.on_answer(Response(id=req_a["id"], result={"files": {}}))
    await first
    third = asyncio.create_task(ws.call("read_files", {"files": ["c"]}, timeout=5))  # a slot is free again
    req_c = await sock.frames.get()
    ws.fail_all("done")
    for task in (second, third):
        with pytest.raises(WorkspaceGone):
            await task
    assert req_c["params"] == {"files": ["c"]}


async def test_a_detached_workspace_keeps_its_calls_and_replays_them_when_its_client_is_back() -> None:
    old, new = FakeSocket(), FakeSocket()
    ws = Workspace(name="proj", framing=Framing.JSONRPC, send=old.send, resumable=True)
    call = asyncio.create_task(ws.call("execute_command", {"command": "make"}, timeout=5))
    sent = await old.frames.get()
    expired: list[bool] = []
    ws.detach(grace=5, expire=lambda: expired.append(True))
    with pytest.raises(WorkspaceGone, match="reconnecting"):
        await ws.call("read_files", {"files": ["a"]}, timeout=5)  # new calls fail at once
    await ws.reattach(new.send, None)
    await ws.replay()
    assert await new.frames.get() == sent  # the same request, the same id: the client dedups it
    ws.on_answer(Response(id=sent["id"], result={"exit_code": 0}))
    assert (await call).result == {"exit_code": 0}
    await asyncio.sleep(0)
    assert not expired and ws.attached


async def test_a_keyed_call_carries_its_key_as_id_and_a_second_one_with_it_is_refused() -> None:
    sock = FakeSocket()
    ws = workspace(sock, resumable=True)
    first = asyncio.create_task(ws.call("execute_command", {"command": "make"}, 5, idempotency_key="build-1"))
    request = await sock.frames.get()
    assert request["id"] == "idem:build-1"
    with pytest.raises(KeyInFlight, match="build-1"):
        await ws.call("execute_command", {"command": "make"}, 5, idempotency_key="build-1")
    other = asyncio.create_task(ws.call("execute_command", {"command": "make"}, 5, idempotency_key="build-2"))
    assert (await sock.frames.get())["id"] == "idem:build-2"
    ws.on_answer(Response(id="idem:build-1", result={"stdout": "ok"}))
    ws.on_answer(Response(id="idem:build-2", result={"stdout": "ok 2"}))
    assert (await first).result == {"stdout": "ok"} and (await other).result == {"stdout": "ok 2"}
    again = asyncio.create_task(ws.call("execute_command", {"command": "make"}, 5, idempotency_key="build-1"))
    assert (await sock.frames.get())["id"] == "idem:build-1"  # asked again: the client answers from its cache
    ws.on_answer(Response(id="idem:build-1", result={"stdout": "ok"}))
    assert (await again).result == {"stdout": "ok"}


async def test_a_keyed_call_given_up_is_not_withdrawn_so_a_retry_can_collect_it() -> None:
    sock = FakeSocket()
    ws = workspace(sock, resumable=True)
    with pytest.raises(CallTimeout):
        await ws.call("execute_command", {"command": "sleep 9"}, timeout=0.05, idempotency_key="k")
    assert (await sock.frames.get())["id"] == "idem:k"
    await asyncio.sleep(0.05)
    assert sock.frames.empty()  # no $/cancelRequest: the command keeps running on the client
    call = asyncio.create_task(ws.call("read_files", {"files": ["a"]}, 5, idempotency_key="k2"))
    await sock.frames.get()
    call.cancel()  # a caller that hangs up
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.05)
    assert sock.frames.empty()


async def test_a_drain_lets_calls_in_flight_finish_and_refuses_new_ones() -> None:
    sock = FakeSocket()
    registry = Registry()
    ws = workspace(sock)
    registry.add(ws)
    running = asyncio.create_task(ws.call("read_files", {"files": ["a"]}, timeout=5))
    request = await sock.frames.get()
    drain = asyncio.create_task(registry.drain(5, "the hub is shutting down"))
    await asyncio.sleep(0.1)
    with pytest.raises(HubShuttingDown, match="shutting down"):
        await ws.call("read_files", {"files": ["b"]}, timeout=5)
    assert not drain.done()  # it waits for the call in flight
    ws.on_answer(Response(id=request["id"], result={"files": {"a": "A"}}))
    assert (await running).result == {"files": {"a": "A"}}
    assert await asyncio.wait_for(drain, 5) == 0
    assert sock.frames.empty()  # nothing to withdraw


async def test_a_drain_that_times_out_withdraws_unkeyed_work_and_answers_every_caller() -> None:
    sock = FakeSocket()
    registry = Registry()
    ws = workspace(sock, resumable=True)
    registry.add(ws)
    plain = asyncio.create_task(ws.call("execute_command", {"command": "sleep 60"}, timeout=60))
    keyed = asyncio.create_task(
        ws.call("execute_command", {"command": "sleep 60"}, timeout=60, idempotency_key="k")
    )
    sent = [await sock.frames.get(), await sock.frames.get()]
    assert await registry.drain(0.1, "the hub is shutting down") == 2
    for call in (plain, keyed):
        with pytest.raises(HubShuttingDown):
            await call
    withdrawn = [frame["params"]["id"] for frame in (await sock.frames.get(),)]  # type: ignore[index]
    assert withdrawn == [next(f["id"] for f in sent if f["id"] != "idem:k")]
    await asyncio.sleep(0.05)
    assert sock.frames.empty()  # the keyed command runs on, for a retry after the restart


async def test_a_second_ctrl_c_ends_the_drain_at_once() -> None:
    sock = FakeSocket()
    registry = Registry()
    ws = workspace(sock)
    registry.add(ws)
    call = asyncio.create_task(ws.call("execute_command", {"command": "sleep 60"}, timeout=60))
    await sock.frames.get()
    stop = False
    drain = asyncio.create_task(registry.drain(60, "stopping", lambda: stop))
    await asyncio.sleep(0.1)
    stop = True
    assert await asyncio.wait_for(drain, 5) == 1
    with pytest.raises(HubShuttingDown):
        await call


async def test_a_request_larger_than_a_client_accepts_is_refused_before_it_is_sent() -> None:
    sock = FakeSocket()
    ws = workspace(sock)
    # 8 M control characters: 8 MiB of text, 48 MiB once JSON escapes each as \u00XX.
    content = "\x01" * (8 * 1024 * 1024)
    with pytest.raises(RequestTooLarge, match="over the 50,331,648 a client accepts"):
        await ws.call("edit_file", {"path": "a", "old_string": content, "new_string": content}, timeout=5)
    assert sock.frames.empty() and ws.in_flight == 0
    await asyncio.sleep(0.01)
    assert sock.frames.empty()  # nothing to withdraw either


async def test_a_drain_gives_up_a_detached_workspace_at_once_and_its_callers_get_503_not_502() -> None:
    # A client whose connection was lost just before the hub stops cannot come back during the
    # drain (the listener is closed; a reconnect would be told 1012): waiting for its calls only
    # holds the shutdown, and its resume grace ending meanwhile told the callers 502 ("did not come
    # back") instead of 503, which a keyed caller should retry.
    sock = FakeSocket()
    registry = Registry()
    ws = Workspace(name="proj", framing=Framing.JSONRPC, send=sock.send, resumable=True)
    registry.add(ws)
    calls = [
        asyncio.create_task(ws.call("execute_command", {"command": "make"}, timeout=60, idempotency_key="k")),
        asyncio.create_task(ws.call("execute_command", {"command": "make"}, timeout=60)),
    ]
    await sock.frames.get()
    await sock.frames.get()
    sock.broken = True

    def expire() -> None:  # as the WebSocket route's
        registry.remove(ws)
        ws.fail_all("the workspace's client did not come back")

    ws.detach(grace=0.3, expire=expire)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(registry.drain(3, "the hub is shutting down"), 10) == 2
    assert loop.time() - started < 1
    for call in calls:
        with pytest.raises(HubShuttingDown):
            await call
    await asyncio.sleep(0.4)  # the grace timer no longer fires
    assert registry.get(ws.id) is ws


async def test_a_key_is_refused_for_a_client_that_cannot_honour_it() -> None:
    sock = FakeSocket()
    for ws in (workspace(sock, Framing.ENVELOPE, resumable=False), workspace(sock, resumable=False)):
        with pytest.raises(KeyUnsupported, match="would run the work again"):
            await ws.call("execute_command", {"command": "make"}, 5, idempotency_key="k")
    assert sock.frames.empty()
