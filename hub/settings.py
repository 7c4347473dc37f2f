"""The hub's settings, read once from the environment and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


def default_home() -> Path:
    """``AIHUB_HOME``, else ``~/.aihub``."""
    return Path(os.environ.get("AIHUB_HOME") or Path.home() / ".aihub")


@dataclass(frozen=True)
class HubSettings:
    token: str
    home: Path
    #: The client must send initialize within this many seconds of connecting.
    handshake_timeout: float = 10.0
    #: How long a REST caller waits for a file tool's answer.
    call_timeout: float = 30.0
    #: Added to an execute_command's own timeout, so the client's timeout answer arrives first.
    command_timeout_margin: float = 10.0
    #: Largest frame accepted from a client (uvicorn's ws_max_size).
    max_frame_bytes: int = 16 * MiB
