"""Requests across the connections of one session: each runs once, each answer is delivered when it can be.

The hub numbers its requests per workspace and tells the client, at
``initialize``, the *epoch* of that numbering (it changes when the hub starts a
new workspace, e.g. after a hub restart). Within an epoch:

* a request still running when the connection drops keeps running; its answer
  waits in the outbox and is sent as soon as the client is connected again;
* a request the hub sends again (it replays what it had in flight when it
  reconnects) is never run twice: if it is running, its answer will come; if
  it is done, the answer is sent again from a bounded cache of recent answers.

Answers of an older epoch are dropped: the hub that waited for them is gone.

Requests whose id carries a caller's idempotency key (``idem:<key>``, see
:data:`schemas.protocol.IDEMPOTENT_ID_PREFIX`) belong to no epoch: the caller
may retry them after a hub restart, so their answers are kept (in a cache of
their own, not flushed by a new epoch) and a retry while one still runs waits
for it. The key names the work; the client never runs it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas.protocol import IDEMPOTENT_ID_PREFIX

log = logging.getLogger("aihub.client")

#: (epoch, the id's JSON type, the id): "1" does not answer 1.
Key = tuple[str, str, str]
#: The "epoch" of requests keyed by their caller: any epoch.
KEYED = "*"

Send = Callable[[bytes], Awaitable[None]]


def fingerprint(method: str, params: object) -> str:
    """What a keyed request asks for: a retry with the key must ask for the same."""
    text = json.dumps([method, params], sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def request_key(epoch: str, request_id: object) -> Key:
    if isinstance(request_id, str) and request_id.startswith(IDEMPOTENT_ID_PREFIX):
        return (KEYED, "str", request_id)
    return (epoch, type(request_id).__name__, str(request_id))


@dataclass
class Ledger:
    #: Answers kept for replays: at most this many, and this many bytes.
    max_cached: int = 256
    max_cached_bytes: int = 64 * 1024 * 1024
    epoch: str = ""
    running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    done: OrderedDict[Key, bytes] = field(default_factory=OrderedDict)
    #: Answers of keyed requests (kept across epochs, bounded like ``done``).
    kept: OrderedDict[Key, bytes] = field(default_factory=OrderedDict)
    outbox: list[tuple[Key, bytes]] = field(default_factory=list)
    #: What each keyed request running or kept asked for (see :func:`fingerprint`).
    asked: dict[Key, str] = field(default_factory=dict)
    _cached_bytes: int = 0
    _kept_bytes: int = 0
    _send: Send | None = None

    def begin_epoch(self, epoch: str) -> None:
        """A (new) handshake's epoch; a different one forgets the old cache and outbox."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.done.clear()
            # Keyed answers stay cached for a retry, but nobody on the new hub waits for them now.
            self.outbox.clear()
            self._cached_bytes = 0

    def seen(self, key: Key) -> bytes | bool | None:
        """For a request: its cached answer, True if it is still running, None if it is new."""
        task = self.running.get(key)
        if task is not None and not task.done():
            return True
        # A task done is taken off ``running`` by a callback a loop iteration later: its answer
        # (if it made one) is cached already, and the request must not be ignored as running.
        cache = self.kept if key[0] == KEYED else self.done
        cached = cache.get(key)
        if cached is not None:
            cache.move_to_end(key)
        return cached

    def conflicts(self, key: Key, asked: str) -> bool:
        """Whether a keyed request reuses a key that named another request (running or kept);
        else, remember what this one asks for."""
        if key[0] != KEYED:
            return False
        known = self.asked.get(key)
        if known is not None and (key in self.running or key in self.kept):
            return known != asked
        self.asked[key] = asked
        return False

    def track(self, key: Key, task: asyncio.Task[None]) -> None:
        self.running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: Key, task: asyncio.Task[None]) -> None:
        if self.running.get(key) is task:  # not a later run of the same key, tracked since
            del self.running[key]

    @property
    def connected(self) -> bool:
        return self._send is not None

    async def attach(self, send: Send) -> None:
        """A connection is up: send what waited for it, in order."""
        self._send = send
        waiting, self.outbox = self.outbox, []
        for index, (key, data) in enumerate(waiting):
            if key[0] not in (self.epoch, KEYED):
                continue
            try:
                await send(data)
            except Exception:
                self.outbox = [*waiting[index:], *self.outbox]
                self._send = None
                raise

    def detach(self) -> None:
        self._send = None

    async def deliver(self, key: Key, data: bytes) -> None:
        """Cache an answer and send it now, or when the client is connected again."""
        if key[0] not in (self.epoch, KEYED):
            log.info("dropping an answer of an earlier session (the hub restarted)")
            return
        self._cache(key, data)
        send = self._send
        if send is None:
            self.outbox.append((key, data))
            return
        try:
            await send(data)
        except Exception:  # the connection just went: the next one delivers it
            self.outbox.append((key, data))

    def _cache(self, key: Key, data: bytes) -> None:
        if len(data) > self.max_cached_bytes:
            return
        if key[0] == KEYED:
            self._kept_bytes = _bounded_put(self.kept, key, data, self._kept_bytes, self)
            for gone in [k for k in self.asked if k not in self.kept and k not in self.running]:
                del self.asked[gone]
        else:
            self._cached_bytes = _bounded_put(self.done, key, data, self._cached_bytes, self)

    async def aclose(self) -> None:
        """The client stops: cancel every request still running (commands are killed)."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


def _bounded_put(cache: OrderedDict[Key, bytes], key: Key, data: bytes, size: int, limits: Ledger) -> int:
    """Put ``data`` in an LRU cache held to the ledger's bounds; return its new size in bytes."""
    previous = cache.pop(key, None)
    if previous is not None:
        size -= len(previous)
    cache[key] = data
    size += len(data)
    while len(cache) > limits.max_cached or size > limits.max_cached_bytes:
        _, dropped = cache.popitem(last=False)
        size -= len(dropped)
    return size
