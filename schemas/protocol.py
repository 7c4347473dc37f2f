"""Constants both ends of the wire agree on, and where the shared state folder is."""

from __future__ import annotations

import os
from pathlib import Path

#: The client must send ``initialize`` within this many seconds of connecting.
HANDSHAKE_TIMEOUT_S = 10.0
#: Close codes of a refused handshake: policy violation, protocol error.
CLOSE_POLICY_VIOLATION = 1008
CLOSE_PROTOCOL_ERROR = 1002
HANDSHAKE_REFUSALS = (CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR)
#: Notification withdrawing a request (as LSP does): ``{"id": <request id>}``.
CANCEL_REQUEST = "$/cancelRequest"
#: Notification with a running command's output: ``{"id", "stream": "stdout"|"stderr", "data"}``.
OUTPUT_CHUNK = "command_output_chunk"
#: The token file's name inside the state folder.
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret


def aihub_home() -> Path:
    """The state folder: ``AIHUB_HOME``, else ``~/.aihub``."""
    return Path(os.environ.get("AIHUB_HOME") or Path.home() / ".aihub")
