"""The original typed envelope and the thin adapter onto JSON-RPC 2.0.

Envelope: ``{"type": ..., "request_id": ..., "payload": {...}}``.

Mapping (both directions, see docs/protocol.md):

* a request ``type: M`` with a ``request_id`` is ``method: M`` with ``id``;
  without ``request_id`` it is a notification;
* an answer's type is ``<method>_response`` except ``command_output`` for
  ``execute_command``;
* ``payload: {"status": "success", **fields}`` is ``result: {fields}``;
* ``payload: {"status": "error", "error_message": M, "error_code"?: C, **rest}``
  is ``error: {"code": C, "message": M, "data": {rest}}``.

Everything here is pure; bad input comes back as :class:`Malformed`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.errors import ErrorCode
from schemas.jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Malformed,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
)

#: ``error_code`` used when an envelope error carries none (JSON-RPC "server error").
DEFAULT_ERROR_CODE = -32000
#: Answer type used when the method of an answer is not known (e.g. a parse error).
ERROR_TYPE = "error"
_IRREGULAR = {"execute_command": "command_output"}
_IRREGULAR_BACK = {v: k for k, v in _IRREGULAR.items()}
_RESPONSE_SUFFIX = "_response"
_RESERVED = ("status", "error_message", "error_code")


class Envelope(BaseModel):
    """One frame of the original typed schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    request_id: RequestId | None = None
    payload: dict[str, Any] = {}


def response_type(method: str | None) -> str:
    """The envelope ``type`` of the answer to ``method``."""
    if method is None:
        return ERROR_TYPE
    return _IRREGULAR.get(method, method + _RESPONSE_SUFFIX)


def method_of_response_type(type_: str) -> str | None:
    """The method a ``type`` answers, or ``None`` when ``type_`` is not an answer type."""
    if type_ in _IRREGULAR_BACK:
        return _IRREGULAR_BACK[type_]
    if type_.endswith(_RESPONSE_SUFFIX) and len(type_) > len(_RESPONSE_SUFFIX):
        return type_[: -len(_RESPONSE_SUFFIX)]
    if type_ == ERROR_TYPE:
        return ""
    return None


def parse_envelope(value: object) -> Envelope | Malformed:
    """Validate a decoded JSON value as an envelope; never raises."""
    if not isinstance(value, dict):
        return Malformed(ErrorCode.INVALID_REQUEST, "a message must be a JSON object")
    raw_id = value.get("request_id")
    id_ok = (
        raw_id is None
        or isinstance(raw_id, str)
        or (isinstance(raw_id, int) and not isinstance(raw_id, bool))
    )
    answer_id = raw_id if id_ok else None
    type_ = value.get("type")
    if not isinstance(type_, str) or not type_:
        return Malformed(ErrorCode.INVALID_REQUEST, '"type" must be a non-empty string', answer_id)
    if not id_ok:
        return Malformed(ErrorCode.INVALID_REQUEST, '"request_id" must be a string or an integer')
    payload = value.get("payload", {})
    if not isinstance(payload, dict):
        return Malformed(ErrorCode.INVALID_PARAMS, '"payload" must be an object', answer_id)
    unknown = set(value) - {"type", "request_id", "payload"}
    if unknown:
        return Malformed(ErrorCode.INVALID_REQUEST, f"unknown members: {sorted(unknown)}", answer_id)
    return Envelope(type=type_, request_id=raw_id, payload=payload)


def envelope_to_jsonrpc(envelope: Envelope) -> Message | Malformed:
    """Map an envelope onto the JSON-RPC message it stands for."""
    answered = method_of_response_type(envelope.type)
    payload = dict(envelope.payload)
    if answered is None:
        if envelope.request_id is None:
            return Notification(method=envelope.type, params=payload)
        return Request(id=envelope.request_id, method=envelope.type, params=payload)
    status = payload.pop("status", None)
    if status == "success":
        if envelope.request_id is None:
            return Malformed(ErrorCode.INVALID_REQUEST, "an answer needs the request's request_id")
        return Response(id=envelope.request_id, result=payload)
    if status == "error":
        message = payload.pop("error_message", None)
        code = payload.pop("error_code", DEFAULT_ERROR_CODE)
        if not isinstance(message, str):
            message = "the peer reported an error without an error_message"
        if not isinstance(code, int) or isinstance(code, bool):
            code = DEFAULT_ERROR_CODE
        return ErrorResponse(
            id=envelope.request_id,
            error=ErrorObject(code=code, message=message, data=payload or None),
        )
    return Malformed(
        ErrorCode.INVALID_REQUEST,
        'an answer\'s payload needs "status": "success" or "error"',
        envelope.request_id,
    )


def success_payload(result: Any) -> dict[str, Any]:
    """The envelope payload of a successful result (a non-object result goes under ``result``)."""
    fields = dict(result) if isinstance(result, dict) else {"result": result}
    for key in _RESERVED:
        fields.pop(key, None)
    return {"status": "success", **fields}


def error_payload(error: ErrorObject) -> dict[str, Any]:
    """The envelope payload of a JSON-RPC error."""
    data = error.data
    fields = dict(data) if isinstance(data, dict) else ({} if data is None else {"data": data})
    for key in _RESERVED:
        fields.pop(key, None)
    return {"status": "error", "error_message": error.message, "error_code": error.code, **fields}


def jsonrpc_to_envelope(message: Message, *, method: str | None = None) -> Envelope:
    """Map a JSON-RPC message onto an envelope.

    ``method`` names the request an answer belongs to (an answer does not carry
    it on the JSON-RPC side); it picks the answer's ``type``.
    """
    if isinstance(message, Request):
        return Envelope(type=message.method, request_id=message.id, payload=message.params or {})
    if isinstance(message, Notification):
        return Envelope(type=message.method, payload=message.params or {})
    if isinstance(message, Response):
        return Envelope(
            type=response_type(method), request_id=message.id, payload=success_payload(message.result)
        )
    return Envelope(type=response_type(method), request_id=message.id, payload=error_payload(message.error))
