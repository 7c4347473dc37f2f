"""Constants both ends of the wire agree on, and where the shared state folder is."""

from __future__ import annotations

import os
import re
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
#: Request ids that start with this carry a caller's idempotency key (``idem:<key>``): the
#: client keeps their answers across hub restarts (not only within one epoch), so a caller
#: that retries with the same key gets the first run's answer and the work never runs twice.
IDEMPOTENT_ID_PREFIX = "idem:"
#: An idempotency key: 1 to 128 visible ASCII characters.
IDEMPOTENCY_KEY_PATTERN = r"[!-~]{1,128}"


def idempotency_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid idempotency key, or None when it is."""
    if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is None:
        return "an idempotency key is 1 to 128 visible ASCII characters (no spaces)"
    return None


#: The largest request frame the hub sends (the client accepts frames up to 64 MiB): a bigger
#: one would make the client close the connection (1009), again on every replay.
MAX_REQUEST_FRAME_BYTES = 48 * 1024 * 1024
#: The token file's name inside the state folder.
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret


def aihub_home() -> Path:
    """The state folder: ``AIHUB_HOME``, else ``~/.aihub``."""
    return Path(os.environ.get("AIHUB_HOME") or Path.home() / ".aihub")
