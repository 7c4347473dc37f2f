"""The app factory of ``aihub serve``: the workspace hub component in an app of its own."""

from __future__ import annotations

from fastapi import FastAPI

from hub.component import WorkspaceHub
from hub.settings import HubSettings


def create_app(settings: HubSettings) -> FastAPI:
    hub = WorkspaceHub(settings)
    # No /docs, /redoc or /openapi.json: they would be the only routes besides /healthz without auth.
    app = FastAPI(
        title="AI Hub Workspaces",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=hub.lifespan,
    )
    app.state.hub = hub

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "workspaces": len(hub.registry)}

    app.include_router(hub.router)
    return app
