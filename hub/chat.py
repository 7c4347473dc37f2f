"""The chat routes: a user's message becomes a turn of the tool-calling loop on a workspace.

``POST /api/workspaces/{id}/chat`` answers when the turn ends (JSON) or streams
its events as they happen (``Accept: text/event-stream``); conversations are
kept in SQLite and listed by ``GET /api/conversations``. A running turn is
stopped by ``POST /api/conversations/{id}/cancel`` or, for a stream, by hanging
up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.api import (
    CLIENT_CLOSED,
    CallerGone,
    answer_payload,
    call_timeout,
    find_workspace,
    read_json_body,
    unless_disconnected,
)
from hub.conversations import Conversations, TurnRecorder
from hub.errors import CallTimeout, RequestTooLarge, WorkspaceBusy, WorkspaceGone
from hub.llm.loop import Emit, LoopLimits, OnOutput, Turn, TurnResult, system_prompt
from hub.llm.model import ChatModel, Message, ModelError
from hub.registry import OnEvent, Registry, Workspace
from hub.settings import HubSettings
from schemas.framing import dump_json
from schemas.protocol import OUTPUT_CHUNK
from schemas.tools import Params, tools_for_llm, validation_errors

log = logging.getLogger("aihub.hub")

#: What a client that names no tools at initialize serves: the original schema's four.
ORIGINAL_TOOLS = ("list_files", "read_files", "execute_command", "write_file")
MAX_MESSAGE_CHARS = 200_000
#: Characters of commands' output waiting for a stream's caller; past it, output is dropped (and
#: the caller told how much) rather than kept for a caller who does not read.
MAX_QUEUED_OUTPUT_CHARS = 1_000_000


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)


def output_listener(on_output: OnOutput) -> OnEvent:
    """A call's notifications to ``on_output(stream, text)``: a running command's output as it prints."""

    def on_event(method: str, data: dict[str, Any]) -> None:
        if method == OUTPUT_CHUNK and isinstance(data.get("data"), str):
            on_output(str(data.get("stream", "stdout")), data["data"])

    return on_event


@dataclass
class WorkspaceTools:
    """The loop's :class:`~hub.llm.loop.ToolRunner` for one connected workspace."""

    workspace: Workspace
    settings: HubSettings

    def tools(self) -> list[dict[str, Any]]:
        served = set(self.workspace.tools if self.workspace.tools is not None else ORIGINAL_TOOLS)
        return [t for t in tools_for_llm() if t["function"]["name"] in served]

    async def run(self, tool: str, params: Params, on_output: OnOutput) -> dict[str, Any]:
        try:
            answer = await self.workspace.call(
                tool,
                params.model_dump(exclude_unset=True),
                timeout=call_timeout(self.settings, params),
                on_event=output_listener(on_output),
            )
        except CallTimeout as exc:
            return {"status": "error", "error_message": str(exc)}
        except WorkspaceGone as exc:
            return {"status": "error", "error_message": f"the workspace's client is gone: {exc}"}
        except WorkspaceBusy as exc:
            return {"status": "error", "error_message": f"{exc}: make fewer calls at once"}
        except RequestTooLarge as exc:
            return {"status": "error", "error_message": str(exc)}
        return answer_payload(answer)


