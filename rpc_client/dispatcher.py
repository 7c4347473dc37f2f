"""Serving the hub's requests: an explicit jsonrpcserver methods dict and a context object.

Every method validates its params with the models of ``schemas.tools`` and
turns failures into wire errors in one place (:func:`_serve`): our own
``RpcError`` keeps its code and message, a validation error becomes
INVALID_PARAMS with the field errors, anything else becomes INTERNAL_ERROR
with a generic message (the details go to the local log, never to the peer).

The methods of :data:`METHODS` are called directly (:func:`answer_request`), with
the answers jsonrpcserver would write; jsonrpcserver still answers the methods
it does not name (``Method not found``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from jsonrpcserver import Success, async_dispatch
from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.sentinels import NODATA
from pydantic import ValidationError

from rpc_client import commands, files, outputs, search
from rpc_client.audit import AuditLog, CallRecord
from rpc_client.checkpoints import Checkpoints
from rpc_client.confine import Confinement
from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules
from rpc_client.outputs import Spool
from rpc_client.policy import CommandPolicy
from rpc_client.sandbox import Sandbox
from rpc_client.scope import CURRENT, OutputStreamer, RequestScope
from rpc_client.terminal import printable
from schemas.errors import ErrorCode, RpcError, error_name
from schemas.framing import dump_json, load_json
from schemas.jsonrpc import (
    Malformed,
    Notification,
    Request,
    RequestId,
    error_response,
    parse_message,
    to_wire,
)
from schemas.tools import (
    EditFileParams,
    ExecuteCommandParams,
    ListFilesParams,
    Params,
    ReadFilesParams,
    ReadOutputParams,
    SearchFilesParams,
    UndoParams,
    WriteFileParams,
    validation_errors,
)

log = logging.getLogger("aihub.client")
P = TypeVar("P", bound=Params)


@dataclass
class ClientContext:
    """What every method needs: the sandbox, the policy and the limits."""

    sandbox: Sandbox
    policy: CommandPolicy
    limits: files.FileLimits = field(default_factory=files.FileLimits)
    output_cap: int = 1024 * 1024
    confinement: Confinement | None = None
    #: Where each request is recorded, and each write checkpointed (None: not kept).
    audit: AuditLog | None = None
    checkpoints: Checkpoints | None = None
    #: Where cut command output is kept in full for read_output (None: not kept).
    outputs: Path | None = None
    #: Paths hidden from the AI (secrets, .aihubignore) and never written (.git/).
    ignore: IgnoreRules = field(default_factory=lambda: IgnoreRules(list(DEFAULT_PATTERNS)))
    #: Commands running at once; more wait for a slot (within their own timeout).
    command_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    report: Callable[[str], None] = print
    #: Small reads run on the event loop (only for a project on a local file system: a network
    #: file system can hang a read, and that must not freeze the client).
    inline_reads: bool = False


def _validated(model: type[P], params: dict[str, Any]) -> P:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RpcError(
            ErrorCode.INVALID_PARAMS, "invalid params", {"errors": validation_errors(exc)}
        ) from None


def _shown(text: str) -> str:
    """:func:`printable`, without its character-by-character pass when nothing needs escaping."""
    return text if text.isprintable() else printable(text)


def _summary(method: str, params: dict[str, Any]) -> str:
    if method == "read_files" and isinstance(params.get("files"), list):
        names = [_shown(str(f)) for f in params["files"][:3]]
        more = len(params["files"]) - len(names)
        return ", ".join(names) + (f" (+{more})" if more > 0 else "")
    if method == "undo":
        return f"checkpoint {params.get('checkpoint', 'last')}"
    if method == "search_files":
        text = _shown(f"{params.get('pattern', '')!s} in {params.get('path', './')!s}")
        return text if len(text) <= 80 else text[:77] + "..."
    value = params.get("command", params.get("path", ""))
    text = _shown(str(value))
    return text if len(text) <= 80 else text[:77] + "..."


async def _serve(
    ctx: ClientContext,
    method: str,
    params: dict[str, Any],
    work: Callable[[CallRecord], Awaitable[dict[str, Any]]],
) -> Any:
    """Run one method, log one line and one audit record; the only place exceptions become wire errors."""
    started = time.monotonic()
    record = CallRecord(method, _summary(method, params))
    status = "ok"
    try:
        result = await work(record)
        for key in ("checkpoint", "exit_code", "bytes_written", "replacements"):
            if key in result:
                record.details[key] = result[key]
        return Success(result)
    except RpcError as exc:
        status = error_name(exc.code)
        if exc.code == ErrorCode.DENIED and record.decision == "allowed":
            record.decision = "refused"
        raise JsonRpcError(exc.code, exc.message, exc.data) from None
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    except Exception:
        status = "internal_error"
        log.exception("%s failed", method)
        raise JsonRpcError(
            ErrorCode.INTERNAL_ERROR, f"{method} failed in the client (see the client's log)"
        ) from None
    finally:
        elapsed = (time.monotonic() - started) * 1000
        ctx.report(f"{time.strftime('%H:%M:%S')} {method} {record.summary} -> {status} ({elapsed:.1f} ms)")
        if ctx.audit is not None:
            try:
                ctx.audit.write(record, status, elapsed)
            except OSError as exc:  # a full disk must not take the answer with it
                log.warning("could not write the audit log: %s", exc.strerror)


def _in_thread(fn: Callable[..., dict[str, Any]], *args: Any) -> Awaitable[dict[str, Any]]:
    return anyio.to_thread.run_sync(fn, *args)


async def list_files(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(ListFilesParams, params)
        scope = CURRENT.get()
        # The hub withdrew the request (its caller gave up): stop at the next folder.
        stop = None if scope is None else scope.cancelled.is_set
        return await _in_thread(lambda: files.list_files(ctx.sandbox, p, ctx.limits, ctx.ignore, stop=stop))

    return await _serve(ctx, "list_files", params, work)


#: A read_files of at most this many files, each at most this large, runs on the event loop when
#: the project is on a local file system: a worker thread's round trip costs more than the read.
INLINE_MAX_FILES = 8
INLINE_MAX_BYTES = 256 * 1024


@functools.lru_cache(maxsize=8)
def _inline_limits(limits: files.FileLimits) -> files.FileLimits:
    """``limits`` capped for the event loop's fast path (computed once per limits, not per call)."""
    return dataclasses.replace(limits, max_file_bytes=min(INLINE_MAX_BYTES, limits.max_file_bytes))


