"""The WebSocket side of the client: connect, handshake, serve, reconnect.

The only module that imports ``websockets``. Requests are served
concurrently, one task each, so a long command does not hold up a read. When
the hub goes away the client reconnects with exponential backoff and jitter;
a refused token or a refused handshake ends it instead (retrying cannot help).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import logging
import random
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from rpc_client.dispatcher import METHODS, ClientContext, answer_request
from rpc_client.errors import AuthRefused, ClientExit, HandshakeRefused, TlsRefused, UsageError
from rpc_client.ledger import KEYED, Key, Ledger, fingerprint, request_key
from rpc_client.scope import CURRENT, RequestScope
from schemas.errors import ErrorCode
from schemas.framing import Framing, decode_frame, dump_json, dump_json_bytes
from schemas.jsonrpc import (
    ErrorResponse,
    Malformed,
    Notification,
    Request,
    RequestId,
    Response,
    error_response,
    to_wire,
)
from schemas.protocol import CANCEL_REQUEST, HANDSHAKE_REFUSALS, HANDSHAKE_TIMEOUT_S, IDEMPOTENT_ID_PREFIX

log = logging.getLogger("aihub.client")

#: Largest frame the client accepts (a write_file of 8 MiB of text, escaped).
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Requests served at once; more are answered "busy" at once rather than queued.
MAX_IN_FLIGHT = 64
CLIENT_VERSION = "aihub-client/0.1"


@dataclass
class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [half, all] of the current step."""

    initial: float = 0.25
    factor: float = 2.0
    cap: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        step = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(step / 2, step)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class HubTarget:
    url: str
    token: str
    workspace: str
    #: For wss:// URLs: how the hub's certificate is verified (None: the system's trust store).
    ssl: ssl.SSLContext | None = None
    #: permessage-deflate: None offers it to a hub on another host only (:func:`compresses`).
    compress: bool | None = None


@dataclass(frozen=True)
class Session:
    """What the hub answered to ``initialize``."""

    workspace_id: str
    #: Presented at the next initialize to get the same workspace back (None: the hub does not resume).
    token: str | None
    #: The hub's numbering of requests for this workspace (see :mod:`rpc_client.ledger`).
    epoch: str


async def handshake(ws: ClientConnection, workspace: str, session: str | None = None) -> Session:
    """Send ``initialize`` (with the session of the previous connection, if any) and read the answer."""
    params: dict[str, Any] = {
        "workspace": workspace,
        "client": CLIENT_VERSION,
        "tools": sorted(METHODS),
        "resume": True,
    }
    if session is not None:
        params["session"] = session
    request = Request(id=0, method="initialize", params=params)
    await ws.send(dump_json(to_wire(request)))
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            while True:
                frame = await ws.recv()
                answer = decode_frame(frame, Framing.JSONRPC)
                if isinstance(answer, Response | ErrorResponse) and answer.id == 0:
                    break
                log.warning("ignoring a frame before the handshake answer")
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code in HANDSHAKE_REFUSALS:
            raise HandshakeRefused(f"the hub refused the handshake: {exc.rcvd.reason}") from None
        raise
    if isinstance(answer, ErrorResponse):
        raise HandshakeRefused(f"the hub refused the handshake: {answer.error.message}")
    result = answer.result
    if not isinstance(result, dict) or not isinstance(result.get("workspace_id"), str):
        raise HandshakeRefused("the hub's answer to initialize has no workspace_id")
    workspace_id: str = result["workspace_id"]
    token = result.get("session") if isinstance(result.get("session"), str) else None
    epoch = result.get("epoch")
    if not isinstance(epoch, str) or token is None:
        epoch = f"{workspace_id}:{random.getrandbits(64):x}"  # a hub that does not resume: a fresh start each time
    return Session(workspace_id, token, epoch)


