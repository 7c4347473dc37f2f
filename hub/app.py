"""The app factory of ``aihub serve``."""

from __future__ import annotations

from fastapi import FastAPI

from hub.component import WorkspaceHub
from hub.settings import HubSettings


def create_app(settings: HubSettings) -> FastAPI:
    hub = WorkspaceHub(settings)
    app = FastAPI(title="AI Hub Workspaces", version="0.1.0")
    app.state.hub = hub

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "workspaces": len(hub.registry)}

    app.include_router(hub.router)
    return app
