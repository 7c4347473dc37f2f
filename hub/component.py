"""The workspace hub as one component, to mount in any FastAPI application.

    workspaces = WorkspaceHub(settings)
    app = FastAPI(lifespan=workspaces.lifespan)
    app.include_router(workspaces.router, prefix="/ai")

It holds the registry of connected workspaces, the chat service, the routes
(``/ws/workspace`` and ``/api/...``) and their auth: the hub's bearer token, or
the host application's own checks (``authorize_client`` for the WebSocket,
``api_auth`` for REST). Besides REST, the host gets a typed Python API:
:meth:`WorkspaceHub.call` and :meth:`WorkspaceHub.tools_for_llm`.
``aihub serve`` is this component in a small app of its own (hub/app.py).
docs/embedding.md is the guide.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, NamedTuple, overload

from fastapi import APIRouter, HTTPException, Request, WebSocket, status
from pydantic import ValidationError

from hub import api, chat, workspace
from hub.auth import ClientTokens, bearer_matches
from hub.conversations import Conversations
from hub.errors import InvalidParams, ToolError, UnknownTool, WorkspaceError, WorkspaceNotFound
from hub.llm.factory import make_model, model_config
from hub.llm.loop import OnOutput, fit_result, parse_call
from hub.llm.model import ChatModel, ToolCall
from hub.registry import Registry, Workspace
from hub.settings import HubSettings
from schemas.errors import ErrorCode
from schemas.jsonrpc import ErrorResponse
from schemas.protocol import idempotency_key_problem
from schemas.tools import (
    TOOLS,
    ExecuteCommandResult,
    ListFilesResult,
    ReadFilesResult,
    Result,
    WriteFileResult,
    validation_errors,
)

log = logging.getLogger("aihub.hub")

#: The host's check of a workspace connection, from its handshake (headers, client address),
#: before the WebSocket is accepted: True lets it in. May be sync or async.
ClientAuthorizer = Callable[[WebSocket], bool | Awaitable[bool]]
#: Seconds :meth:`WorkspaceHub.aclose` gives running chat turns, then clients, to end.
SHUTDOWN_TIMEOUT_S = 5.0
SHUTDOWN_REASON = "the hub is shutting down"


class OneLineFrameErrors(logging.Filter):
    """uvicorn logs a whole traceback for each text frame that is not UTF-8 (then closes with
    1007): any client could fill the hub's log with them. One line each is enough."""

    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.MESSAGE and record.exc_info:
            record.exc_info, record.exc_text = None, None
            record.msg = "a client sent a text frame that is not UTF-8; its connection is closed (1007)"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_frame_errors() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OneLineFrameErrors) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(OneLineFrameErrors())


class LlmTools(NamedTuple):
    """One workspace's tools for the host's own tool-calling loop: ``tools, execute = ...``."""

    #: The tools the workspace serves, in the Chat Completions function-calling format.
    tools: list[dict[str, Any]]
    #: ``await execute(name, arguments_json_text)``: the content of the ``{"role": "tool"}``
    #: message. Never raises for the model's mistakes or a tool's failure: they are error text.
    execute: Callable[[str, str], Awaitable[str]]


def _error(message: str) -> dict[str, Any]:
    return {"status": "error", "error_message": message}