async def _answer(ledger: Ledger, key: Key, ctx: ClientContext, request: Request) -> None:
    request_id = request.id
    answer = await answer_request(ctx, request)
    try:
        data = answer.encode("utf-8") if isinstance(answer, str) else dump_json_bytes(answer)
    except UnicodeEncodeError:
        # A lone surrogate (a file name that is not UTF-8, say) cannot go on the wire;
        # an exception inside websockets' send would drop the whole connection.
        log.warning("answer to %r is not valid Unicode; sending an error instead", request_id)
        data = _error_frame(
            request_id, ErrorCode.INTERNAL_ERROR, "the answer held text that is not valid Unicode"
        ).encode()
    await ledger.deliver(key, data)


def compresses(target: HubTarget) -> bool:
    """Whether frames to the hub are compressed (permessage-deflate, if the hub agrees).

    By default only to a hub on another host: on loopback compressing costs CPU and saves
    nothing; over a network link source code and listings shrink several-fold
    (``python -m benchmarks --only link`` measures both).
    """
    return not is_loopback(target.url) if target.compress is None else target.compress


def is_loopback(url: str) -> bool:
    """Whether a URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_frame(request_id: RequestId | None, code: int, message: str) -> str:
    return dump_json(to_wire(error_response(request_id, code, message)))


def _forget(scopes: dict[Key, RequestScope], key: Key, _task: object) -> None:
    scopes.pop(key, None)


async def serve(ws: ClientConnection, ctx: ClientContext, ledger: Ledger | None = None) -> None:
    """Serve the hub's requests until the connection closes.

    Each request runs in a task of its own, with a :class:`RequestScope` in its
    context (its id, a way to send notifications, a cancel flag that
    ``$/cancelRequest`` sets). Requests outlive the connection: the ledger
    delivers their answers on the next one of the same session, and answers a
    request sent again without running it twice.
    """
    own_ledger = ledger is None
    if ledger is None:
        ledger = Ledger()
        ledger.begin_epoch(f"local:{random.getrandbits(64):x}")
    scopes: dict[Key, RequestScope] = {}

    async def notify(method: str, params: dict[str, Any]) -> None:
        # Live output is best effort: while disconnected it is dropped (the answer keeps the output).
        if ledger.connected:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(dump_json(to_wire(Notification(method=method, params=params))))

    async def send(data: bytes) -> None:
        await ws.send(data, text=True)

    await ledger.attach(send)
    try:
        async for frame in ws:
            if isinstance(frame, bytes):
                await ws.send(_error_frame(None, ErrorCode.INVALID_REQUEST, "binary frames are not accepted"))
                continue
            message = decode_frame(frame, Framing.JSONRPC)
            if isinstance(message, Request):
                key = request_key(ledger.epoch, message.id)
                if key[0] == KEYED and ledger.conflicts(key, fingerprint(message.method, message.params)):
                    await ws.send(
                        _error_frame(
                            message.id,
                            ErrorCode.INVALID_PARAMS,
                            f"the idempotency key {str(message.id).removeprefix(IDEMPOTENT_ID_PREFIX)!r} was first used for another "
                            "request (another method or params); use a new key for new work",
                        )
                    )
                    continue
                seen = ledger.seen(key)
                if seen is True:
                    log.info("request %r is already running; its answer will follow", message.id)
                    continue
                if isinstance(seen, bytes):  # a replay of a request already answered: never run twice
                    await ws.send(seen, text=True)
                    continue
                if len(ledger.running) >= MAX_IN_FLIGHT:
                    await ws.send(
                        _error_frame(
                            message.id,
                            ErrorCode.BUSY,
                            f"the client is busy ({MAX_IN_FLIGHT} requests in flight)",
                        )
                    )
                    continue
                scope = RequestScope(message.id, notify)
                context = contextvars.copy_context()
                context.run(CURRENT.set, scope)
                task = asyncio.create_task(_answer(ledger, key, ctx, message), context=context)
                scopes[key] = scope
                ledger.track(key, task)
                task.add_done_callback(functools.partial(_forget, scopes, key))
            elif isinstance(message, Notification) and message.method == CANCEL_REQUEST:
                withdrawn = scopes.get(request_key(ledger.epoch, (message.params or {}).get("id")))
                if withdrawn is not None:
                    withdrawn.cancelled.set()  # a running command stops and reports what it printed
            elif isinstance(message, Notification):
                # Tools only run as requests: a call nobody answers would run unseen.
                log.warning("ignoring a notification %r from the hub", message.method)
            elif isinstance(message, Malformed):
                await ws.send(_error_frame(message.id, message.code, message.message))
            else:  # an answer: the client sends no requests after the handshake
                log.warning("dropping an answer to an unknown request id %r", message.id)
    except ConnectionClosed:
        pass
    finally:
        ledger.detach()
        if own_ledger:
            await ledger.aclose()


async def run(target: HubTarget, ctx: ClientContext, *, report: Callable[[str], None]) -> None:
    """Stay connected to the hub until cancelled; raise :class:`ClientExit` when retrying cannot help."""
    backoff = Backoff()
    headers = {"Authorization": f"Bearer {target.token}"}
    ledger = Ledger()
    session: str | None = None
    try:
        await _stay_connected(target, ctx, report, backoff, headers, ledger, session)
    finally:
        await ledger.aclose()


async def _stay_connected(
    target: HubTarget,
    ctx: ClientContext,
    report: Callable[[str], None],
    backoff: Backoff,
    headers: dict[str, str],
    ledger: Ledger,
    session: str | None,
) -> None:
    while True:
        try:
            async with connect(
                target.url,
                additional_headers=headers,
                max_size=MAX_FRAME_BYTES,
                open_timeout=HANDSHAKE_TIMEOUT_S,
                proxy=None,
                compression="deflate" if compresses(target) else None,
                ssl=target.ssl,
            ) as ws:
                answered = await handshake(ws, target.workspace, session)
                resumed = session is not None and answered.epoch == ledger.epoch
                session = answered.token
                ledger.begin_epoch(answered.epoch)
                report(
                    f"{'reconnected' if resumed else 'connected'} to {target.url} as workspace "
                    f"{target.workspace!r} (id {answered.workspace_id})"
                    + (
                        f"; {len(ledger.outbox)} answer(s) kept while away"
                        if resumed and ledger.outbox
                        else ""
                    )
                )
                backoff.reset()
                try:
                    await serve(ws, ctx, ledger)
                except asyncio.CancelledError:
                    # Stopping on purpose: say so (1001), so the hub fails our calls at once
                    # instead of waiting for us to come back.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(ws.close(1001, "the client is stopping"))
                    raise
                code = ws.close_code
                reason = f"connection closed (code {code})"
        except InvalidURI as exc:
            raise UsageError(f"--hub is not a WebSocket URL: {exc.uri!r}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRefused(
                    f"the hub refused the token (HTTP {status}); pass --token, set AIHUB_TOKEN, "
                    "or check the token file under AIHUB_HOME"
                ) from None
            if status < 500:
                raise ClientExit(f"the hub refused the connection (HTTP {status})") from None
            reason = f"HTTP {status}"

        except ssl.SSLCertVerificationError as exc:
            raise TlsRefused(
                f"the hub's certificate is not trusted ({exc.verify_message}); pass --ca-file with the "
                "certificate of the authority that signed it"
            ) from None
        except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
            reason = str(exc) or type(exc).__name__
        delay = backoff.next()
        report(f"hub unavailable ({reason}); reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)


async def run_until_stopped(target: HubTarget, ctx: ClientContext, *, report: Callable[[str], None]) -> None:
    """:func:`run`, stopped cleanly by SIGINT or SIGTERM (running commands are killed, the socket closed)."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await run(target, ctx, report=report)
    except asyncio.CancelledError:
        report("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