async def read_files(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(ReadFilesParams, params)
        if ctx.inline_reads and p.offset is None and p.limit is None and len(p.files) <= INLINE_MAX_FILES:
            try:
                return files.read_files(ctx.sandbox, p, _inline_limits(ctx.limits), ctx.ignore)
            except RpcError:
                pass  # a file too large for the fast path, or any failure: the thread reads it all again
        return await _in_thread(files.read_files, ctx.sandbox, p, ctx.limits, ctx.ignore)

    return await _serve(ctx, "read_files", params, work)


async def write_file(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(WriteFileParams, params)
        ctx.policy.check_write(p.path)
        return await _in_thread(files.write_file, ctx.sandbox, p, ctx.limits, ctx.ignore, ctx.checkpoints)

    return await _serve(ctx, "write_file", params, work)


async def edit_file(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(EditFileParams, params)
        ctx.policy.check_write(p.path)
        return await _in_thread(files.edit_file, ctx.sandbox, p, ctx.limits, ctx.ignore, ctx.checkpoints)

    return await _serve(ctx, "edit_file", params, work)


async def search_files(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(SearchFilesParams, params)
        scope = CURRENT.get()
        limits = ctx.limits
        return await _in_thread(
            lambda: search.search_files(
                ctx.sandbox,
                p,
                max_file_bytes=limits.max_search_file_bytes,
                max_answer_bytes=limits.max_answer_bytes,
                seconds=limits.search_seconds,
                rules=ctx.ignore,
                # The hub withdrew the request (its caller gave up): stop at the next file.
                stop=None if scope is None else scope.cancelled.is_set,
            )
        )

    return await _serve(ctx, "search_files", params, work)


async def undo(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(UndoParams, params)
        if ctx.policy.read_only:
            raise RpcError(ErrorCode.DENIED, "the client is read-only: undo is refused")
        if ctx.checkpoints is None:
            raise RpcError(ErrorCode.NOT_FOUND, "this client keeps no checkpoints")
        checkpoints = ctx.checkpoints

        def run() -> dict[str, Any]:
            with files.WRITES:  # not between another write's read and its rename
                return checkpoints.undo(
                    ctx.sandbox,
                    p.checkpoint,
                    max_bytes=ctx.limits.max_checkpoint_bytes,
                    guard=lambda rel: ctx.ignore.check_write(rel, rel),
                )

        return await _in_thread(run)

    return await _serve(ctx, "undo", params, work)


T = TypeVar("T")


async def _unless_withdrawn(
    scope: RequestScope | None, work: Awaitable[T], undo: Callable[[T], None] | None = None
) -> T:
    """``work``, unless the hub withdraws the request first (then CANCELLED, and the work is stopped).

    When the caller is cancelled (its timeout ran out), ``work`` is stopped too; had it
    finished just then, ``undo`` gives back what it got (a command slot).
    """
    task = asyncio.ensure_future(work)
    withdrawn = asyncio.ensure_future(scope.cancelled.wait() if scope is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({task, withdrawn}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        try:
            result = await task
        except BaseException:  # noqa: S110 - it was stopped, as asked
            pass
        else:
            if undo is not None:
                undo(result)
        raise
    finally:
        withdrawn.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise RpcError(ErrorCode.CANCELLED, "the request was withdrawn before the command started")
    return task.result()


async def execute_command(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(ExecuteCommandParams, params)
        # The timeout covers the user's approval, the wait for a slot and the run:
        # the hub gives up after it, so nothing may start later than that.
        deadline = time.monotonic() + p.timeout
        scope = CURRENT.get()
        record.decision = await _unless_withdrawn(
            scope, ctx.policy.check_command(p.command, approval_timeout=p.timeout)
        )
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                await _unless_withdrawn(
                    scope, ctx.command_slots.acquire(), lambda _: ctx.command_slots.release()
                )
        except TimeoutError:
            raise RpcError(
                ErrorCode.TIMEOUT,
                f"the command did not start within its {p.timeout:g} s timeout (all command slots busy)",
            ) from None
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RpcError(
                    ErrorCode.TIMEOUT,
                    f"the approval and the wait for a command slot took the command's whole {p.timeout:g} s timeout",
                )
            confinement = ctx.confinement
            if confinement is not None:
                # Ignored paths are masked for the command too: `cat .env` reads nothing.
                masked = await anyio.to_thread.run_sync(lambda: list(ctx.ignore.masked(ctx.sandbox.root)))
                confinement = confinement.masking(masked, ctx.ignore.frozen(ctx.sandbox.root))
            if scope is not None and scope.cancelled.is_set():
                raise RpcError(ErrorCode.CANCELLED, "the request was withdrawn before the command started")
            streamer = OutputStreamer(scope) if scope is not None else None
            spool = Spool(ctx.outputs) if ctx.outputs is not None else None

            def on_output(stream: str, chunk: bytes) -> None:
                nonlocal spool
                if streamer is not None:
                    streamer(stream, chunk)
                if spool is not None:
                    try:
                        spool.write(stream, chunk)
                    except OSError as exc:  # a full disk costs the full copy, not the answer
                        log.warning("cannot keep the command's full output: %s", exc.strerror)
                        spool.finish(keep=False)
                        spool = None

            kept = False
            try:
                result = await commands.run_command(
                    p.command,
                    cwd=ctx.sandbox.root,
                    timeout=remaining,
                    output_cap=ctx.output_cap,
                    confinement=confinement,
                    asked_timeout=p.timeout,
                    on_output=on_output,
                    cancelled=scope.cancelled if scope is not None else None,
                )
                if result.get("truncated") and spool is not None:
                    result["output_id"] = spool.id
                    kept = True
                return result
            except RpcError as exc:
                if isinstance(exc.data, dict) and exc.data.get("truncated") and spool is not None:
                    exc.data["output_id"] = spool.id
                    kept = True
                raise
            finally:
                if spool is not None:
                    spool.finish(keep=kept)
                if streamer is not None:
                    await streamer.close()
        finally:
            ctx.command_slots.release()

    return await _serve(ctx, "execute_command", params, work)


async def read_output(ctx: ClientContext, /, **params: Any) -> Any:
    async def work(record: CallRecord) -> dict[str, Any]:
        p = _validated(ReadOutputParams, params)
        if ctx.outputs is None:
            raise RpcError(ErrorCode.NOT_FOUND, "this client keeps no command output")
        folder = ctx.outputs
        return await _in_thread(outputs.read_output, folder, p.output_id, p.stream, p.offset, p.limit)

    return await _serve(ctx, "read_output", params, work)


METHODS: dict[str, Callable[..., Awaitable[Any]]] = {
    "list_files": list_files,
    "read_files": read_files,
    "search_files": search_files,
    "write_file": write_file,
    "edit_file": edit_file,
    "execute_command": execute_command,
    "undo": undo,
    "read_output": read_output,
}


async def dispatch(ctx: ClientContext, text: str) -> str:
    """Answer one JSON-RPC request text; ``""`` for a notification (send nothing, run nothing).

    The text is read by our own strict parser (no NaN, Infinity or 1e400 ids that no
    peer could read back), as the transport does, then served like its requests.
    """
    value = load_json(text)
    message = value if isinstance(value, Malformed) else parse_message(value)
    if isinstance(message, Request):
        return await dispatch_request(ctx, message)
    if isinstance(message, Notification):
        return ""
    if isinstance(message, Malformed):
        return dump_json(to_wire(error_response(message.id, message.code, message.message)))
    return dump_json(
        to_wire(error_response(None, ErrorCode.INVALID_REQUEST, "the client takes requests, not answers"))
    )


# jsonrpcserver binds params with inspect.signature on every call; a signature computed once
# and kept on the function is what inspect.signature returns first (a twentieth of a small call).
for _method in METHODS.values():
    _method.__signature__ = inspect.signature(_method)  # type: ignore[attr-defined]


def _checked(request: dict[str, Any]) -> dict[str, Any]:
    return request


def _error_wire(request_id: RequestId, code: int, message: str, data: Any) -> dict[str, Any]:
    """The answer jsonrpcserver writes for an error (``data`` left out when it was not given)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not NODATA:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


async def dispatch_request(ctx: ClientContext, request: Request) -> str:
    """Answer a request the transport has already parsed and checked (:func:`schemas.jsonrpc.parse_message`).

    A method of :data:`METHODS` is called here directly, with the answer jsonrpcserver
    would write for it (its dispatch, an Either chain and a task per request, was a
    third of the client's own cost per small call). Every method takes ``(ctx, /,
    **params)``, so binding by-name params cannot fail; its ``Success`` becomes the
    result, its ``JsonRpcError`` the error, and anything else jsonrpcserver's
    ``Internal error``. Any other method (-32601) still goes through jsonrpcserver.
    """
    answer = await answer_request(ctx, request)
    return answer if isinstance(answer, str) else dump_json(answer)


async def answer_request(ctx: ClientContext, request: Request) -> dict[str, Any] | str:
    """:func:`dispatch_request`'s answer, as the JSON object to write (or the text jsonrpcserver wrote)."""
    method = METHODS.get(request.method)
    if method is None:
        return await _through_jsonrpcserver(ctx, request)
    try:
        outcome = await method(ctx, **(request.params or {}))
    except JsonRpcError as exc:
        return _error_wire(request.id, exc.code, exc.message, exc.data)
    except Exception as exc:  # _serve turns every failure into a JsonRpcError; as jsonrpcserver does
        log.exception(exc)
        return _error_wire(request.id, ErrorCode.INTERNAL_ERROR, "Internal error", str(exc))
    return {"jsonrpc": "2.0", "result": outcome._value.result, "id": request.id}


async def _through_jsonrpcserver(ctx: ClientContext, request: Request) -> str:
    """jsonrpcserver's own dispatch (for what :data:`METHODS` does not name: Method not found).

    It binds the params and calls the method, but does not parse the text a second
    time nor check it again against its JSON Schema.
    """
    wire = request.model_dump(exclude_none=True)
    wire["jsonrpc"] = "2.0"
    response: str = await async_dispatch(
        "",
        methods=METHODS,
        context=ctx,
        serializer=dump_json,
        deserializer=lambda _text: wire,
        validator=_checked,
    )
    return response


__all__ = ["METHODS", "ClientContext", "answer_request", "dispatch", "dispatch_request"]
