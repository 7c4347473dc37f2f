"""The workspace hub as one component: settings, registry, auth and routes.

``aihub serve`` mounts it in its own small app (hub/app.py); a host
application can include ``WorkspaceHub(settings).router`` the same way.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from hub import api, workspace
from hub.auth import bearer_matches
from hub.registry import Registry
from hub.settings import HubSettings


class WorkspaceHub:
    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.registry = Registry()
        self.router = APIRouter()
        self.router.include_router(workspace.build_router(self.registry, settings, self.authorized))
        self.router.include_router(api.build_router(self.registry, settings, self.require_token))

    def authorized(self, header: str | None) -> bool:
        return bearer_matches(header, self.settings.token)

    async def require_token(self, request: Request) -> None:
        """FastAPI dependency: 401 unless the request carries the hub's bearer token."""
        if not self.authorized(request.headers.get("authorization")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
