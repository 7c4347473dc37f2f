"""Error codes shared by the hub and the client.

The JSON-RPC 2.0 codes come from the specification; ours live in the
implementation-defined server range (-32000 to -32099) so that any JSON-RPC
peer can still tell them apart from the standard ones.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Every error code that may appear on the wire."""

    # JSON-RPC 2.0
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603

    # Ours
    PATH_OUTSIDE_ROOT = -32001
    NOT_FOUND = -32002
    DENIED = -32003
    TIMEOUT = -32004
    TOO_LARGE = -32005
    NOT_A_FILE = -32006
    NOT_A_DIRECTORY = -32007
    INVALID_PATH = -32008
    IO_ERROR = -32009
    NOT_TEXT = -32010
    PARTIAL_FAILURE = -32011
    CANNOT_START = -32012
    BUSY = -32013
    CONFLICT = -32014
    #: edit_file: old_string occurs nowhere in the file.
    NO_MATCH = -32015
    #: edit_file: old_string occurs more than once and replace_all is off.
    MULTIPLE_MATCHES = -32016
    #: As LSP's RequestCancelled: the hub withdrew the request ($/cancelRequest).
    CANCELLED = -32800


#: Short, stable names for logs and docs (``ErrorCode.NOT_FOUND`` -> ``"not_found"``).
def error_name(code: int) -> str:
    """Return the lower-case name of ``code``, or ``"error"`` for an unknown code."""
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return "error"


class RpcError(Exception):
    """An error meant for the peer: its message is safe to send over the wire.

    ``message`` must never hold an absolute path outside the workspace, a token
    or any other secret of the machine that raises it.
    """

    def __init__(self, code: ErrorCode | int, message: str, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.data = data
