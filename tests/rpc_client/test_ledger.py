"""The client's ledger: requests outlive connections, answers wait for the next one, nothing runs twice."""

from __future__ import annotations

import asyncio

import pytest

from rpc_client.ledger import Ledger, fingerprint, request_key

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


async def test_a_keyed_answer_survives_a_new_epoch_and_answers_the_retry() -> None:
    ledger = Ledger()
    ledger.begin_epoch("hub-1")
    keyed = request_key("hub-1", "idem:deploy-42")
    plain = request_key("hub-1", 7)
    await ledger.deliver(keyed, b"keyed answer")  # made while away from the hub
    await ledger.deliver(plain, b"plain answer")
    ledger.begin_epoch("hub-2")  # the hub restarted
    assert request_key("hub-2", "idem:deploy-42") == keyed  # a key is the same in every epoch
    assert ledger.seen(keyed) == b"keyed answer"
    assert ledger.seen(request_key("hub-2", 7)) is None  # epoch-numbered answers are gone
    link = Link()
    await ledger.attach(link.send)
    assert link.sent == []  # nobody on the new hub waits for them until the caller retries


async def test_a_keyed_answer_of_an_earlier_epoch_is_still_delivered() -> None:
    ledger = Ledger()
    ledger.begin_epoch("hub-1")
    keyed = request_key("hub-1", "idem:k")
    ledger.begin_epoch("hub-2")  # the hub restarted while the keyed request ran
    link = Link()
    await ledger.attach(link.send)
    await ledger.deliver(keyed, b"late")
    assert link.sent == [b"late"]  # the new hub may be waiting for it (the caller retried)
    await ledger.deliver(request_key("hub-1", 1), b"stale")
    assert link.sent == [b"late"]


def test_an_id_that_only_looks_keyed_is_numbered_by_its_epoch() -> None:
    assert request_key("e", "idem")[0] == "e"
    assert request_key("e", "IDEM:x")[0] == "e"
    assert request_key("e", 5)[0] == "e"


async def test_keyed_answers_are_bounded_in_count_and_bytes() -> None:
    ledger = Ledger(max_cached=3, max_cached_bytes=10)
    ledger.begin_epoch("e")
    for n in range(5):
        await ledger.deliver(request_key("e", f"idem:{n}"), b"xx")
    assert [k[2] for k in ledger.kept] == ["idem:2", "idem:3", "idem:4"]
    await ledger.deliver(request_key("e", "idem:big"), b"x" * 9)
    assert [k[2] for k in ledger.kept] == ["idem:big"] and ledger._kept_bytes == 9
    await ledger.deliver(request_key("e", "idem:huge"), b"x" * 11)  # over the bound: not kept
    assert ledger.seen(request_key("e", "idem:huge")) is None


async def test_a_request_whose_answer_is_out_is_answered_from_the_cache_not_ignored_as_running() -> None:
    # The task that delivered an answer is done, but the callback that takes it off "running"
    # runs a loop iteration later. A repeat read in between was ignored ("its answer will
    # follow"), though the answer had already gone: the caller waited for nothing.
    ledger = Ledger()
    ledger.begin_epoch("e")
    await ledger.attach(Link().send)
    key = request_key("e", "idem:k")

    async def answer() -> None:
        await ledger.deliver(key, b"the answer")

    task = asyncio.ensure_future(answer())
    seen_when_done: list[object] = []
    task.add_done_callback(lambda _t: seen_when_done.append(ledger.seen(key)))  # before track's own
    ledger.track(key, task)
    await task
    assert seen_when_done == [b"the answer"]


async def test_a_run_that_ends_does_not_untrack_a_later_run_of_the_same_request() -> None:
    ledger = Ledger()
    ledger.begin_epoch("e")
    key = request_key("e", 3)
    first = asyncio.ensure_future(asyncio.sleep(0))  # ends without an answer (say, it failed)
    gate = asyncio.Event()
    second = asyncio.ensure_future(gate.wait())

    seen: list[object] = []

    def run_again(_t: object) -> None:  # the request, sent again, is run again in that window
        seen.append(ledger.seen(key))
        ledger.track(key, second)  # type: ignore[arg-type]

    first.add_done_callback(run_again)
    ledger.track(key, first)
    await first
    await asyncio.sleep(0)
    assert seen == [None]
    assert ledger.seen(key) is True  # the second run is still running: a repeat is not run a third time
    gate.set()
    await second


async def test_a_key_reused_for_another_request_is_a_conflict_while_its_answer_is_kept() -> None:
    ledger = Ledger(max_cached=1)
    ledger.begin_epoch("e")
    key = request_key("e", "idem:k")
    build = fingerprint("execute_command", {"command": "make", "timeout": 60})
    assert fingerprint("execute_command", {"timeout": 60, "command": "make"}) == build  # key order
    assert not ledger.conflicts(key, build)
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    ledger.track(key, task)  # type: ignore[arg-type]
    other = fingerprint("execute_command", {"command": "make clean", "timeout": 60})
    assert ledger.conflicts(key, other)  # running
    assert not ledger.conflicts(key, build)  # a retry of the same request
    gate.set()
    await task
    await ledger.deliver(key, b"built")
    await asyncio.sleep(0)
    assert ledger.conflicts(key, other)  # kept
    assert not ledger.conflicts(request_key("e", 3), other)  # only keyed requests are compared
    await ledger.deliver(request_key("e", "idem:next"), b"next")  # evicts k (max_cached=1)
    assert not ledger.conflicts(key, other)  # forgotten: the key is free again
    assert set(ledger.asked) <= {key}  # what is forgotten is not remembered either
