"""Connected workspaces and their calls in flight.

A :class:`Workspace` takes a ``send`` callable, not a WebSocket, so it is
tested without FastAPI. Calls in flight are a dict of futures keyed by
request id: answers may come in any order; each call waits under its own
timeout and removes its future in ``finally``; when the socket goes,
:meth:`Workspace.fail_all` fails every waiting call at once. Answers to ids we
no longer wait for (late, unknown) are logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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
from schemas.framing import Framing, encode_frame
from schemas.jsonrpc import ErrorResponse, Notification, Request, RequestId, Response
from schemas.protocol import CANCEL_REQUEST, IDEMPOTENT_ID_PREFIX, MAX_REQUEST_FRAME_BYTES

log = logging.getLogger("aihub.hub")

#: Sends one text frame; raises :class:`WorkspaceGone` when the socket is gone.
Send = Callable[[str], Awaitable[None]]
#: Receives (method, params) of each notification that names a call in flight.
OnEvent = Callable[[str, dict[str, Any]], None]
#: Closes the socket with (close code, reason).
Close = Callable[[int, str], Awaitable[None]]

#: How long a ``$/cancelRequest`` may wait to be sent before it is dropped.
WITHDRAW_SEND_TIMEOUT_S = 5.0

#: Pending calls are keyed by the id's JSON type and value: "1" does not answer 1.
Key = tuple[str, str]


def _key(request_id: RequestId) -> Key:
    return (type(request_id).__name__, str(request_id))


@dataclass(eq=False)
class Workspace:
    """One connected client and the calls waiting for its answers."""

    name: str
    framing: Framing
    send: Send
    client: str | None = None
    #: Calls waiting for this client's answers at once; more are refused (WorkspaceBusy), not queued.
    max_in_flight: int = 64
    #: The methods the client said it serves at initialize (None: it did not say).
    tools: list[str] | None = None
    #: Closes the socket (the WebSocket route gives it; None: nothing to close).
    close_socket: Close | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    connected_at: float = field(default_factory=time.time)
    _pending: dict[Key, asyncio.Future[Response | ErrorResponse]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _listeners: dict[Key, OnEvent] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _closed: BaseException | None = None
    #: The numbering of this workspace's requests; a client dedups replays within one epoch.
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    #: The client keeps requests across reconnects: a lost connection detaches, it does not end.
    resumable: bool = False
    attached: bool = True
    #: Which connection serves it now (a reconnect takes over from a connection not yet seen dead).
    connection: int = 0
    #: The frames of the calls in flight, sent again when the client comes back.
    _frames: dict[Key, str] = field(default_factory=dict)
    _grace: asyncio.TimerHandle | None = None
    #: Set when the hub drains for a shutdown: new calls are refused with this reason.
    refusing: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "framing": self.framing.value,
            "client": self.client,
            "tools": self.tools,
            "connected_at": self.connected_at,
            "in_flight": self.in_flight,
            "connected": self.attached,
        }

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _next_id(self) -> RequestId:
        n = next(self._ids)
        # The original schema's examples use string ids; JSON-RPC peers get integers.
        return str(n) if self.framing is Framing.ENVELOPE else n

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float,
        on_event: OnEvent | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Response | ErrorResponse:
        """Send a request and wait for its answer; the timeout covers both.

        ``on_event`` receives the request's notifications (``command_output_chunk``
        params) while it runs. A call given up (timeout, or its caller cancelled)
        is withdrawn with ``$/cancelRequest``, so the client stops the work.
        Raises :class:`CallTimeout`, or :class:`WorkspaceGone` (``send`` raises it
        too when the socket is gone).

        With an ``idempotency_key`` the request's id is ``idem:<key>``: the client
        runs it once and answers every later request with that id, even after a
        hub restart, from its cache (or, while it still runs, when it ends). Such
        a call is never withdrawn: its caller may be gone only to retry it.
        Raises :class:`KeyInFlight` while another call with the key is waiting here.
        """
        if self.refusing is not None:
            raise HubShuttingDown(self.refusing)
        if self._closed is not None:
            raise WorkspaceGone("the workspace's client is no longer connected")
        if not self.attached:
            raise WorkspaceGone("the workspace's client is reconnecting; try again in a moment")
        if len(self._pending) >= self.max_in_flight:
            raise WorkspaceBusy(
                f"workspace {self.name!r} has {self.max_in_flight} calls in flight, the most the hub "
                "allows; retry when one ends"
            )
        if idempotency_key is not None and not self.resumable:
            raise KeyUnsupported(
                f"workspace {self.name!r} cannot take an idempotency key: its client does not keep "
                "answers across reconnects (it did not ask to resume sessions), so a retry would run "
                "the work again; call without the key"
            )
        request_id = self._next_id() if idempotency_key is None else IDEMPOTENT_ID_PREFIX + idempotency_key
        key = _key(request_id)
        if key in self._pending:
            raise KeyInFlight(
                f"a call with the idempotency key {idempotency_key!r} is still waiting on workspace "
                f"{self.name!r}; retry when it ends"
            )
        frame = encode_frame(Request(id=request_id, method=method, params=params), self.framing)
        if (
            len(frame) * 4 > MAX_REQUEST_FRAME_BYTES
            and (size := len(frame.encode())) > MAX_REQUEST_FRAME_BYTES
        ):
            raise RequestTooLarge(
                f"{method}: the request is {size:,} bytes encoded, over the {MAX_REQUEST_FRAME_BYTES:,} "
                "a client accepts; send less at once"
            )
        future: asyncio.Future[Response | ErrorResponse] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        if on_event is not None:
            self._listeners[key] = on_event
        try:
            async with asyncio.timeout(timeout):
                self._frames[key] = frame
                try:
                    await self.send(frame)
                except WorkspaceGone:
                    if not self.resumable or self._closed is not None:
                        raise  # else: the reconnect sends it again
                return await future
        except TimeoutError:
            raise CallTimeout(f"{method}: no answer from the client within {timeout:g} s") from None
        finally:
            self._pending.pop(key, None)
            self._listeners.pop(key, None)
            self._frames.pop(key, None)
            answered = future.done() and not future.cancelled()  # a timeout cancels the future
            if not answered and self._closed is None and idempotency_key is None:
                self._withdraw(request_id)

    def _withdraw(self, request_id: RequestId) -> None:
        notice = Notification(method=CANCEL_REQUEST, params={"id": request_id})
        task = asyncio.get_running_loop().create_task(self._send_quietly(encode_frame(notice, self.framing)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_quietly(self, text: str) -> None:
        # Bounded: to a peer that stopped reading, a withdrawal would wait forever, and one such
        # task per timed-out call would pile up.
        with contextlib.suppress(WorkspaceGone, TimeoutError):
            async with asyncio.timeout(WITHDRAW_SEND_TIMEOUT_S):
                await self.send(text)

    def on_notification(self, notification: Notification) -> None:
        """Hand a request's notification (its live output) to whoever listens for it."""
        params = notification.params or {}
        request_id = params.get("id")
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            return
        listener = self._listeners.get(_key(request_id))
        if listener is not None:
            listener(notification.method, params)

    def is_waiting(self, request_id: RequestId) -> bool:
        return _key(request_id) in self._pending

    def on_answer(self, answer: Response | ErrorResponse) -> None:
        """Hand an answer to the call waiting for it; drop it if none is."""
        future = self._pending.get(_key(answer.id)) if answer.id is not None else None
        if future is None or future.done():
            log.warning("workspace %s: dropping an answer for unknown or expired id %r", self.id, answer.id)
            return
        future.set_result(answer)

    def detach(self, grace: float, expire: Callable[[], None]) -> None:
        """The connection is lost but the client may come back: calls keep waiting, for ``grace`` seconds."""
        self.attached = False
        self._grace = asyncio.get_running_loop().call_later(grace, expire)

    async def reattach(self, send: Send, close_socket: Close | None) -> None:
        """The client is back on a new connection: it serves the workspace from now on."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        previous = self.close_socket if self.attached else None
        self.send, self.close_socket = send, close_socket
        self.connection += 1
        self.attached = True
        if previous is not None:  # the old connection is not seen dead yet: end it
            with contextlib.suppress(Exception):
                await previous(1000, "replaced by a new connection of the same client")

    async def replay(self) -> None:
        """Send the calls in flight again; the client answers each once, never running one twice."""
        for frame in list(self._frames.values()):
            with contextlib.suppress(WorkspaceGone):
                await self.send(frame)

    def fail_all(self, reason: str, error: type[WorkspaceGone] = WorkspaceGone) -> None:
        """Fail every waiting call at once (with ``error``); later calls fail immediately."""
        self._closed = error(reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error(reason))
        self._pending.clear()

    def give_up(self, reason: str) -> None:
        """End the calls still waiting when the hub stops: withdraw the work nobody can collect
        (calls without an idempotency key; keyed ones run on, for a retry), then fail them all.

        A detached workspace's client cannot be told (it has no connection); its resume grace
        ends here too, so it cannot later fail the calls as "gone" instead."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for key in list(self._pending) if self.attached else ():
            request_id: RequestId = int(key[1]) if key[0] == "int" else key[1]
            if not (isinstance(request_id, str) and request_id.startswith(IDEMPOTENT_ID_PREFIX)):
                self._withdraw(request_id)
        self.fail_all(reason, HubShuttingDown)

    async def close(self, code: int, reason: str) -> None:
        """Fail every waiting call (the hub is shutting down), then close the socket with ``code``."""
        self.fail_all(reason, HubShuttingDown)
        if self.close_socket is not None:
            await self.close_socket(code, reason)