class WorkspaceHub:
    """Routes, registry, auth, lifespan and the typed Python API of the workspace hub.

    ``authorize_client`` decides who may connect a workspace (it gets the
    Starlette ``WebSocket`` before accept; False refuses with HTTP 403);
    ``api_auth`` is a FastAPI dependency run on every REST route instead of the
    token check. Without them, the hub's bearer token (``settings.token``) is
    checked; ``settings.token`` may be None only when both are given.
    """

    def __init__(
        self,
        settings: HubSettings,
        model: ChatModel | None = None,
        *,
        authorize_client: ClientAuthorizer | None = None,
        api_auth: Callable[..., Any] | None = None,
    ) -> None:
        if not settings.token and (authorize_client is None or api_auth is None):
            raise ValueError(
                "HubSettings.token is empty: give the hub a token, or give WorkspaceHub both "
                "authorize_client and api_auth (your application's own checks for clients and REST)"
            )
        self.settings = settings
        _quiet_frame_errors()
        self.registry = Registry()
        #: A model given by the caller stays the caller's to close; one made here is closed by aclose.
        self._owns_model = model is None
        if model is None:
            config = model_config({}, settings.llm_base_url, settings.llm_model, settings.llm_api_key)
            if config is not None:
                model = make_model(config, timeout=settings.llm_timeout, max_retries=settings.llm_max_retries)
        self.model = model
        self.conversations = Conversations(settings.conversations_path)
        self.chat = chat.ChatService(self.registry, settings, model, self.conversations)
        self._client_check = authorize_client
        #: Tokens that connect a workspace but open no REST route (``aihub token create``).
        self.client_tokens = ClientTokens(settings.home)
        self._closed = False
        rest_auth = api_auth or self.require_token
        self.router = APIRouter()
        self.router.include_router(workspace.build_router(self.registry, settings, self.authorize_client))
        self.router.include_router(api.build_router(self.registry, settings, rest_auth))
        self.router.include_router(chat.build_router(self.registry, self.chat, rest_auth))

    # --- auth ---------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the hub's token."""
        return bearer_matches(header, self.settings.token or "")

    async def require_token(self, request: Request) -> None:
        """FastAPI dependency: 401 unless the request carries the hub's bearer token."""
        if not self.authorized(request.headers.get("authorization")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def authorize_client(self, ws: WebSocket) -> bool:
        """Whether a WebSocket may connect a workspace: the host's check, else the hub's token."""
        if self._client_check is None:
            header = ws.headers.get("authorization")
            if self.authorized(header):
                return True
            name = self.client_tokens.match(header)
            if name is not None:
                log.info("a client connects with the client token %r", name)
            return name is not None
        try:
            verdict = self._client_check(ws)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:  # a failing check refuses, never lets in
            log.exception("authorize_client failed; refusing the connection")
            return False
        return bool(verdict)

    # --- lifespan -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=workspaces.lifespan)``, or ``async with workspaces.lifespan(app):``
        inside the host's own lifespan. On exit: :meth:`aclose`."""
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the running chat turns, close every workspace (code 1012 to its client, which
        reconnects later; its waiting calls fail with HubShuttingDown, a WorkspaceGone), close
        the model this hub made and the conversation store. New connections are then turned
        away (1012). Call :meth:`drain` first to let the calls in flight finish."""
        if self._closed:
            return
        self._closed = True
        await self.chat.stop(SHUTDOWN_TIMEOUT_S)
        await self.registry.close(status.WS_1012_SERVICE_RESTART, SHUTDOWN_REASON, SHUTDOWN_TIMEOUT_S)
        aclose = getattr(self.model, "aclose", None) if self._owns_model else None
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.exception("cannot close the model's client")
        self.conversations.close()

    async def drain(self, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> int:
        """The first step of a graceful shutdown, before the server closes its connections.

        New calls are refused (:class:`~hub.errors.HubShuttingDown`: 503 over REST) and new
        workspaces turned away (1012); the calls in flight get up to ``timeout`` seconds to be
        answered. Calls still waiting then are answered with HubShuttingDown, and their work
        is withdrawn from the client unless they carry an idempotency key (a retry with the
        key, once the hub is back, gets the result). Returns how many calls were given up.
        ``aihub serve`` runs this on SIGTERM/Ctrl-C, for ``--drain-timeout`` seconds.
        """
        left = await self.registry.drain(timeout, workspace.SHUTTING_DOWN, should_stop)
        if left:
            log.warning("shutting down: %d call(s) still running were given up", left)
        return left

    # --- the typed Python API -----------------------------------------------

    def connected(self) -> list[dict[str, Any]]:
        """The connected workspaces, as ``GET /api/workspaces`` lists them (``id``, ``name``...)."""
        return [w.describe() for w in self.registry.all()]

    def _find(self, workspace: str) -> Workspace:
        found = self.registry.find(workspace)
        if found is None:
            raise WorkspaceNotFound(workspace)
        return found

    @overload
    async def call(
        self,
        workspace: str,
        tool: Literal["list_files"],
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> ListFilesResult: ...
    @overload
    async def call(
        self,
        workspace: str,
        tool: Literal["read_files"],
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> ReadFilesResult: ...
    @overload
    async def call(
        self,
        workspace: str,
        tool: Literal["execute_command"],
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> ExecuteCommandResult: ...
    @overload
    async def call(
        self,
        workspace: str,
        tool: Literal["write_file"],
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> WriteFileResult: ...
    @overload
    async def call(
        self,
        workspace: str,
        tool: str,
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Result: ...
    async def call(
        self,
        workspace: str,
        tool: str,
        /,
        *,
        call_timeout: float | None = None,
        on_output: OnOutput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Result:
        """Call ``tool`` on a workspace (by id or name) and return its result model
        (``TOOLS[tool].result``: ``ReadFilesResult`` for ``read_files``...).

        ``params`` are the tool's own (``files=[...]``; ``timeout=`` is execute_command's).
        ``call_timeout`` is how long to wait for the answer (default: as REST waits);
        ``on_output(stream, text)`` receives a command's output as it prints.
        ``idempotency_key`` makes the call safe to retry (see ``Idempotency-Key`` in
        docs/protocol.md): the client runs it once, and a later call with the key gets
        the first run's result, also after a hub restart; such a call is not withdrawn
        when cancelled.
        Raises :class:`~hub.errors.WorkspaceNotFound`, :class:`~hub.errors.AmbiguousName`,
        :class:`~hub.errors.UnknownTool`, :class:`~hub.errors.InvalidParams`,
        :class:`~hub.errors.ToolError` (the client's error answer, partial data kept),
        :class:`~hub.errors.CallTimeout`, :class:`~hub.errors.WorkspaceGone` (and its
        :class:`~hub.errors.HubShuttingDown`), :class:`~hub.errors.WorkspaceBusy`,
        :class:`~hub.errors.KeyInFlight`, :class:`~hub.errors.KeyUnsupported` or
        :class:`~hub.errors.RequestTooLarge`, all
        :class:`~hub.errors.WorkspaceError`. Cancelling the caller withdraws the request
        (unless it has an idempotency key).
        """
        target = self._find(workspace)
        spec = TOOLS.get(tool)
        if spec is None:
            raise UnknownTool(tool, list(TOOLS))
        try:
            validated = spec.params.model_validate(params)
        except ValidationError as exc:
            raise InvalidParams(tool, validation_errors(exc)) from None
        if idempotency_key is not None and (problem := idempotency_key_problem(idempotency_key)):
            raise InvalidParams(tool, [{"loc": ["idempotency_key"], "msg": problem, "type": "value_error"}])
        answer = await target.call(
            tool,
            validated.model_dump(exclude_unset=True),
            timeout=call_timeout if call_timeout is not None else api.call_timeout(self.settings, validated),
            on_event=chat.output_listener(on_output) if on_output is not None else None,
            idempotency_key=idempotency_key,
        )
        if isinstance(answer, ErrorResponse):
            data = answer.error.data
            rest = data if isinstance(data, dict) else ({} if data is None else {"data": data})
            raise ToolError(answer.error.code, answer.error.message, rest)
        try:
            return spec.result.model_validate(answer.result)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in validation_errors(exc))
            raise ToolError(
                ErrorCode.INTERNAL_ERROR,
                f"malformed answer from the client to {tool}: {problems}",
                {"result": answer.result},
            ) from None

    def tools_for_llm(self, workspace: str) -> LlmTools:
        """The tools a workspace (by id or name) serves, and an executor for the model's calls.

        Raises :class:`~hub.errors.WorkspaceNotFound` or :class:`~hub.errors.AmbiguousName`
        now; later, a workspace gone is an error text the executor answers.
        """
        tools = chat.WorkspaceTools(self._find(workspace), self.settings).tools()
        served = {t["function"]["name"] for t in tools}
        budget = self.settings.max_tool_result_chars

        async def execute(name: str, arguments: str) -> str:
            return fit_result(await self._execute(workspace, served, name, arguments), budget, name)

        return LlmTools(tools, execute)

    async def _execute(self, workspace: str, served: set[str], name: str, arguments: str) -> dict[str, Any]:
        """The typed-envelope payload of one model's call, as the chat loop answers it."""
        if name not in served:
            return _error(f"there is no tool {name!r}; the tools are: {', '.join(sorted(served))}")
        params, _shown, problem = parse_call(ToolCall("", name, arguments))
        if params is None:
            return _error(problem or "invalid call")
        try:
            target = self._find(workspace)
        except WorkspaceError as exc:
            return _error(str(exc))
        try:
            return await chat.WorkspaceTools(target, self.settings).run(name, params, lambda _s, _t: None)
        except Exception:  # a bug of ours is the model's error text too, never the host's crash
            log.exception("tool call %s failed in the hub", name)
            return _error("the hub failed this tool call (see its log)")
