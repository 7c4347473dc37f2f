"""The hub's settings, read once from the environment and flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.protocol import HANDSHAKE_TIMEOUT_S

MiB = 1024 * 1024


@dataclass(frozen=True)
class HubSettings:
    token: str
    home: Path
    #: The client must send initialize within this many seconds of connecting.
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S
    #: How long a REST caller waits for a file tool's answer.
    call_timeout: float = 30.0
    #: Added to an execute_command's own timeout, so the client's timeout answer arrives first.
    command_timeout_margin: float = 10.0
    #: Largest frame accepted from a client (uvicorn's ws_max_size).
    max_frame_bytes: int = 16 * MiB
    #: Largest REST request body.
    max_body_bytes: int = 32 * MiB
