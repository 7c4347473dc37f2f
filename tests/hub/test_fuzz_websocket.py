"""Fuzzing the hub's WebSocket: no frame, before or after the handshake, crashes it or leaks a task.

The hub runs for real (``create_app`` on uvicorn in a thread, tests/fuzz_support.py) and the
test is its client, speaking bytes-level WebSocket with ``websockets``: text frames of junk JSON
(``NaN``, ``1e400``, 10,000-digit integers, lone surrogate escapes, nesting too deep, wrong types
in every member, ids of every JSON type), binary frames, and text frames that are not UTF-8.

Properties, for every frame:

* the hub answers it as docs/protocol.md says (-32700, -32600, -32601, -32602, with the id it
  could read, in the connection's framing), or drops it (notifications, answers to nothing):
  exactly one answer or none, and an answer is never answered;
* nothing is logged at ERROR (an exception in the app, a task's lost exception), the
  connection is not dropped (1011), and when it ends no task and no workspace is left behind;
* after any run of junk the same connection still serves a real ``Workspace.call``.

Which frames get which answer is judged by ``schemas.framing.decode_frame`` (the decoder both
sides use, fuzzed on its own at the top of this file).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from schemas.envelope import response_type
from schemas.errors import ErrorCode
from schemas.framing import Framing, decode_frame, decode_value, detect_framing, dump_json, load_json
from schemas.jsonrpc import ErrorResponse, Malformed, Request, Response, to_wire
from schemas.protocol import OUTPUT_CHUNK
from schemas.tools import InitializeParams
from tests.fuzz_support import (
    AUTH,
    Frame,
    ThreadedHub,
    any_ids,
    bad_utf8_frames,
    binary_frames,
    envelope_shapes,
    examples,
    json_values,
    jsonrpc_shapes,
    junk,
    junk_params,
    junk_texts,
    raw_tokens,
    text_frames,
    to_text,
    watching_errors,
)

FUZZ = settings(
    max_examples=examples(100), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
#: The answers a client's junk may get from the hub.
JUNK_CODES = {
    ErrorCode.PARSE_ERROR,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.METHOD_NOT_FOUND,
    ErrorCode.INVALID_PARAMS,
}
RECV_S = 5.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedHub]:
    threaded = ThreadedHub(
        tmp_path_factory.mktemp("fuzz-hub"),
        handshake_timeout=3.0,
        call_timeout=5.0,
        max_frame_bytes=1024 * 1024,
    ).start()
    yield threaded
    threaded.stop()


@contextmanager
def connected(hub: ThreadedHub) -> Iterator[ClientConnection]:
    with connect(
        hub.ws_url,
        additional_headers=AUTH,
        max_size=None,
        compression=None,
        proxy=None,
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        yield ws


def send(ws: ClientConnection, frame: Frame) -> None:
    if frame.kind == "text":
        ws.send(frame.data, text=True)
    elif frame.kind == "binary":
        ws.send(frame.data, text=False)
    else:  # bytes that are not UTF-8, in a text frame
        ws.send(frame.data, text=True)


def _not_json(name: str) -> Any:
    raise AssertionError(f"the hub wrote {name}, which is not JSON")


def strict_json(text: str | bytes) -> Any:
    """The hub's frame as JSON; NaN and Infinity fail (the hub must only write JSON)."""
    assert isinstance(text, str), "the hub sends text frames only"
    text.encode("utf-8")  # no lone surrogate
    return json.loads(text, parse_constant=_not_json)


def same_id(a: object, b: object) -> bool:
    """Ids are equal with their JSON type: "1" is not 1."""
    return type(a) is type(b) and a == b


# --- the frames of a framing ------------------------------------------------------------


