"""The workspace hub: ``from hub import WorkspaceHub, HubSettings`` to mount it in a FastAPI app.

``WorkspaceHub`` (and FastAPI with it) is imported on first use, so that
importing a light module of the package (``hub.registry``, ``hub.errors``)
stays light. docs/embedding.md is the guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import (
    AmbiguousName,
    CallTimeout,
    HubShuttingDown,
    InvalidParams,
    KeyInFlight,
    KeyUnsupported,
    RequestTooLarge,
    ToolError,
    UnknownTool,
    WorkspaceBusy,
    WorkspaceError,
    WorkspaceGone,
    WorkspaceNotFound,
)
from hub.settings import HubSettings

if TYPE_CHECKING:
    from hub.component import LlmTools, WorkspaceHub

__all__ = [
    "AmbiguousName",
    "CallTimeout",
    "HubSettings",
    "HubShuttingDown",
    "InvalidParams",
    "KeyInFlight",
    "KeyUnsupported",
    "LlmTools",
    "RequestTooLarge",
    "ToolError",
    "UnknownTool",
    "WorkspaceBusy",
    "WorkspaceError",
    "WorkspaceGone",
    "WorkspaceHub",
    "WorkspaceNotFound",
]


def __getattr__(name: str) -> Any:
    if name in ("WorkspaceHub", "LlmTools"):
        from hub import component

        return getattr(component, name)
    raise AttributeError(f"module 'hub' has no attribute {name!r}")