class Registry:
    """The workspaces connected now."""

    def __init__(self) -> None:
        self._workspaces: dict[str, Workspace] = {}
        #: Set by :meth:`close`: the hub is going away and takes no new workspace.
        self.closed = False
        #: Set by :meth:`drain`: the hub is about to go away; it takes no new call or workspace.
        self.draining = False

    def add(self, workspace: Workspace) -> None:
        self._workspaces[workspace.id] = workspace

    def remove(self, workspace: Workspace) -> None:
        if self._workspaces.get(workspace.id) is workspace:
            del self._workspaces[workspace.id]

    def get(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    def find(self, id_or_name: str) -> Workspace | None:
        """By id, else by name when exactly one workspace has it.

        Raises :class:`AmbiguousName` when several connected workspaces share the name.
        """
        if found := self._workspaces.get(id_or_name):
            return found
        named = [w for w in self._workspaces.values() if w.name == id_or_name]
        if len(named) > 1:
            raise AmbiguousName(id_or_name, [w.id for w in named])
        return named[0] if named else None

    def all(self) -> list[Workspace]:
        return list(self._workspaces.values())

    def __len__(self) -> int:
        return len(self._workspaces)

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self._workspaces.values())

    async def drain(
        self, timeout: float, reason: str, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Before a shutdown: refuse new calls (:class:`HubShuttingDown`) and wait up to ``timeout``
        seconds for the calls in flight to be answered; then give up on the rest (their callers get
        :class:`HubShuttingDown`; work without an idempotency key is withdrawn from the client).
        Returns how many calls were given up. ``should_stop`` ends the wait early (a second Ctrl-C).
        """
        self.draining = True
        left = 0
        for workspace in self._workspaces.values():
            workspace.refusing = reason
            if not workspace.attached:
                # Its connection was lost and it cannot come back now (a reconnect is told 1012):
                # nobody will answer its calls, so they end now, not when its resume grace does
                # (as "gone", a 502) nor when the drain times out.
                left += workspace.in_flight
                workspace.give_up(reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled: should_stop is a flag (uvicorn's force_exit), and calls end in many ways.
        while self.in_flight and loop.time() < deadline and not should_stop():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        left += self.in_flight
        for workspace in self._workspaces.values():
            workspace.give_up(reason)
        withdrawals = {task for w in self._workspaces.values() for task in w._background}
        if withdrawals:  # let them go out before the sockets close (each is bounded)
            await asyncio.wait(withdrawals, timeout=WITHDRAW_SEND_TIMEOUT_S)
        return left

    async def close(self, code: int, reason: str, timeout: float) -> None:
        """Take no new workspace; close every connected one (its calls fail) within ``timeout`` seconds."""
        self.closed = True
        workspaces = self.all()
        self._workspaces.clear()
        if workspaces:
            closing = [asyncio.create_task(w.close(code, reason)) for w in workspaces]
            _done, late = await asyncio.wait(closing, timeout=timeout)
            for task in late:  # a socket too slow to take its close frame: the server drops it
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
