"""Frames on the wire: JSON text in either framing, decoded to JSON-RPC messages.

The connection's framing is chosen by the client's first frame and kept; both
sides work on JSON-RPC messages internally and only this module knows the
envelope exists.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Any

from schemas.envelope import (
    Envelope,
    envelope_to_jsonrpc,
    jsonrpc_to_envelope,
    parse_envelope,
)
from schemas.errors import ErrorCode
from schemas.jsonrpc import Malformed, Message, parse_message, to_wire


class Framing(StrEnum):
    JSONRPC = "jsonrpc"
    ENVELOPE = "envelope"


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"JSON text with {name} (not JSON)")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400: valid syntax, but no peer can write it back as JSON
        raise _NotJson("JSON text with a number out of range")
    return value


def _lenient(text: str) -> Any | Malformed:
    """The value of JSON text that only NaN, Infinity or out-of-range numbers spoil: its id is still read."""
    try:
        return json.loads(text)
    except RecursionError:
        return Malformed(ErrorCode.PARSE_ERROR, "JSON nested too deeply")
    except ValueError:
        return Malformed(ErrorCode.PARSE_ERROR, "not valid JSON")


def load_json(text: str | bytes) -> Any | Malformed:
    """Decode JSON text; never raises.

    Refused as parse errors: bad UTF-8 (bytes are UTF-8, an encoded surrogate
    included), bad syntax, numbers too long, nesting too deep, ``NaN``/``Infinity``
    and numbers out of range such as ``1e400`` (not JSON a peer could write back),
    and ``\\udXXX`` escapes that leave a lone surrogate (text that no peer could
    encode back to UTF-8). For the last two kinds the message is still readable,
    so its id is kept: the call it answers gets the error instead of waiting for
    its timeout.
    """
    if isinstance(text, bytes):
        try:
            # Strict UTF-8: json.loads would take UTF-16/32 and let an encoded surrogate through.
            text = text.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            return Malformed(ErrorCode.PARSE_ERROR, "not valid JSON (bad UTF-8)")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except _NotJson as exc:
        lenient = _lenient(text)  # what else is wrong with the text, once NaN is allowed
        if isinstance(lenient, Malformed):
            return lenient
        return Malformed(ErrorCode.PARSE_ERROR, str(exc), _readable_id(lenient))
    except RecursionError:
        return Malformed(ErrorCode.PARSE_ERROR, "JSON nested too deeply")
    except ValueError:
        # JSONDecodeError and int-too-long.
        return Malformed(ErrorCode.PARSE_ERROR, "not valid JSON")
    if _ESCAPED_SURROGATE.search(text):
        try:
            dump_json(value).encode("utf-8")
        except UnicodeEncodeError:
            return Malformed(
                ErrorCode.PARSE_ERROR,
                "JSON text with a lone surrogate escape (not valid Unicode)",
                _readable_id(value),
            )
        except RecursionError:
            return Malformed(ErrorCode.PARSE_ERROR, "JSON nested too deeply")
    return value


def _readable_id(value: object) -> int | str | None:
    if isinstance(value, dict):
        for key in ("id", "request_id"):
            found = value.get(key)
            if isinstance(found, int | str) and not isinstance(found, bool):
                try:
                    (found if isinstance(found, str) else "").encode("utf-8")
                except UnicodeEncodeError:
                    return None
                return found
    return None


def detect_framing(value: object) -> Framing | None:
    """Which framing a decoded first frame uses, or ``None`` if neither."""
    if isinstance(value, dict):
        if "jsonrpc" in value:
            return Framing.JSONRPC
        if "type" in value:
            return Framing.ENVELOPE
    return None


def decode_value(value: object, framing: Framing) -> Message | Malformed:
    """A decoded JSON value as a JSON-RPC message in the given framing."""
    if framing is Framing.JSONRPC:
        return parse_message(value)
    envelope = parse_envelope(value)
    if isinstance(envelope, Malformed):
        return envelope
    return envelope_to_jsonrpc(envelope)


def decode_frame(text: str | bytes, framing: Framing) -> Message | Malformed:
    """Decode one frame of a connection that speaks ``framing``; never raises."""
    value = load_json(text)
    if isinstance(value, Malformed):
        return value
    return decode_value(value, framing)


def dump_json(value: Any) -> str:
    """Compact JSON text; ``ensure_ascii=False`` keeps non-ASCII text at its UTF-8 size."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_frame(message: Message, framing: Framing, *, method: str | None = None) -> str:
    """Encode ``message`` for a connection that speaks ``framing``.

    ``method`` names the request an answer belongs to; the envelope framing
    needs it for the answer's ``type``.
    """
    if framing is Framing.JSONRPC:
        return dump_json(to_wire(message))
    envelope: Envelope = jsonrpc_to_envelope(message, method=method)
    return dump_json(envelope.model_dump(exclude_none=True))
