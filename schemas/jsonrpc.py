"""JSON-RPC 2.0 messages and a parser that never raises.

The parser takes any decoded JSON value and returns either one of the four
message kinds or a :class:`Malformed` value that says what was wrong and, where
the value carried one, the request id to answer with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from schemas.errors import ErrorCode

RequestId = int | str
JSONRPC: Literal["2.0"] = "2.0"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    jsonrpc: Literal["2.0"] = JSONRPC


class Request(_Message):
    """A call that expects an answer with the same ``id``."""

    id: RequestId
    method: str
    params: dict[str, Any] | None = None


class Notification(_Message):
    """A call without ``id``: nobody answers it."""

    method: str
    params: dict[str, Any] | None = None


class ErrorObject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: int
    message: str
    data: Any = None


class Response(_Message):
    """A successful answer."""

    id: RequestId
    result: Any


class ErrorResponse(_Message):
    """A failed answer; ``id`` is ``None`` when the request's id could not be read."""

    id: RequestId | None
    error: ErrorObject


Message = Request | Notification | Response | ErrorResponse


@dataclass(frozen=True)
class Malformed:
    """Why a value is not a JSON-RPC message, and the id to answer with if one was found."""

    code: ErrorCode
    message: str
    id: RequestId | None = None


def _valid_id(value: object) -> bool:
    # bool is an int subclass in Python but not a JSON-RPC id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_message(value: object) -> Message | Malformed:
    """Classify a decoded JSON value as a JSON-RPC message; never raises.

    Batches (arrays) are not part of this protocol and come back as
    ``Malformed(INVALID_REQUEST)``.
    """
    if not isinstance(value, dict):
        return Malformed(ErrorCode.INVALID_REQUEST, "a message must be a JSON object")
    raw_id = value.get("id")
    answer_id = raw_id if _valid_id(raw_id) else None
    if value.get("jsonrpc") != JSONRPC:
        return Malformed(
            ErrorCode.INVALID_REQUEST, 'missing or wrong "jsonrpc" member (must be "2.0")', answer_id
        )
    if "id" in value and not _valid_id(raw_id) and raw_id is not None:
        return Malformed(ErrorCode.INVALID_REQUEST, '"id" must be a string or an integer')
    unknown = set(value) - {"jsonrpc", "id", "method", "params", "result", "error"}
    if unknown:
        return Malformed(ErrorCode.INVALID_REQUEST, f"unknown members: {sorted(unknown)}", answer_id)
    if "method" in value:
        method, params = value["method"], value.get("params")
        if not isinstance(method, str) or not method:
            return Malformed(ErrorCode.INVALID_REQUEST, '"method" must be a non-empty string', answer_id)
        if "result" in value or "error" in value:
            return Malformed(
                ErrorCode.INVALID_REQUEST, "a request cannot carry a result or an error", answer_id
            )
        if params is not None and not isinstance(params, dict):
            return Malformed(
                ErrorCode.INVALID_PARAMS, '"params" must be an object (by-name parameters)', answer_id
            )
        # Every member is checked above: the models are built without validating again
        # (this runs for every frame on both sides).
        if "id" not in value:
            return Notification.model_construct(method=method, params=params)
        if raw_id is None:
            return Malformed(ErrorCode.INVALID_REQUEST, '"id" must be a string or an integer')
        return Request.model_construct(id=raw_id, method=method, params=params)
    if "result" in value and "error" not in value:
        if answer_id is None:
            return Malformed(ErrorCode.INVALID_REQUEST, "a response needs the request's id")
        return Response.model_construct(id=answer_id, result=value["result"])
    if "error" in value and "result" not in value:
        error = value["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or isinstance(error.get("code"), bool)
            or not isinstance(error.get("message"), str)
            or set(error) - {"code", "message", "data"}
        ):
            return Malformed(
                ErrorCode.INVALID_REQUEST, '"error" must be {"code": int, "message": str, "data"?}'
            )
        return ErrorResponse(
            id=answer_id,
            error=ErrorObject(code=error["code"], message=error["message"], data=error.get("data")),
        )
    return Malformed(ErrorCode.INVALID_REQUEST, "neither a request nor a response", answer_id)


def error_response(id: RequestId | None, code: int, message: str, data: Any = None) -> ErrorResponse:
    """Build an error answer."""
    return ErrorResponse(id=id, error=ErrorObject(code=int(code), message=message, data=data))


def to_wire(message: Message) -> dict[str, Any]:
    """The JSON object of ``message``, leaving out absent optional members."""
    if isinstance(message, ErrorResponse):
        error: dict[str, Any] = {"code": message.error.code, "message": message.error.message}
        if message.error.data is not None:
            error["data"] = message.error.data
        return {"jsonrpc": JSONRPC, "id": message.id, "error": error}
    if isinstance(message, Response):
        return {"jsonrpc": JSONRPC, "id": message.id, "result": message.result}
    wire: dict[str, Any] = {"jsonrpc": JSONRPC}
    if isinstance(message, Request):
        wire["id"] = message.id
    wire["method"] = message.method
    if message.params is not None:
        wire["params"] = message.params
    return wire
