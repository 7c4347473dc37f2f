"""The client's ledger: requests outlive connections, answers wait for the next one, nothing runs twice."""

from __future__ import annotations

import asyncio

import pytest

from rpc_client.ledger import Ledger, request_key

pytestmark = pytest.mark.anyio


class Link:
    def __init__(self, broken: bool = False) -> None:
        self.sent: list[bytes] = []
        self.broken = broken

    async def send(self, data: bytes) -> None:
        if self.broken:
            raise ConnectionError("gone")
        self.sent.append(data)


async def test_an_answer_made_while_away_is_sent_on_the_next_connection_in_order() -> None:
    ledger = Ledger()
    ledger.begin_epoch("e1")
    await ledger.deliver(request_key("e1", 1), b"one")  # no connection yet
    await ledger.deliver(request_key("e1", 2), b"two")
    link = Link()
    await ledger.attach(link.send)
    assert link.sent == [b"one", b"two"] and ledger.outbox == []
    await ledger.deliver(request_key("e1", 3), b"three")
    assert link.sent[-1] == b"three"


async def test_a_send_that_fails_keeps_the_answer_for_the_next_connection() -> None:
    ledger = Ledger()
    ledger.begin_epoch("e1")
    await ledger.attach(Link(broken=True).send)
    await ledger.deliver(request_key("e1", 1), b"one")
    ledger.detach()
    link = Link()
    await ledger.attach(link.send)
    assert link.sent == [b"one"]


async def test_a_replayed_request_is_never_run_twice() -> None:
    ledger = Ledger()
    ledger.begin_epoch("e1")
    key = request_key("e1", 7)
    assert ledger.seen(key) is None
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    ledger.track(key, task)  # type: ignore[arg-type]
    assert ledger.seen(key) is True  # running: its answer will come
    gate.set()
    await task
    await asyncio.sleep(0)
    await ledger.deliver(key, b"answer")
    assert ledger.seen(key) == b"answer"  # done: answered again from the cache
    assert ledger.seen(request_key("e1", "7")) is None  # "7" is another id than 7


async def test_a_new_epoch_forgets_the_old_answers_and_drops_late_ones() -> None:
    ledger = Ledger()
    ledger.begin_epoch("e1")
    await ledger.deliver(request_key("e1", 1), b"old")
    ledger.begin_epoch("e2")  # the hub restarted: its ids start again
    assert ledger.seen(request_key("e2", 1)) is None and ledger.outbox == []
    await ledger.deliver(request_key("e1", 2), b"late")  # a request of the old hub finishing now
    link = Link()
    await ledger.attach(link.send)
    assert link.sent == []


async def test_the_cache_is_bounded_by_count_and_bytes() -> None:
    ledger = Ledger(max_cached=3, max_cached_bytes=10)
    ledger.begin_epoch("e")
    await ledger.attach(Link().send)
    for i in range(5):
        await ledger.deliver(request_key("e", i), b"xx")
    assert len(ledger.done) == 3 and ledger.seen(request_key("e", 0)) is None
    await ledger.deliver(request_key("e", 9), b"y" * 9)
    assert sum(len(v) for v in ledger.done.values()) <= 10
    await ledger.deliver(request_key("e", 10), b"z" * 11)  # too big to keep: sent, not cached
    assert ledger.seen(request_key("e", 10)) is None
