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

import orjson

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
#: Frames up to this size are first read by orjson (several times faster than json on the
#: small frames of every call); it refuses all that the strict rules refuse (NaN, Infinity,
#: 1e400, lone surrogate escapes, bad UTF-8), and those go to json for the exact error.
FAST_MAX_CHARS = 64 * 1024
#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float and
#: json as the integer it is. Such a text is read by json (searched in small texts only).
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")
#: orjson reads arrays and objects nested up to 1024 deep, deeper than json (and than what
#: json, or orjson at 254, can write back): a text with this many brackets is read by json.
FAST_MAX_BRACKETS = 200


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

    A small text is read by orjson when it has no run of 19 digits and few brackets;
    its values are then those json gives (an integer beyond 64 bits needs 19 digits,
    and the nesting stays well within what both read and write). Anything orjson
    refuses, and every other text, is read by json as described above.
    """
    if len(text) <= FAST_MAX_CHARS:
        if isinstance(text, str):
            fast = text.count("[") + text.count("{") < FAST_MAX_BRACKETS and _LONG_DIGITS.search(text) is None
        else:
            fast = (
                text.count(b"[") + text.count(b"{") < FAST_MAX_BRACKETS
                and _LONG_DIGITS_BYTES.search(text) is None
            )
        if fast:
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass  # json says why, with the id where it can read one
    return _load_json_strict(text)


def _load_json_strict(text: str | bytes) -> Any | Malformed:
    """:func:`load_json` with Python's json alone (the reference its fast path agrees with)."""
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
    """Compact JSON text; non-ASCII text is kept as it is (at its UTF-8 size).

    Written by orjson (five times faster than json on a large answer), else (an integer
    beyond 64 bits, a lone surrogate, a key that is not a string, nesting deeper than 254)
    by json as before. A float that is not finite, which json would write as ``NaN``
    that no peer can read, orjson writes as ``null`` (nothing here makes one: the
    parser refuses them).
    """
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError
        return _dump_json_json(value)


def dump_json_bytes(value: Any) -> bytes:
    """:func:`dump_json` as UTF-8 bytes, ready for a text frame (no detour through ``str``).

    Raises UnicodeEncodeError where ``dump_json(value).encode()`` would (a lone surrogate).
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return _dump_json_json(value).encode("utf-8")


def _dump_json_json(value: Any) -> str:
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