def initialize_frame(framing: Framing, name: str = "fuzz", *, resume: bool = False) -> str:
    if framing is Framing.JSONRPC:
        params = {"workspace": name, **({"resume": True} if resume else {})}
        return dump_json({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    return dump_json({"type": "initialize", "request_id": "0", "payload": {"workspace": name}})


def barrier_frame(framing: Framing, n: int) -> str:
    """A request the hub answers -32601: every answer before its answer belongs to frames sent before it."""
    if framing is Framing.JSONRPC:
        return dump_json({"jsonrpc": "2.0", "id": f"barrier-{n}", "method": "$barrier"})
    return dump_json({"type": "$barrier", "request_id": f"barrier-{n}", "payload": {}})


def error_of(value: Any, framing: Framing) -> tuple[int, Any, str | None]:
    """(code, id, envelope type) of an error answer the hub sent, checking its shape on the way."""
    assert isinstance(value, dict), value
    if framing is Framing.JSONRPC:
        assert set(value) == {"jsonrpc", "id", "error"} and value["jsonrpc"] == "2.0", value
        error = value["error"]
        assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, value
        assert isinstance(error["message"], str) and error["message"], value
        assert isinstance(error["code"], int) and not isinstance(error["code"], bool), value
        assert value["id"] is None or (
            isinstance(value["id"], int | str) and not isinstance(value["id"], bool)
        )
        return error["code"], value["id"], None
    assert set(value) <= {"type", "request_id", "payload"} and isinstance(value["type"], str), value
    payload = value["payload"]
    assert payload["status"] == "error" and isinstance(payload["error_message"], str), value
    assert isinstance(payload["error_code"], int), value
    return payload["error_code"], value.get("request_id"), value["type"]


def read_until_barrier(ws: ClientConnection, framing: Framing, n: int) -> list[Any]:
    """The frames the hub sent before the barrier's answer."""
    before: list[Any] = []
    while True:
        value = strict_json(ws.recv(timeout=RECV_S))
        answer_id = value.get("id") if framing is Framing.JSONRPC else value.get("request_id")
        if answer_id == f"barrier-{n}":
            assert error_of(value, framing)[0] == ErrorCode.METHOD_NOT_FOUND
            return before
        before.append(value)


def expected_answer(frame: Frame, framing: Framing) -> tuple[int, Any, str | None] | None:
    """What the hub answers ``frame`` on a connection with no call in flight (None: nothing)."""
    if frame.kind == "binary":
        return (ErrorCode.INVALID_REQUEST, None, "error")
    assert isinstance(frame.data, str)
    message = decode_frame(frame.data, framing)
    if isinstance(message, Malformed):
        return (message.code, message.id, "error")
    if isinstance(message, Request):
        return (ErrorCode.METHOD_NOT_FOUND, message.id, response_type(message.method))
    return None  # a notification, or an answer to nothing: dropped


def handshake(ws: ClientConnection, framing: Framing, *, resume: bool = False) -> str:
    ws.send(initialize_frame(framing, resume=resume))
    answer = strict_json(ws.recv(timeout=RECV_S))
    if framing is Framing.JSONRPC:
        assert answer["id"] == 0, answer
        workspace_id: str = answer["result"]["workspace_id"]
    else:
        assert answer["type"] == "initialize_response" and answer["payload"]["status"] == "success", answer
        workspace_id = answer["payload"]["workspace_id"]
    return workspace_id


def closed_by_hub(ws: ClientConnection) -> tuple[list[Any], int | None, str]:
    """Every frame until the hub closes the connection, then its close code and reason."""
    frames: list[Any] = []
    try:
        while True:
            frames.append(strict_json(ws.recv(timeout=RECV_S)))
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return frames, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


def a_real_call(hub: ThreadedHub, ws: ClientConnection, workspace_id: str, framing: Framing) -> None:
    """The hub calls list_files; the test, as the client, answers it (with a wrong-typed id, a duplicate)."""
    workspace = hub.hub.registry.find(workspace_id)
    assert workspace is not None
    pending = asyncio.run_coroutine_threadsafe(
        workspace.call("list_files", {"path": "./"}, timeout=5.0), hub.loop
    )
    request = decode_frame(ws.recv(timeout=RECV_S), framing)
    assert isinstance(request, Request) and request.method == "list_files", request
    result = {"files": [{"name": "a", "is_dir": False, "path": "a", "size": 1}], "truncated": False}
    other_type_id = str(request.id) if isinstance(request.id, int) else int(request.id)
    good = Response(id=request.id, result=result)
    for answer in (Response(id=other_type_id, result={"files": []}), good, good):  # only `good` answers
        if framing is Framing.JSONRPC:
            ws.send(dump_json(to_wire(answer)))
        else:
            payload = {"status": "success", **answer.result}
            ws.send(dump_json({"type": "list_files_response", "request_id": answer.id, "payload": payload}))
    answered = pending.result(RECV_S)
    assert isinstance(answered, Response) and answered.result == result
    ws.send(barrier_frame(framing, 10_000))
    assert read_until_barrier(ws, framing, 10_000) == []  # the answers to nothing were not answered
    assert workspace.in_flight == 0


# --- the decoder both sides use -----------------------------------------------------------


@FUZZ
@given(text=junk_texts | raw_tokens.map(str))
def test_the_decoder_never_raises_and_what_it_accepts_can_go_back_on_the_wire(text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        value = load_json(data)
        if isinstance(value, Malformed):
            assert value.code == ErrorCode.PARSE_ERROR and value.message
            continue
        # Anything decoded can be written back as strict JSON in UTF-8: no NaN, no Infinity, no lone surrogate.
        back = dump_json(value)
        assert json.loads(back.encode("utf-8"), parse_constant=_not_json) == value
        for framing in Framing:
            assert decode_value(value, framing) is not None


@pytest.mark.parametrize(
    "text",
    [
        "[NaN,",  # NaN first, then text that is not JSON at all
        '{"id": 1, "x": NaN, "y": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"id": 1, "x": NaN, "y": ' + "9" * 10_000 + "}",
        '{"jsonrpc": "2.0", "id": 1, "result": 1e400}',
        '{"jsonrpc": "2.0", "id": 1, "result": -1E+999}',
    ],
    ids=["nan-then-garbage", "nan-then-too-deep", "nan-then-too-long", "1e400", "-1e999"],
)
def test_frames_the_decoder_once_raised_on_or_passed_through(text: str) -> None:
    for data in (text, text.encode()):
        value = load_json(data)
        assert isinstance(value, Malformed) and value.code == ErrorCode.PARSE_ERROR, value


def test_bytes_that_are_not_utf8_are_a_parse_error_even_an_encoded_surrogate() -> None:
    for data in (b'{"a": "\xed\xa0\x80"}', b'"\xff"', b'{"id": 1, "x": "\xc0\xaf"}'):
        value = load_json(data)
        assert isinstance(value, Malformed) and value.code == ErrorCode.PARSE_ERROR, value


def test_a_readable_id_survives_nan_and_out_of_range_numbers() -> None:
    for text in ('{"jsonrpc":"2.0","id":7,"result":NaN}', '{"jsonrpc":"2.0","id":7,"result":[1e400]}'):
        value = load_json(text)
        assert isinstance(value, Malformed) and value.id == 7, value


# --- the hub, before the handshake ----------------------------------------------------------

#: Session tokens: forged, cut, empty, too long (a token is "<workspace id>.<hex HMAC>").
_ascii = st.characters(max_codepoint=127)
ascii_sessions = st.sampled_from(
    ["", ".", "a.", ".b", "x" * 201, "0123456789abcdef." + "0" * 32, "a.b.c"]
) | st.builds(
    lambda workspace_id, mac: f"{workspace_id}.{mac}",
    st.text(_ascii, max_size=16),
    st.text(_ascii, max_size=34),
)
initialize_shapes = st.one_of(
    st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "id": any_ids, "method": st.just("initialize")},
        optional={
            "params": junk_params
            | junk
            | st.fixed_dictionaries(
                {"workspace": st.text(max_size=210) | junk},
                optional={
                    "client": st.text(max_size=210) | junk,
                    "tools": st.lists(st.text(max_size=5)) | junk,
                    "resume": st.booleans() | junk,
                    # Not text that is not ASCII: a known bug (test_a_session_token_that_is_not_ascii...).
                    "session": ascii_sessions | junk.filter(lambda v: not isinstance(v, str) or v.isascii()),
                },
            )
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("initialize"), "request_id": any_ids},
        optional={
            "payload": junk_params | junk | st.fixed_dictionaries({"workspace": st.text(max_size=210) | junk})
        },
    ),
).map(to_text)

first_frames = st.one_of(
    text_frames,
    initialize_shapes.map(lambda t: Frame("text", t)),
    binary_frames,
    bad_utf8_frames,
)


def _is_initialize(text: str) -> bool:
    """Whether the hub must accept this first frame (the judge: the schemas the hub uses)."""
    value = load_json(text)
    framing = detect_framing(value)
    if isinstance(value, Malformed) or framing is None:
        return False
    message = decode_value(value, framing)
    if not isinstance(message, Request) or message.method != "initialize":
        return False
    try:
        InitializeParams.model_validate(message.params or {})
    except ValidationError:
        return False
    return True


@FUZZ
@given(frame=first_frames)
def test_any_first_frame_is_an_accepted_initialize_or_refused_with_1008_and_a_reason(
    hub: ThreadedHub, frame: Frame
) -> None:
    with watching_errors() as errors:
        with connected(hub) as ws:
            send(ws, frame)
            if frame.kind == "text" and _is_initialize(str(frame.data)):
                answer = strict_json(ws.recv(timeout=RECV_S))
                framing = detect_framing(answer)
                assert framing is not None
                result = answer.get("result") or answer.get("payload")
                assert isinstance(result, dict) and isinstance(result["workspace_id"], str), answer
                assert len(hub.hub.registry) == 1
            else:
                answers, code, reason = closed_by_hub(ws)
                if frame.kind == "bad-utf8":
                    assert code == 1007 and answers == []  # the WebSocket layer refuses it: invalid data
                else:
                    assert code == 1008, (code, reason)
                    assert reason and len(reason.encode()) <= 123
                    assert len(answers) <= 1
                    for answer in answers:
                        framing = detect_framing(answer) or Framing.ENVELOPE
                        answer_code, _id, _type = error_of(answer, framing)
                        assert answer_code in (ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_PARAMS)
        hub.wait_idle()
        assert errors.take() == []


@FUZZ
@given(resume=st.booleans(), session=ascii_sessions, client=st.none() | st.text(max_size=20))
def test_an_initialize_with_any_session_token_is_accepted_as_a_new_workspace_or_refused_with_1008(
    hub: ThreadedHub, resume: bool, session: str, client: str | None
) -> None:
    params: dict[str, Any] = {"workspace": "fuzz", "resume": resume, "session": session}
    if client is not None:
        params["client"] = client
    with watching_errors() as errors:
        with connected(hub) as ws:
            ws.send(dump_json({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}))
            if len(session) > 200:  # InitializeParams.session: at most 200 characters
                answers, code, _reason = closed_by_hub(ws)
                assert code == 1008 and [error_of(a, Framing.JSONRPC)[0] for a in answers] == [-32602]
            else:
                answer = strict_json(ws.recv(timeout=RECV_S))
                assert answer.get("id") == 0 and isinstance(answer.get("result"), dict), answer
                result = answer["result"]
                assert isinstance(result["workspace_id"], str)
                assert ("session" in result) is resume and ("epoch" in result) is resume, result
        hub.wait_idle()
        assert errors.take() == []


@pytest.mark.parametrize("session", ["a.\\u00e9", "\\u00e9.\\u00fc", "0123456789abcdef.\\u20ac"])
def test_a_session_token_that_is_not_ascii_gets_a_new_workspace(hub: ThreadedHub, session: str) -> None:
    text = '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"workspace":"fuzz","resume":true,"session":"%s"}}'
    with watching_errors() as errors:
        with connected(hub) as ws:
            ws.send(text % session)
            answer = strict_json(ws.recv(timeout=RECV_S))
            assert isinstance(answer["result"]["workspace_id"], str)
        hub.wait_idle()
        assert errors.take() == []


# --- the hub, after the handshake -------------------------------------------------------------


@FUZZ
@given(
    framing=st.sampled_from(list(Framing)),
    resume=st.booleans(),
    frames=st.lists(text_frames | binary_frames, min_size=1, max_size=6),
)
def test_junk_after_the_handshake_is_answered_per_json_rpc_and_the_connection_still_serves(
    hub: ThreadedHub, framing: Framing, resume: bool, frames: list[Frame]
) -> None:
    with watching_errors() as errors:
        with connected(hub) as ws:
            workspace_id = handshake(ws, framing, resume=resume)  # resume: JSON-RPC only
            for n, frame in enumerate(frames):
                send(ws, frame)
                ws.send(barrier_frame(framing, n))
                answers = read_until_barrier(ws, framing, n)
                expected = expected_answer(frame, framing)
                if expected is None:
                    assert answers == [], (frame, answers)
                    continue
                assert len(answers) == 1, (frame, answers)
                code, answer_id, answer_type = error_of(answers[0], framing)
                assert code in JUNK_CODES
                assert code == expected[0] and same_id(answer_id, expected[1]), (frame, answers, expected)
                if framing is Framing.ENVELOPE:
                    assert answer_type == expected[2], (frame, answers)
            a_real_call(hub, ws, workspace_id, framing)
        hub.wait_idle()
        assert errors.take() == []


def _with_pending_id(shape: dict[str, Any], framing: Framing) -> str:
    """The shape's text, its id member set to the first call's id ("1" in the envelope, 1 in JSON-RPC)."""
    if framing is Framing.JSONRPC:
        return to_text({**shape, "id": 1})
    return to_text({**shape, "request_id": "1"})


@FUZZ
@given(data=st.data(), framing=st.sampled_from(list(Framing)))
def test_junk_carrying_a_waiting_calls_id_ends_that_call_or_leaves_it_waiting_never_to_a_timeout(
    hub: ThreadedHub, data: st.DataObject, framing: Framing
) -> None:
    shapes = jsonrpc_shapes if framing is Framing.JSONRPC else envelope_shapes
    shape = data.draw(shapes.filter(lambda s: isinstance(s, dict)))
    text = _with_pending_id(shape, framing)

    with watching_errors() as errors:
        with connected(hub) as ws:
            workspace_id = handshake(ws, framing)
            workspace = hub.hub.registry.find(workspace_id)
            assert workspace is not None
            pending = asyncio.run_coroutine_threadsafe(
                workspace.call("list_files", {"path": "./"}, timeout=5.0), hub.loop
            )
            request = decode_frame(ws.recv(timeout=RECV_S), framing)
            assert isinstance(request, Request) and same_id(
                request.id, 1 if framing is Framing.JSONRPC else "1"
            )
            ws.send(text)
            ws.send(barrier_frame(framing, 0))
            answers = read_until_barrier(ws, framing, 0)
            judged = decode_frame(text, framing)
            if (
                isinstance(judged, Response | ErrorResponse)
                and judged.id is not None
                and same_id(judged.id, request.id)
            ):
                assert answers == []
                assert pending.result(RECV_S) == judged  # an answer is an answer, whatever it says
            elif isinstance(judged, Malformed) and judged.id is not None and same_id(judged.id, request.id):
                assert answers == []  # no error answer: the broken answer ends the call instead
                ended = pending.result(RECV_S)
                assert isinstance(ended, ErrorResponse) and ended.error.code == ErrorCode.INTERNAL_ERROR
                assert ended.error.message.startswith("malformed answer from the client")
            else:
                assert not pending.done()
                expected = expected_answer(Frame("text", text), framing)
                assert len(answers) == (0 if expected is None else 1), (text, answers)
                if framing is Framing.JSONRPC:
                    ws.send(dump_json({"jsonrpc": "2.0", "id": request.id, "result": {"files": []}}))
                else:
                    ws.send(
                        dump_json(
                            {
                                "type": "list_files_response",
                                "request_id": request.id,
                                "payload": {"status": "success", "files": []},
                            }
                        )
                    )
                answered = pending.result(RECV_S)
                assert isinstance(answered, Response) and answered.result == {"files": []}
            assert workspace.in_flight == 0
        hub.wait_idle()
        assert errors.take() == []


@settings(max_examples=examples(15), suppress_health_check=[HealthCheck.too_slow])
@given(framing=st.sampled_from(list(Framing)), frame=bad_utf8_frames)
def test_a_text_frame_that_is_not_utf8_closes_the_connection_with_1007_and_leaks_nothing(
    hub: ThreadedHub, framing: Framing, frame: Frame
) -> None:
    with watching_errors() as errors:
        with connected(hub) as ws:
            handshake(ws, framing)
            send(ws, frame)
            answers, code, _reason = closed_by_hub(ws)
            assert code == 1007 and answers == []
        hub.wait_idle()
        with connected(hub) as ws:  # and the hub goes on serving
            handshake(ws, framing)
        hub.wait_idle()
        assert errors.take() == []


def test_a_frame_over_the_size_limit_closes_with_1009_and_leaks_nothing(hub: ThreadedHub) -> None:
    with watching_errors() as errors:
        with connected(hub) as ws:
            handshake(ws, Framing.JSONRPC)
            try:
                ws.send(
                    json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"a": "x" * (2 * 1024 * 1024)}})
                )
                _answers, code, _reason = closed_by_hub(ws)
            except ConnectionClosed as exc:  # closed while the frame was still being written: a reset, maybe
                code = exc.rcvd.code if exc.rcvd else None
            assert code in (1009, None)
        hub.wait_idle()
        with connected(hub) as ws:  # and the hub goes on serving
            handshake(ws, Framing.JSONRPC)
        hub.wait_idle()
        assert errors.take() == []