class EventQueue:
    """A turn's events waiting for its stream's caller.

    Every event is kept but commands' output, which the turn cannot slow down: past
    ``max_output`` characters waiting, a call's output is dropped until the caller
    catches up, and the caller then gets one ``output`` event saying how much.
    """

    def __init__(self, max_output: int = MAX_QUEUED_OUTPUT_CHARS) -> None:
        self.max_output = max_output
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._output = 0
        #: tool_call_id -> (stream, characters dropped)
        self._dropped: dict[Any, tuple[str, int]] = {}

    def put(self, name: str, data: dict[str, Any]) -> None:
        call = data.get("tool_call_id") if name == "output" else data.get("id")
        if name == "output":
            size = len(str(data.get("data", "")))
            if self._output + size > self.max_output:
                _, dropped = self._dropped.get(call, ("", 0))
                self._dropped[call] = (str(data.get("stream", "stdout")), dropped + size)
                return
        if call in self._dropped and name in ("output", "tool_result"):
            stream, dropped = self._dropped.pop(call)
            note = f"\n[... {dropped} characters of output not shown: they came faster than they were read ...]\n"
            self._put("output", {"tool_call_id": call, "stream": stream, "data": note})
        self._put(name, data)

    def _put(self, name: str, data: dict[str, Any]) -> None:
        if name == "output":
            self._output += len(str(data.get("data", "")))
        self._queue.put_nowait((name, data))

    def _taken(self, event: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        name, data = event
        if name == "output":
            self._output -= len(str(data.get("data", "")))
        return event

    def close(self) -> None:
        """No event after this one: :meth:`get` answers None once those put before are taken."""
        self._queue.put_nowait(None)

    async def get(self) -> tuple[str, dict[str, Any]] | None:
        event = await self._queue.get()
        return None if event is None else self._taken(event)

    def get_nowait(self) -> tuple[str, dict[str, Any]] | None:
        event = self._queue.get_nowait()
        return None if event is None else self._taken(event)

    def empty(self) -> bool:
        return self._queue.empty()


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The conversation store failing (locked by another process, a full disk...) is a 503 that says so."""
    try:
        yield
    except sqlite3.Error as exc:
        log.error("the conversation store failed: %s", exc)
        raise HTTPException(503, f"the hub cannot use its conversation store: {exc}") from None


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dump_json(data)}\n\n"


def turn_answer(conversation_id: str, result: TurnResult) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "reply": result.reply,
        "steps": [step.as_dict() for step in result.steps],
        "usage": result.usage.as_dict(),
        "stop_reason": result.stop_reason,
    }


class ChatService:
    """Runs turns, at most one at a time per conversation, and cancels them on request."""

    def __init__(
        self, registry: Registry, settings: HubSettings, model: ChatModel | None, store: Conversations
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.model = model
        self.store = store
        self.running: dict[str, asyncio.Task[TurnResult]] = {}
        #: Set whenever no turn is running (each running turn is removed once its end is recorded).
        self._idle = asyncio.Event()

    def limits(self) -> LoopLimits:
        s = self.settings
        return LoopLimits(s.max_steps, s.max_turn_tokens, s.max_tool_result_chars)

    def begin(
        self, workspace: Workspace, request: ChatRequest, emit: Emit
    ) -> tuple[Turn, TurnRecorder, asyncio.Task[TurnResult]]:
        """Start a turn in a task of its own (so a cancel reaches it wherever it waits)."""
        if self.model is None:
            raise HTTPException(
                503,
                "no model is configured: start the hub with AIHUB_LLM_BASE_URL and AIHUB_LLM_MODEL "
                "(or --llm-base-url/--llm-model); see the README",
            )
        with store_errors():
            if request.conversation_id is None:
                conversation_id = self.store.create(workspace.name, self.model.name, request.message)
                history: list[Message] = []
            else:
                conversation_id = request.conversation_id
                if self.store.get(conversation_id) is None:
                    raise HTTPException(404, f"no conversation {conversation_id!r}")
                if conversation_id in self.running:
                    raise HTTPException(
                        409, f"conversation {conversation_id!r} has a turn running; cancel it or wait"
                    )
                history = self.store.history(conversation_id)
            recorder = self.store.begin_turn(conversation_id, workspace.id)
        runner = WorkspaceTools(workspace, self.settings)
        turn = Turn(self.model, runner, recorder, self.limits(), emit)
        system = system_prompt(workspace.name, runner.tools())
        task = asyncio.create_task(turn.run(history, request.message, system))
        self.running[conversation_id] = task
        return turn, recorder, task

    async def finish(self, turn: Turn, recorder: TurnRecorder, task: asyncio.Task[TurnResult]) -> TurnResult:
        """Wait for the turn and record how it ended; raises ModelError for the endpoint's failures."""
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # our caller is gone: so is its turn
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._end(turn, recorder, "cancelled", None)
            raise
        if task.cancelled():
            self._end(turn, recorder, "cancelled", None)
            return TurnResult("[Cancelled by the user.]", turn.steps, turn.usage, "cancelled")
        error = task.exception()
        if error is not None:
            self._end(turn, recorder, "error", str(error))
            if isinstance(error, ModelError):
                raise error
            log.error("a chat turn failed", exc_info=error)
            raise ModelError("the hub failed this turn (see its log)", status=None)
        result = task.result()
        self._end(turn, recorder, result.stop_reason, None)
        return result

    def _end(self, turn: Turn, recorder: TurnRecorder, reason: str, error: str | None) -> None:
        try:
            self.store.end_turn(recorder, reason, turn.usage, error)
        except Exception:
            log.exception("cannot record the end of a turn")
        finally:
            self.running.pop(recorder.conversation_id, None)
            if not self.running:
                self._idle.set()

    async def stop(self, timeout: float) -> None:
        """Cancel every running turn; wait up to ``timeout`` seconds until each one's end is recorded."""
        for task in self.running.values():
            task.cancel()
        if self.running:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._idle.wait()

    def cancel(self, conversation_id: str) -> bool:
        task = self.running.get(conversation_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True


def build_router(registry: Registry, service: ChatService, require_token: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def find(workspace_id: str) -> Workspace:
        return find_workspace(registry, workspace_id)

    @router.post("/workspaces/{workspace_id}/chat", response_model=None)
    async def chat(workspace_id: str, request: Request) -> JSONResponse | StreamingResponse:
        workspace = find(workspace_id)
        body = await read_json_body(request, service.settings.max_body_bytes)
        try:
            chat_request = ChatRequest.model_validate(body)
        except ValidationError as exc:
            raise HTTPException(
                422, [{**e, "loc": ["body", *e["loc"]]} for e in validation_errors(exc)]
            ) from None
        if registry.draining or workspace.refusing is not None:
            # Not begun: its tool calls would all be refused, and the model asked for nothing.
            raise HTTPException(
                503, "the hub is shutting down; send the message again in a moment", {"Retry-After": "2"}
            )
        if "text/event-stream" in request.headers.get("accept", ""):
            events = EventQueue()
            turn, recorder, task = service.begin(workspace, chat_request, events.put)
            return StreamingResponse(
                streamed_turn(service, turn, recorder, task, events),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        turn, recorder, task = service.begin(workspace, chat_request, lambda name, data: None)
        try:
            # A caller that hangs up cancels its turn, as a stream's caller does.
            result = await unless_disconnected(request, service.finish(turn, recorder, task))
        except ModelError as exc:
            raise HTTPException(502, exc.message) from None
        except CallerGone:
            return JSONResponse({"detail": "the caller hung up"}, CLIENT_CLOSED)
        return JSONResponse(turn_answer(recorder.conversation_id, result))

    @router.get("/conversations")
    async def list_conversations() -> list[dict[str, Any]]:
        with store_errors():
            return service.store.recent()

    @router.get("/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str) -> dict[str, Any]:
        with store_errors():
            detail = service.store.detail(conversation_id)
        if detail is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        detail["running"] = conversation_id in service.running
        return detail

    @router.post("/conversations/{conversation_id}/cancel")
    async def cancel(conversation_id: str) -> dict[str, Any]:
        with store_errors():
            known = service.store.get(conversation_id) is not None
        if not known:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        if not service.cancel(conversation_id):
            raise HTTPException(409, f"conversation {conversation_id!r} has no turn running")
        return {"conversation_id": conversation_id, "cancelled": True}

    return router


def streamed_turn(
    service: ChatService,
    turn: Turn,
    recorder: TurnRecorder,
    task: asyncio.Task[TurnResult],
    events: EventQueue,
) -> AsyncIterator[str]:
    """The body of a turn's event stream; the turn is waited for (and its end recorded) from now on.

    Not from the body itself: a body closed at its first event, or never started, would
    leave the turn unrecorded and its conversation busy (every later turn a 409).
    """
    finished = asyncio.ensure_future(service.finish(turn, recorder, task))
    finished.add_done_callback(lambda _: events.close())  # after every event the turn put
    return _stream(finished, task, turn, recorder, events)


async def _stream(
    finished: asyncio.Future[TurnResult],
    task: asyncio.Task[TurnResult],
    turn: Turn,
    recorder: TurnRecorder,
    events: EventQueue,
) -> AsyncIterator[str]:
    """``start``, the turn's events as they happen, then ``done`` or ``error``.

    ``finished`` is the turn's :meth:`ChatService.finish`, whose end closes ``events``.
    The caller hanging up closes this generator: the turn (``task``) is cancelled (its
    commands withdrawn), and ``finished`` records it as cancelled.
    """
    conversation_id = recorder.conversation_id
    try:
        yield _event(
            "start", {"conversation_id": conversation_id, "turn": recorder.turn, "model": turn.model.name}
        )
        ended = False
        while not ended and (event := await events.get()) is not None:
            # The events already waiting go out in the same write (a model's chunks often
            # come several to a read).
            written = [_event(*event)]
            while not events.empty():
                waiting = events.get_nowait()
                if waiting is None:
                    ended = True
                    break
                written.append(_event(*waiting))
            yield "".join(written)
        try:
            result = finished.result()
        except ModelError as exc:
            yield _event(
                "error", {"status_code": 502, "detail": exc.message, "conversation_id": conversation_id}
            )
            return
        yield _event("done", turn_answer(conversation_id, result))
    finally:
        if not finished.done():
            # The turn, not `finished`: cancelled before its first step, `finished` would record nothing.
            task.cancel()
            with contextlib.suppress(BaseException):
                await finished


__all__ = ["ChatService", "WorkspaceTools", "build_router", "output_listener"]
