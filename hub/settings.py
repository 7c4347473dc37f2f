"""The hub's settings, read once from the environment and flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from schemas.protocol import HANDSHAKE_TIMEOUT_S

MiB = 1024 * 1024


@dataclass(frozen=True)
class HubSettings:
    #: Where the hub keeps its state (the conversations database).
    home: Path
    #: The bearer token clients and REST callers present. None only when a host application
    #: gives :class:`hub.WorkspaceHub` both of its own checks (authorize_client and api_auth).
    token: str | None = field(default=None, kw_only=True, repr=False)
    #: Browser origins allowed to open a workspace connection (exact match, e.g. "https://hub.example").
    #: A connection with any other ``Origin`` header is refused: a web page must not reach a
    #: workspace through the user's browser. Clients that send no Origin (aihub-client) are unaffected.
    allowed_origins: tuple[str, ...] = ()
    #: The client must send initialize within this many seconds of connecting.
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S
    #: How long a REST caller waits for a file tool's answer.
    call_timeout: float = 30.0
    #: Added to an execute_command's own timeout, so the client's timeout answer arrives first.
    command_timeout_margin: float = 10.0
    #: Largest frame accepted from a client (uvicorn's ws_max_size).
    max_frame_bytes: int = 16 * MiB
    #: Workspaces connected at once; one more is closed with 1013 (try again later) and its client retries.
    max_workspaces: int = 1000
    #: Calls in flight per workspace (the client serves 64 at once); more get 429 / WorkspaceBusy.
    max_in_flight: int = 64
    #: Seconds a resumable client's workspace waits for it after its connection is lost (not closed
    #: on purpose): calls in flight keep waiting (within their own timeouts) and are answered if it
    #: comes back; then they fail with 502. 0: fail at once.
    resume_grace: float = 10.0
    #: WebSocket pings: a peer that does not answer one within ping_timeout is disconnected,
    #: so half-open connections (a laptop that slept, a dropped NAT entry) are noticed.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: On SIGTERM/Ctrl-C, seconds the calls in flight get to be answered before the connections
    #: close (new calls get 503 meanwhile); what is still waiting then gets 503.
    drain_timeout: float = 10.0
    #: Largest REST request body.
    max_body_bytes: int = 32 * MiB
    #: The model: an OpenAI-compatible base URL ("local": the in-process demo model), its name and key.
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    #: Seconds per model request, and the SDK's retries of connection errors, 429 and 5xx.
    llm_timeout: float = 120.0
    llm_max_retries: int = 2
    #: A chat turn ends after this many model calls, or this many tokens.
    max_steps: int = 30
    max_turn_tokens: int = 400_000
    #: Characters of one tool result the model sees; the rest is cut with a marker.
    max_tool_result_chars: int = 24_000

    @property
    def conversations_path(self) -> Path:
        return self.home / "conversations.sqlite3"
