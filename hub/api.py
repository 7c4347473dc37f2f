"""The REST routes for the AI side and for scripts.

``POST /api/workspaces/{id}/tools/{method}`` answers with the client's answer
in the typed-envelope payload form, so REST callers see the same shape the
original schema describes: ``{"status": "success", ...}`` or
``{"status": "error", "error_message": ..., "error_code": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from hub.errors import (
    AmbiguousName,
    CallTimeout,
    HubShuttingDown,
    KeyInFlight,
    KeyUnsupported,
    RequestTooLarge,
    WorkspaceBusy,
    WorkspaceGone,
)
from hub.registry import Registry, Workspace
from hub.settings import HubSettings
from schemas.envelope import error_payload, success_payload
from schemas.framing import dump_json, load_json
from schemas.jsonrpc import ErrorResponse, Malformed, Response
from schemas.protocol import OUTPUT_CHUNK, idempotency_key_problem
from schemas.tools import TOOLS, ExecuteCommandParams, Params, tools_for_llm, validation_errors

log = logging.getLogger("aihub.hub")
T = TypeVar("T")

IDEMPOTENCY_HELP = (
    "Makes the call safe to retry: the client runs it once and answers a later call with the same "
    "key (even after a hub restart, while it keeps the workspace) with the first run's answer. "
    "1 to 128 visible ASCII characters. A keyed call is not withdrawn when its caller hangs up."
)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it all when the length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def find_workspace(registry: Registry, workspace_id: str) -> Workspace:
    """The workspace a route names by id or name: 409 for a name several share, 404 for none."""
    try:
        workspace = registry.find(workspace_id)
    except AmbiguousName as exc:
        raise HTTPException(409, str(exc)) from None
    if workspace is None:
        raise HTTPException(404, f"no connected workspace {workspace_id!r}")
    return workspace


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object (empty: ``{}``); 413 past ``limit``, 422 when it is not an object."""
    raw = await _read_body(request, limit)
    body = load_json(raw) if raw.strip() else {}
    # The shape of every other 422 (and of FastAPI's declared HTTPValidationError): field errors.
    if isinstance(body, Malformed):
        raise HTTPException(
            422, [{"loc": ["body"], "msg": f"the body is {body.message}", "type": "json_invalid"}]
        )
    if not isinstance(body, dict):
        raise HTTPException(
            422, [{"loc": ["body"], "msg": "the body must be a JSON object", "type": "model_attributes_type"}]
        )
    return body


async def _disconnected(request: Request) -> None:
    """Returns when the caller hangs up (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the caller hangs up first, ``work`` is cancelled and :class:`CallerGone` raised.

    Cancelling a workspace call withdraws it from the client, so a command whose
    caller gave up is killed rather than left running.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise CallerGone
    return task.result()


class CallerGone(Exception):
    """The REST caller hung up before its answer was ready."""


#: What a route answers a caller that is gone (nginx's "client closed request"; nobody reads it).
CLIENT_CLOSED = 499


def answer_payload(answer: Response | ErrorResponse) -> dict[str, Any]:
    """The client's answer in the typed-envelope payload form."""
    if isinstance(answer, ErrorResponse):
        return error_payload(answer.error)
    return success_payload(answer.result)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dump_json(data)}\n\n"


async def _event_stream(
    workspace: Workspace, method: str, params: dict[str, Any], timeout: float, key: str | None
) -> AsyncIterator[str]:
    """Server-sent events: ``output`` as a command prints, then one ``result`` (or ``error``).

    When the caller goes away the stream is closed, the call is cancelled, and the
    hub withdraws the request from the client (the command is killed).
    """
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        # Live output only: any other notification naming the call is ignored (docs/protocol.md).
        stream, text = data.get("stream"), data.get("data")
        if kind == OUTPUT_CHUNK and stream in ("stdout", "stderr") and isinstance(text, str):
            events.put_nowait(("output", {"stream": stream, "data": text}))

    async def run() -> None:
        try:
            answer = await workspace.call(
                method, params, timeout=timeout, on_event=on_event, idempotency_key=key
            )
            events.put_nowait(("result", answer_payload(answer)))
        except CALL_ERRORS as exc:
            events.put_nowait(("error", {"status_code": http_error(exc).status_code, "detail": str(exc)}))
        except Exception:  # the stream must end whatever happens
            log.exception("%s: streaming call failed", method)
            events.put_nowait(
                ("error", {"status_code": 500, "detail": "the hub failed this call (see its log)"})
            )

    call = asyncio.create_task(run())
    try:
        while True:
            name, data = await events.get()
            yield _event(name, data)
            if name != "output":
                return
    finally:
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call