# --- notifications naming a call in flight ---------------------------------------------------

notifications_naming_the_call = st.one_of(
    st.builds(  # another method
        lambda method, extra: {"jsonrpc": "2.0", "method": method, "params": {"id": 1, **extra}},
        st.sampled_from(["progress", "$/progress", "command_output", "output", "rpc.x", "list_files"])
        | st.text(min_size=1, max_size=12).filter(lambda m: m != OUTPUT_CHUNK),
        st.fixed_dictionaries(
            {}, optional={"stream": st.just("stdout") | json_values, "data": st.just("x") | json_values}
        ),
    ),
    st.builds(  # live output, well-formed or not
        lambda extra: {"jsonrpc": "2.0", "method": OUTPUT_CHUNK, "params": {"id": 1, **extra}},
        st.fixed_dictionaries(
            {},
            optional={
                "stream": st.sampled_from(["stdout", "stderr"]) | json_values,
                "data": st.text(max_size=5) | json_values,
            },
        ),
    ),
)


def _sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@settings(max_examples=examples(10), suppress_health_check=[HealthCheck.too_slow])
@given(notification=notifications_naming_the_call)
def test_only_well_formed_output_chunks_reach_a_streaming_callers_output(
    hub: ThreadedHub, notification: dict[str, Any]
) -> None:
    body: list[str] = []
    with connected(hub) as ws:
        workspace_id = handshake(ws, Framing.JSONRPC)

        def stream() -> None:
            with httpx2.Client(timeout=10) as http:
                response = http.post(
                    f"{hub.http_url}/api/workspaces/{workspace_id}/tools/list_files",
                    json={},
                    headers={**AUTH, "Accept": "text/event-stream"},
                )
                body.append(response.text)

        caller = threading.Thread(target=stream)
        caller.start()
        request = decode_frame(ws.recv(timeout=RECV_S), Framing.JSONRPC)
        assert isinstance(request, Request)
        ws.send(dump_json(notification))
        ws.send(dump_json({"jsonrpc": "2.0", "id": request.id, "result": {"files": []}}))
        caller.join(10)
    hub.wait_idle()
    events = _sse_events(body[0])
    assert events[-1][0] == "result", events
    params = notification["params"]
    well_formed = (
        notification["method"] == OUTPUT_CHUNK
        and params.get("stream") in ("stdout", "stderr")
        and isinstance(params.get("data"), str)
    )
    expected = [("output", {"stream": params["stream"], "data": params["data"]})] if well_formed else []
    assert events[:-1] == expected, (notification, events)
