"""The ``/ws/workspace`` route: handshake, then frames in and out of one workspace.

1. The client is authorized on the HTTP upgrade (the hub's token, or the host
   application's own check), before ``accept``: a refused client never gets a
   WebSocket (closing before accept is an HTTP 403).
2. The client must send ``initialize`` first, in either framing, within the
   handshake timeout; anything else closes the socket with 1008 and a reason.
3. Then every frame is decoded in the connection's framing: answers go to
   the calls waiting for them, anything else gets an error answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from hub.errors import HubShuttingDown, WorkspaceGone
from hub.registry import Registry, Send, Workspace
from hub.sessions import SessionSigner
from hub.settings import HubSettings
from schemas.errors import ErrorCode
from schemas.framing import Framing, decode_frame, decode_value, detect_framing, encode_frame, load_json
from schemas.jsonrpc import (
    ErrorResponse,
    Malformed,
    Message,
    Notification,
    Request,
    Response,
    error_response,
)
from schemas.protocol import CLOSE_POLICY_VIOLATION
from schemas.tools import InitializeParams

log = logging.getLogger("aihub.hub")

HUB_VERSION = "aihub/0.1"
#: What callers are told when the hub stops under them.
SHUTTING_DOWN = (
    "the hub is shutting down; retry in a moment (a call made with an Idempotency-Key keeps "
    "running on the client, and a retry with the same key gets its result)"
)


class HandshakeFailed(Exception):
    def __init__(
        self, reason: str, answer: ErrorResponse | None = None, framing: Framing | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer
        self.framing = framing


async def _receive_text(ws: WebSocket) -> str | bytes | None:
    """The next frame's data, or ``None`` when the client disconnected."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        ws.state.close_code = message.get("code", 1005)
        return None
    text: str | None = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"")


async def _handshake(ws: WebSocket, timeout: float) -> tuple[Framing, Request, InitializeParams]:
    try:
        async with asyncio.timeout(timeout):
            frame = await _receive_text(ws)
    except TimeoutError:
        raise HandshakeFailed(f"no initialize within {timeout:g} s") from None
    if frame is None:
        raise WebSocketDisconnect()
    if isinstance(frame, bytes):
        raise HandshakeFailed("expected initialize as a JSON text frame, got a binary frame")
    value = load_json(frame)
    framing = detect_framing(value)
    if isinstance(value, Malformed) or framing is None:
        raise HandshakeFailed("expected initialize as JSON-RPC 2.0 or a typed envelope")
    message = decode_value(value, framing)
    if not isinstance(message, Request) or message.method != "initialize":
        answer_id = (
            message.id if isinstance(message, Malformed | Request | Response | ErrorResponse) else None
        )
        reason = "the first message must be an initialize request"
        raise HandshakeFailed(reason, error_response(answer_id, ErrorCode.INVALID_REQUEST, reason), framing)
    try:
        params = InitializeParams.model_validate(message.params or {})
    except ValidationError as exc:
        reason = "initialize: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise HandshakeFailed(
            reason, error_response(message.id, ErrorCode.INVALID_PARAMS, reason), framing
        ) from None
    return framing, message, params