#: What a workspace call may raise that is the caller's answer, not the hub's failure.
CALL_ERRORS = (CallTimeout, WorkspaceGone, WorkspaceBusy, KeyInFlight, KeyUnsupported, RequestTooLarge)


def http_error(exc: Exception) -> HTTPException:
    """The HTTP answer to one of :data:`CALL_ERRORS` (the event stream sends its status too)."""
    if isinstance(exc, CallTimeout):
        return HTTPException(504, str(exc))
    if isinstance(exc, HubShuttingDown):  # before WorkspaceGone, its base class
        return HTTPException(503, str(exc), headers={"Retry-After": "2"})
    if isinstance(exc, WorkspaceGone):
        return HTTPException(502, str(exc))
    if isinstance(exc, WorkspaceBusy):
        return HTTPException(429, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, KeyInFlight):
        return HTTPException(409, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, KeyUnsupported):
        return HTTPException(
            422, [{"loc": ["header", "Idempotency-Key"], "msg": str(exc), "type": "value_error"}]
        )
    if isinstance(exc, RequestTooLarge):
        return HTTPException(413, str(exc))
    raise TypeError(f"not a call error: {exc!r}")


def call_timeout(settings: HubSettings, params: Params) -> float:
    """How long a caller waits: a command's own timeout plus a margin, else the file-call timeout."""
    if isinstance(params, ExecuteCommandParams):
        return params.timeout + settings.command_timeout_margin
    return settings.call_timeout


def build_router(registry: Registry, settings: HubSettings, require_token: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @router.get("/workspaces")
    async def list_workspaces() -> list[dict[str, Any]]:
        return [w.describe() for w in registry.all()]

    @router.get("/tools")
    async def list_tools() -> list[dict[str, Any]]:
        return tools_for_llm()

    @router.post("/workspaces/{workspace_id}/tools/{method}", response_model=None)
    async def call_tool(
        workspace_id: str,
        method: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header(description=IDEMPOTENCY_HELP)] = None,
    ) -> JSONResponse | StreamingResponse:
        workspace = find_workspace(registry, workspace_id)
        spec = TOOLS.get(method)
        if spec is None:
            raise HTTPException(404, f"no tool {method!r}; the tools are {sorted(TOOLS)}")
        body = await read_json_body(request, settings.max_body_bytes)

        try:
            params = spec.params.model_validate(body)
        except ValidationError as exc:
            raise HTTPException(
                422, [{**e, "loc": ["body", *e["loc"]]} for e in validation_errors(exc)]
            ) from None
        wire_params = params.model_dump(exclude_unset=True)
        timeout = call_timeout(settings, params)
        key = idempotency_key
        if key is not None and (problem := idempotency_key_problem(key)):
            raise HTTPException(
                422, [{"loc": ["header", "Idempotency-Key"], "msg": problem, "type": "value_error"}]
            )
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(
                _event_stream(workspace, method, wire_params, timeout, key),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        try:
            answer = await unless_disconnected(
                request, workspace.call(method, wire_params, timeout=timeout, idempotency_key=key)
            )
        except CALL_ERRORS as exc:
            raise http_error(exc) from None
        except CallerGone:
            return JSONResponse({"detail": "the caller hung up"}, CLIENT_CLOSED)
        return JSONResponse(answer_payload(answer))

    return router
