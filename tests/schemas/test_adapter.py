"""The adapter between the typed envelope and JSON-RPC 2.0, by table and by property."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import (
    DEFAULT_ERROR_CODE,
    Envelope,
    envelope_to_jsonrpc,
    jsonrpc_to_envelope,
    method_of_response_type,
    parse_envelope,
    response_type,
)
from schemas.errors import ErrorCode
from schemas.framing import Framing, decode_frame, detect_framing, encode_frame
from schemas.jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Malformed,
    Notification,
    Request,
    Response,
    parse_message,
)

METHODS = ["list_files", "read_files", "execute_command", "write_file", "initialize", "edit_file"]

# --- the table of the contract ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "answer_type"),
    [
        ("list_files", "list_files_response"),
        ("read_files", "read_files_response"),
        ("write_file", "write_file_response"),
        ("execute_command", "command_output"),  # the irregular one
        ("initialize", "initialize_response"),
        ("edit_file", "edit_file_response"),  # any other method
    ],
)
def test_each_method_has_its_answer_type_and_back(method: str, answer_type: str) -> None:
    assert response_type(method) == answer_type
    assert method_of_response_type(answer_type) == method


def test_a_request_type_is_not_an_answer_type() -> None:
    assert method_of_response_type("list_files") is None
    assert method_of_response_type("_response") is None


def test_a_success_payload_becomes_a_result_without_status() -> None:
    env = Envelope(
        type="command_output",
        request_id="7",
        payload={"status": "success", "stdout": "hi", "stderr": "", "exit_code": 0},
    )
    assert envelope_to_jsonrpc(env) == Response(id="7", result={"stdout": "hi", "stderr": "", "exit_code": 0})


def test_an_error_payload_becomes_an_error_with_code_message_and_data() -> None:
    env = Envelope(
        type="read_files_response",
        request_id=3,
        payload={
            "status": "error",
            "error_message": "b.py: not found",
            "error_code": -32011,
            "files": {"a.py": "x"},
        },
    )
    assert envelope_to_jsonrpc(env) == ErrorResponse(
        id=3, error=ErrorObject(code=-32011, message="b.py: not found", data={"files": {"a.py": "x"}})
    )


def test_an_error_payload_without_a_code_gets_the_default_one() -> None:
    env = Envelope(
        type="write_file_response", request_id="1", payload={"status": "error", "error_message": "disk full"}
    )
    message = envelope_to_jsonrpc(env)
    assert isinstance(message, ErrorResponse)
    assert (
        message.error.code == DEFAULT_ERROR_CODE
        and message.error.message == "disk full"
        and message.error.data is None
    )


def test_an_answer_without_status_is_malformed_not_a_crash() -> None:
    env = Envelope(type="list_files_response", request_id="1", payload={"files": []})
    result = envelope_to_jsonrpc(env)
    assert isinstance(result, Malformed) and result.id == "1"


def test_a_jsonrpc_error_becomes_an_envelope_error_payload() -> None:
    message = ErrorResponse(
        id=5, error=ErrorObject(code=int(ErrorCode.PATH_OUTSIDE_ROOT), message="'..' leaves the root")
    )
    envelope = jsonrpc_to_envelope(message, method="read_files")
    assert envelope == Envelope(
        type="read_files_response",
        request_id=5,
        payload={"status": "error", "error_message": "'..' leaves the root", "error_code": -32001},
    )


def test_envelope_requests_and_notifications_map_to_jsonrpc() -> None:
    assert envelope_to_jsonrpc(
        Envelope(type="list_files", request_id="1", payload={"path": "./"})
    ) == Request(id="1", method="list_files", params={"path": "./"})
    assert envelope_to_jsonrpc(Envelope(type="progress", payload={"n": 1})) == Notification(
        method="progress", params={"n": 1}
    )


# --- properties ------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20
)
ids = st.integers() | st.text(min_size=1)
field_names = st.text(min_size=1).filter(lambda k: k not in ("status", "error_message", "error_code"))
objects = st.dictionaries(field_names, json_values, max_size=6)


@given(id=ids, method=st.sampled_from(METHODS), params=objects)
def test_requests_round_trip_through_the_envelope(id: Any, method: str, params: dict[str, Any]) -> None:
    request = Request(id=id, method=method, params=params)
    assert envelope_to_jsonrpc(jsonrpc_to_envelope(request)) == request


@given(id=ids, method=st.sampled_from(METHODS), result=objects)
def test_successes_round_trip_through_the_envelope(id: Any, method: str, result: dict[str, Any]) -> None:
    response = Response(id=id, result=result)
    envelope = jsonrpc_to_envelope(response, method=method)
    assert envelope.payload["status"] == "success"
    assert method_of_response_type(envelope.type) == method
    assert envelope_to_jsonrpc(envelope) == response


@given(
    id=ids, method=st.sampled_from(METHODS), code=st.integers(-32768, 32767), message=st.text(), data=objects
)
def test_errors_round_trip_through_the_envelope(
    id: Any, method: str, code: int, message: str, data: dict[str, Any]
) -> None:
    error = ErrorResponse(id=id, error=ErrorObject(code=code, message=message, data=data or None))
    assert envelope_to_jsonrpc(jsonrpc_to_envelope(error, method=method)) == error


@given(id=ids, method=st.sampled_from(METHODS), result=objects, framing=st.sampled_from(list(Framing)))
def test_frames_round_trip_through_text_in_both_framings(
    id: Any, method: str, result: dict[str, Any], framing: Framing
) -> None:
    for message in (Request(id=id, method=method, params=result), Response(id=id, result=result)):
        text = encode_frame(message, framing, method=method)
        assert detect_framing(json.loads(text)) is framing
        assert decode_frame(text, framing) == message


@given(value=json_values)
def test_any_json_value_parses_to_a_message_or_an_error_value(value: Any) -> None:
    for result in (parse_message(value), parse_envelope(value)):
        assert result is not None
    for framing in Framing:
        decode_frame(json.dumps(value), framing)


@given(
    value=st.fixed_dictionaries(
        {},
        optional={
            "jsonrpc": json_values | st.just("2.0"),
            "id": json_values,
            "method": json_values | st.sampled_from(METHODS),
            "params": json_values,
            "result": json_values,
            "error": json_values | st.fixed_dictionaries({"code": json_values, "message": json_values}),
            "type": json_values | st.sampled_from(["command_output", "list_files_response", "list_files"]),
            "request_id": json_values,
            "payload": json_values | st.fixed_dictionaries({"status": json_values}),
        },
    )
)
def test_messages_with_wrong_types_in_every_field_give_a_value_never_an_exception(
    value: dict[str, Any],
) -> None:
    for framing in Framing:
        decode_frame(json.dumps(value), framing)


@given(data=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_or_text_decode_to_a_message_or_an_error_value(data: bytes | str) -> None:
    for framing in Framing:
        assert decode_frame(data, framing) is not None


def test_deep_nesting_and_huge_numbers_are_errors_not_crashes() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = '{"jsonrpc": "2.0", "id": ' + "9" * 10_000 + ', "result": 1}'
    for text in (deep, huge, b"\xff\xfe\x00", ""):
        result = decode_frame(text, Framing.JSONRPC)
        assert isinstance(result, Malformed) and result.code == ErrorCode.PARSE_ERROR


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([], ErrorCode.INVALID_REQUEST),  # batches are not part of this protocol
        ({"jsonrpc": "1.0", "id": 1, "method": "x"}, ErrorCode.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": True, "method": "x"}, ErrorCode.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, ErrorCode.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]}, ErrorCode.INVALID_PARAMS),
        (
            {"jsonrpc": "2.0", "id": 1, "result": 1, "error": {"code": 1, "message": "m"}},
            ErrorCode.INVALID_REQUEST,
        ),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": "1", "message": "m"}}, ErrorCode.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "result": 1}, ErrorCode.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": "x", "extra": 1}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_invalid_jsonrpc_is_named(value: Any, code: ErrorCode) -> None:
    result = parse_message(value)
    assert isinstance(result, Malformed) and result.code == code


def test_an_invalid_message_keeps_its_id_for_the_error_answer() -> None:
    result = parse_message({"jsonrpc": "2.0", "id": 9, "method": "x", "params": "nope"})
    assert isinstance(result, Malformed) and result.id == 9
