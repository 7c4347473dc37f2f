"""An existing FastAPI application that adds workspaces, the way one adds a router.

It keeps its own routes (``/hello``, ``/projects/...``), its own auth (an
``X-Api-Key`` header for its users; one shared secret per client machine for
the workspace WebSocket) and its own lifespan. The workspace hub is mounted
under ``/ai``: clients connect to ``ws://HOST:PORT/ai/ws/workspace`` with
``aihub-client --token <their secret>``, and the hub's REST API is
``/ai/api/...`` behind the same ``X-Api-Key`` as everything else here.

Run it (from the repository root):

    EXAMPLE_API_KEYS=alice:k-alice EXAMPLE_CLIENT_SECRETS=laptop:s-laptop \\
        .venv/bin/uvicorn --factory examples.existing_app.app:app_from_env --port 8000
    .venv/bin/aihub-client --hub ws://127.0.0.1:8000/ai/ws/workspace --token s-laptop --root ~/code/proj
    curl -H 'X-Api-Key: k-alice' localhost:8000/projects/proj/files
"""

# No ``from __future__ import annotations``: the routes' Depends() annotations name
# functions local to create_app, which FastAPI can only see in evaluated annotations.
import hmac
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hub import (
    AmbiguousName,
    CallTimeout,
    HubSettings,
    InvalidParams,
    ToolError,
    UnknownTool,
    WorkspaceError,
    WorkspaceGone,
    WorkspaceHub,
    WorkspaceNotFound,
)

log = logging.getLogger("example")

#: How this application answers the hub's typed errors on its own routes.
ERROR_STATUS: dict[type[WorkspaceError], int] = {
    WorkspaceNotFound: 404,
    AmbiguousName: 409,
    UnknownTool: 404,
    InvalidParams: 422,
    ToolError: 422,
    CallTimeout: 504,
    WorkspaceGone: 502,
}


def _match(secrets: dict[str, str], presented: str) -> str | None:
    """Whose secret ``presented`` is (constant-time comparisons), or None."""
    found = None
    for owner, secret in secrets.items():
        if hmac.compare_digest(secret.encode(), presented.encode()):
            found = owner
    return found


class ToolCallBody(BaseModel):
    name: str
    arguments: str = "{}"


def create_app(api_keys: dict[str, str], client_secrets: dict[str, str], home: Path) -> FastAPI:
    """``api_keys``: {user: key} for ``X-Api-Key``; ``client_secrets``: {machine: secret} for clients."""

    async def current_user(x_api_key: Annotated[str | None, Header()] = None) -> str:
        """This application's own auth: every route but /hello, and the hub's REST routes too."""
        user = _match(api_keys, x_api_key or "")
        if user is None:
            raise HTTPException(401, "missing or wrong X-Api-Key")
        return user

    def authorize_client(ws: WebSocket) -> bool:
        """Who may connect a workspace: ``aihub-client --token S`` sends ``Authorization: Bearer S``."""
        scheme, _, secret = ws.headers.get("authorization", "").partition(" ")
        machine = _match(client_secrets, secret.strip()) if scheme.lower() == "bearer" else None
        log.info("workspace connection from %s: %s", ws.client, machine or "refused")
        return machine is not None

    # No hub token: both of the hub's checks are this application's own.
    workspaces = WorkspaceHub(
        HubSettings(home=home), authorize_client=authorize_client, api_auth=current_user
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.greeting = "hello"  # this application's own start-up: pools, caches...
        async with workspaces.lifespan(app):
            yield
        # After the hub closed its workspaces: this application's own shutdown.
        print(f"example: stopped; {len(workspaces.connected())} workspaces connected", flush=True)

    app = FastAPI(title="An existing AI Hub", lifespan=lifespan)
    app.include_router(workspaces.router, prefix="/ai")
    User = Annotated[str, Depends(current_user)]

    @app.exception_handler(WorkspaceError)
    async def workspace_error(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind))
        body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
        if isinstance(exc, ToolError):
            body["code"] = exc.name
        return JSONResponse(body, status_code=status)

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return {"message": f"{request.app.state.greeting} from the existing app"}

    @app.get("/projects")
    async def projects(user: User) -> list[dict[str, str]]:
        return [{"id": w["id"], "name": w["name"]} for w in workspaces.connected()]

    @app.get("/projects/{name}/files")
    async def files(name: str, user: User, path: str = "./") -> dict[str, Any]:
        listing = await workspaces.call(name, "list_files", path=path)  # a ListFilesResult
        return {"user": user, "paths": [entry.path for entry in listing.files if not entry.is_dir]}

    @app.get("/projects/{name}/file")
    async def read(name: str, path: str, user: User) -> dict[str, Any]:
        result = await workspaces.call(name, "read_files", files=[path])  # a ReadFilesResult
        return {"path": path, "content": result.files[path], "sha256": result.sha256.get(path)}

    @app.get("/projects/{name}/llm-tools")
    async def llm_tools(name: str, user: User) -> list[str]:
        tools, _execute = workspaces.tools_for_llm(name)
        return [tool["function"]["name"] for tool in tools]

    @app.post("/projects/{name}/llm-tool")
    async def llm_tool(name: str, call: ToolCallBody, user: User) -> dict[str, str]:
        """One step of this application's own tool-calling loop, which would go:

        tools, execute = workspaces.tools_for_llm(name)
        reply = await my_llm(messages, tools=tools)
        for c in reply.tool_calls:
            content = await execute(c.function.name, c.function.arguments)
            messages.append({"role": "tool", "tool_call_id": c.id, "content": content})
        """
        _tools, execute = workspaces.tools_for_llm(name)
        return {"content": await execute(call.name, call.arguments)}

    return app


def _pairs(variable: str) -> dict[str, str]:
    """``"alice:k1,bob:k2"`` as ``{"alice": "k1", "bob": "k2"}``."""
    pairs = dict(item.split(":", 1) for item in os.environ.get(variable, "").split(",") if ":" in item)
    if not pairs:
        raise RuntimeError(f"set {variable} to name:secret pairs, comma-separated")
    return pairs


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: EXAMPLE_API_KEYS, EXAMPLE_CLIENT_SECRETS, EXAMPLE_HOME."""
    home = Path(os.environ.get("EXAMPLE_HOME") or Path.home() / ".aihub-example")
    return create_app(_pairs("EXAMPLE_API_KEYS"), _pairs("EXAMPLE_CLIENT_SECRETS"), home)
