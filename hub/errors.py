"""The errors of the typed Python API (:meth:`hub.WorkspaceHub.call`), under one base class.

The registry raises :class:`CallTimeout`, :class:`WorkspaceGone` and
:class:`AmbiguousName` too, so a host application catches
:class:`WorkspaceError` for all of them. Nothing here imports FastAPI.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import error_name


class WorkspaceError(Exception):
    """Base class of every error a call on a workspace raises."""


class WorkspaceNotFound(WorkspaceError):
    """No connected workspace has that id or name."""

    def __init__(self, workspace: str) -> None:
        super().__init__(f"no connected workspace {workspace!r}")
        self.workspace = workspace


class AmbiguousName(WorkspaceError):
    """Several connected workspaces have the name a caller used."""

    def __init__(self, name: str, ids: list[str]) -> None:
        super().__init__(
            f"{len(ids)} connected workspaces are named {name!r}; use one of their ids: {sorted(ids)}"
        )
        self.ids = ids


class UnknownTool(WorkspaceError):
    """The hub knows no tool of that name."""

    def __init__(self, tool: str, known: list[str]) -> None:
        super().__init__(f"no tool {tool!r}; the tools are {sorted(known)}")
        self.tool = tool


class InvalidParams(WorkspaceError):
    """The params do not validate against the tool's model; ``errors`` has one entry per field."""

    def __init__(self, tool: str, errors: list[dict[str, Any]]) -> None:
        problems = "; ".join(f"{'.'.join(e['loc']) or '(params)'}: {e['msg']}" for e in errors)
        super().__init__(f"invalid params for {tool}: {problems}")
        self.tool = tool
        self.errors = errors


class ToolError(WorkspaceError):
    """The client answered with an error (a refused path, a refused command, a partial read...).

    ``data`` keeps the rest of the answer: for a ``read_files`` with some paths
    that failed, ``data["files"]`` holds the files that were read.
    """

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data: dict[str, Any] = data or {}

    @property
    def name(self) -> str:
        """The code's short name: ``"path_outside_root"``, ``"partial_failure"``..."""
        return error_name(self.code)


class CallTimeout(WorkspaceError):
    """No answer within the call's timeout (the request is withdrawn from the client)."""


class WorkspaceGone(WorkspaceError):
    """The client went away before answering."""


class RequestTooLarge(WorkspaceError):
    """The request, encoded, is larger than a client accepts (``MAX_REQUEST_FRAME_BYTES``)."""


class WorkspaceBusy(WorkspaceError):
    """The workspace has as many calls in flight as the hub allows; try again when one ends."""


class KeyInFlight(WorkspaceError):
    """A call with the same idempotency key is still waiting on this workspace; retry when it ends."""


class HubShuttingDown(WorkspaceGone):
    """The hub is shutting down: the call was not sent, or not answered before the drain ended.

    A REST caller gets 503 with ``Retry-After``; a call with an idempotency key
    keeps running on the client and a retry with the key, once the hub is back,
    gets its result.
    """


class KeyUnsupported(WorkspaceError):
    """An idempotency key for a workspace whose client cannot honour it (it does not resume
    sessions: a typed-envelope client, say), so a retry would run the work again."""