def build_router(
    registry: Registry,
    settings: HubSettings,
    authorize: Callable[[WebSocket], Awaitable[bool]],
) -> APIRouter:
    router = APIRouter()
    sessions = SessionSigner(settings.home)

    @router.websocket("/ws/workspace")
    async def workspace_socket(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if origin is not None and origin not in settings.allowed_origins:
            # Before any credential check: a page in the user's browser must not get this far.
            log.warning(
                "refusing a workspace connection from origin %r (not in the allowed origins)", origin[:200]
            )
            await ws.close(code=CLOSE_POLICY_VIOLATION, reason="origin not allowed")
            return
        if not await authorize(ws):
            await ws.close(code=CLOSE_POLICY_VIOLATION, reason="missing or wrong token")
            return
        await ws.accept()
        try:
            framing, request, params = await _handshake(ws, settings.handshake_timeout)
        except HandshakeFailed as exc:
            log.info("refusing a workspace connection: %s", exc.reason)
            if exc.answer is not None and exc.framing is not None:
                with contextlib.suppress(Exception):
                    await ws.send_text(encode_frame(exc.answer, exc.framing, method="initialize"))
            with contextlib.suppress(Exception):
                await ws.close(code=CLOSE_POLICY_VIOLATION, reason=exc.reason[:120])
            return
        except WebSocketDisconnect:
            return

        if registry.closed or registry.draining:  # a 1012 (not a refusal): the client tries again later
            with contextlib.suppress(Exception):
                await ws.close(code=status.WS_1012_SERVICE_RESTART, reason="the hub is shutting down")
            return
        if len(registry) >= settings.max_workspaces:  # 1013: the client tries again later
            log.warning("refusing a workspace: the hub holds its maximum of %d", settings.max_workspaces)
            with contextlib.suppress(Exception):
                await ws.close(
                    code=status.WS_1013_TRY_AGAIN_LATER,
                    reason=f"the hub holds its maximum of {settings.max_workspaces} workspaces",
                )
            return

        send_lock = asyncio.Lock()

        async def send(text: str) -> None:
            async with send_lock:
                try:
                    await ws.send_text(text)
                except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                    # Starlette's errors stay here: the registry knows only WorkspaceGone.
                    raise WorkspaceGone("the workspace's client is no longer connected") from exc

        async def close_socket(code: int, reason: str) -> None:
            async with send_lock:
                if ws.application_state is WebSocketState.CONNECTED:
                    with contextlib.suppress(Exception):
                        await ws.close(code=code, reason=reason[:120])

        resume = params.resume and framing is Framing.JSONRPC
        claimed = sessions.verify(params.session) if resume and params.session else None
        workspace = registry.get(claimed) if claimed else None
        if workspace is not None and (not workspace.resumable or workspace.name != params.workspace):
            workspace, claimed = None, None  # not the same client's workspace: a new one, a new id
        resumed = workspace is not None
        if workspace is not None:
            await workspace.reattach(send, close_socket)
            if registry.draining:  # the drain began while it reattached: it takes no new call
                workspace.refusing = workspace.refusing or SHUTTING_DOWN
            log.info("workspace %s (%r) reconnected", workspace.id, workspace.name)
        else:
            workspace = Workspace(
                max_in_flight=settings.max_in_flight,
                name=params.workspace,
                framing=framing,
                send=send,
                client=params.client,
                tools=params.tools,
                close_socket=close_socket,
                resumable=resume,
            )
            if claimed is not None:  # the hub restarted: the workspace keeps its id
                workspace.id = claimed
            registry.add(workspace)
            log.info("workspace %s (%r) connected, framing %s", workspace.id, workspace.name, framing.value)
        connection = workspace.connection
        result: dict[str, object] = {"workspace_id": workspace.id, "hub": HUB_VERSION}
        if resume:
            result |= {"session": sessions.issue(workspace.id), "epoch": workspace.epoch}
        try:
            await send(encode_frame(Response(id=request.id, result=result), framing, method="initialize"))
            if resumed:
                await workspace.replay()
            await _pump(ws, workspace, send)
        except (WebSocketDisconnect, WorkspaceGone):
            pass
        finally:
            close_code = getattr(ws.state, "close_code", 1006)
            if workspace.connection != connection:
                pass  # a newer connection of the same client took over
            elif registry.draining or close_code == status.WS_1012_SERVICE_RESTART:
                # The server is stopping (uvicorn closes every socket with 1012): the calls still
                # waiting are answered now (503), not left to be cut off with the connection.
                registry.remove(workspace)
                workspace.fail_all(SHUTTING_DOWN, HubShuttingDown)
                log.info("workspace %s (%r) closed: the hub is shutting down", workspace.id, workspace.name)
            elif (
                workspace.resumable
                and not registry.closed
                and settings.resume_grace > 0
                # 1000/1001: the client left on purpose (stopped): no point waiting for it.
                and close_code not in (1000, 1001)
            ):
                gone = workspace

                def expire() -> None:
                    if not gone.attached:
                        registry.remove(gone)
                        gone.fail_all("the workspace's client did not come back")
                        log.info("workspace %s (%r) is gone", gone.id, gone.name)

                workspace.detach(settings.resume_grace, expire)
                log.info("workspace %s (%r) disconnected; it may come back", workspace.id, workspace.name)
            else:
                registry.remove(workspace)
                workspace.fail_all("the workspace's client disconnected before answering")
                log.info("workspace %s (%r) disconnected", workspace.id, workspace.name)
            if ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close()

    return router


async def _pump(ws: WebSocket, workspace: Workspace, send: Send) -> None:
    """Read frames until the client goes away."""
    while True:
        frame = await _receive_text(ws)
        if frame is None:
            return
        if isinstance(frame, bytes):
            await send(
                encode_frame(
                    error_response(None, ErrorCode.INVALID_REQUEST, "binary frames are not accepted"),
                    workspace.framing,
                )
            )
            continue
        message: Message | Malformed = decode_frame(frame, workspace.framing)
        if isinstance(message, Response | ErrorResponse):
            workspace.on_answer(message)
        elif isinstance(message, Request):
            await send(
                encode_frame(
                    error_response(
                        message.id, ErrorCode.METHOD_NOT_FOUND, f"the hub serves no method {message.method!r}"
                    ),
                    workspace.framing,
                    method=message.method,
                )
            )
        elif isinstance(message, Notification):
            workspace.on_notification(message)
        else:
            log.info("workspace %s: malformed frame: %s", workspace.id, message.message)
            if message.id is not None and workspace.is_waiting(message.id):
                # A broken answer still ends the call it was meant for, rather than a timeout.
                workspace.on_answer(
                    error_response(
                        message.id,
                        ErrorCode.INTERNAL_ERROR,
                        f"malformed answer from the client: {message.message}",
                    )
                )
            else:  # JSON-RPC answers a parse error with id null; answers are never answered back
                await send(
                    encode_frame(error_response(message.id, message.code, message.message), workspace.framing)
                )
