"""The consumer's batched SQS requests against moto in server mode: receives
of up to ten messages within the free slots, deletes and visibility changes
ten at a time, each only once its handler's outcome is known (A3, B5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from conveyor_shared.messaging import QueueConsumer, ReceivedMessage
from conveyor_shared.messaging.consumer import Handler
from tests.support import eventually, queue_counts


@dataclass
class SqsCalls:
    """What was asked of SQS through the test's client, recorded by botocore
    event hooks (the consumer's batches, receives and any single calls)."""

    requests: Counter[str] = field(default_factory=Counter)
    #: Per receive: (MaxNumberOfMessages, handlers running when it was sent).
    receive_asks: list[tuple[int, int]] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    #: Receipt handles per DeleteMessageBatch, and per visibility batch.
    delete_batches: list[list[str]] = field(default_factory=list)
    visibility_batches: list[list[str]] = field(default_factory=list)
    #: Receipts sent for deletion while their handler had not yet returned.
    deleted_early: list[str] = field(default_factory=list)


class Probe:
    """Records the consumer's SQS calls and what its handlers are doing."""

    def __init__(self, sqs: Any) -> None:
        self.calls = SqsCalls()
        self.running = 0
        self.finished: set[str] = set()
        self._events = sqs.meta.events
        self._events.register("provide-client-params.sqs", self._before)
        self._events.register("after-call.sqs.ReceiveMessage", self._received)

    def close(self) -> None:
        self._events.unregister("provide-client-params.sqs", self._before)
        self._events.unregister("after-call.sqs.ReceiveMessage", self._received)

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.requests[model.name] += 1
        receipts = [e.get("ReceiptHandle", "") for e in params.get("Entries", [])]
        if model.name == "ReceiveMessage":
            self.calls.receive_asks.append((params["MaxNumberOfMessages"], self.running))
        elif model.name == "DeleteMessageBatch":
            self.calls.delete_batches.append(receipts)
            self.calls.deleted_early += [r for r in receipts if r not in self.finished]
        elif model.name == "ChangeMessageVisibilityBatch":
            self.calls.visibility_batches.append(receipts)

    def _received(self, parsed: dict[str, Any], **_: Any) -> None:
        self.calls.received.append(len(parsed.get("Messages", [])))


@pytest.fixture
async def queue(aws: dict[str, Any], unique: str) -> AsyncIterator[str]:
    sqs = aws["sqs"]
    url = str((await sqs.create_queue(QueueName=f"consumer-{unique}"))["QueueUrl"])
    yield url
    await sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def probe(aws: dict[str, Any]) -> Iterator[Probe]:
    probe = Probe(aws["sqs"])
    yield probe
    probe.close()


@contextlib.asynccontextmanager
async def consuming(
    sqs: Any, queue: str, handler: Handler, *, stop_within: float = 10, **options: Any
) -> AsyncIterator[None]:
    """A consumer of ``queue`` running for the block; stopped at its end
    (failing unless it returned within ``stop_within`` seconds)."""
    stop = asyncio.Event()
    consumer = QueueConsumer(sqs, queue, handler, wait_seconds=1, **options)
    running = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(running, stop_within)


async def send(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        )


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout=30, what=what)


async def until_empty(sqs: Any, url: str, what: str, timeout: float = 30) -> None:
    async def empty() -> bool:
        return await queue_counts(sqs, url) == (0, 0)

    await eventually(empty, timeout=timeout, what=what)


async def test_a_burst_is_received_ten_at_a_time_and_deleted_in_batches_after_its_handlers(
    aws: dict[str, Any], queue: str, probe: Probe
) -> None:
    sqs = aws["sqs"]
    await send(sqs, queue, [f"m{i}" for i in range(50)])
    handled: Counter[str] = Counter()
    wave: list[asyncio.Event] = [asyncio.Event()]

    async def handler(message: ReceivedMessage) -> None:
        probe.running += 1
        gate = wave[-1]
        handled[message.body] += 1
        if sum(handled.values()) % 10 == 0:
            wave.append(asyncio.Event())
            gate.set()  # ten handlers hold slots: let the whole wave finish
        await gate.wait()
        probe.finished.add(message.receipt_handle)
        probe.running -= 1

    # A long linger: each batch goes out when ten deletes are pending, not on a timer.
    async with consuming(sqs, queue, handler, concurrency=10, linger_seconds=5):
        await until_empty(sqs, queue, "all 50 messages deleted")

    calls = probe.calls
    assert handled == Counter({f"m{i}": 1 for i in range(50)})
    assert all(ask + busy <= 10 for ask, busy in calls.receive_asks), calls.receive_asks
    assert max(calls.received) == 10
    assert len([n for n in calls.received if n]) <= 10, calls.received
    assert calls.deleted_early == [], "deleted before its handler returned"
    assert sorted(len(b) for b in calls.delete_batches) == [10] * 5
    assert (calls.requests["DeleteMessage"], calls.requests["ChangeMessageVisibility"]) == (0, 0)


async def test_a_failed_handler_is_not_deleted_and_its_message_comes_back(
    aws: dict[str, Any], queue: str, probe: Probe
) -> None:
    sqs = aws["sqs"]
    await send(sqs, queue, ["ok-1", "fail-1", "ok-2", "fail-2", "ok-3"])
    receives: dict[str, list[int]] = {}
    failed_receipts: list[str] = []

    async def handler(message: ReceivedMessage) -> None:
        receives.setdefault(message.body, []).append(message.receive_count)
        if message.body.startswith("fail") and message.receive_count == 1:
            failed_receipts.append(message.receipt_handle)
            raise RuntimeError("the destination refused")
        probe.finished.add(message.receipt_handle)

    async with consuming(sqs, queue, handler, retry_delays=(1,)):
        await until_empty(sqs, queue, "every message handled and deleted")

    assert receives == {"ok-1": [1], "ok-2": [1], "ok-3": [1], "fail-1": [1, 2], "fail-2": [1, 2]}
    deleted = [r for batch in probe.calls.delete_batches for r in batch]
    assert probe.calls.deleted_early == []
    assert not set(failed_receipts) & set(deleted)
    backed_off = [r for batch in probe.calls.visibility_batches for r in batch]
    assert sorted(backed_off) == sorted(failed_receipts)


async def test_a_stop_sends_the_deletes_still_waiting_for_their_batch(
    aws: dict[str, Any], queue: str, probe: Probe
) -> None:
    sqs = aws["sqs"]
    await send(sqs, queue, ["a", "b", "c"])
    handled: list[str] = []

    async def handler(message: ReceivedMessage) -> None:
        handled.append(message.body)

    # A linger far longer than the test: only the stop can send these deletes.
    async with consuming(sqs, queue, handler, linger_seconds=600):
        await until(lambda: len(handled) == 3, "three handlers done")
        assert await queue_counts(sqs, queue) == (0, 3), "not deleted yet: the batch lingers"
        assert probe.calls.requests["DeleteMessageBatch"] == 0
    assert await queue_counts(sqs, queue) == (0, 0)
    assert [len(b) for b in probe.calls.delete_batches] == [3]


async def test_full_slots_take_no_more_messages_and_a_stop_still_drains_in_time(
    aws: dict[str, Any], queue: str, probe: Probe
) -> None:
    sqs = aws["sqs"]
    await send(sqs, queue, [f"m{i}" for i in range(6)])
    started: list[str] = []

    async def endless(message: ReceivedMessage) -> None:
        started.append(message.body)
        await asyncio.Event().wait()

    # Every slot stays busy, yet the stop must not be held up by the pollers.
    async with consuming(
        sqs, queue, endless, stop_within=5, concurrency=2, receivers=3, drain_seconds=0.5
    ):
        await until(lambda: len(started) == 2, "two handlers running")
        deadline = asyncio.get_running_loop().time() + 3
        while asyncio.get_running_loop().time() < deadline:
            assert await queue_counts(sqs, queue) == (4, 2), "received beyond its free slots"
            await asyncio.sleep(0.25)
    assert len(started) == 2
    assert await queue_counts(sqs, queue) == (6, 0), "both released at once"
    assert [len(b) for b in probe.calls.visibility_batches] == [2]


async def test_long_handlers_extend_their_visibility_together(
    aws: dict[str, Any], queue: str, probe: Probe
) -> None:
    sqs = aws["sqs"]
    await send(sqs, queue, [f"m{i}" for i in range(10)])
    release = asyncio.Event()
    seen: list[ReceivedMessage] = []

    async def long_handler(message: ReceivedMessage) -> None:
        seen.append(message)
        await release.wait()
        probe.finished.add(message.receipt_handle)

    async with consuming(sqs, queue, long_handler, concurrency=10, visibility_timeout=2):
        await until(lambda: len(seen) == 10, "ten handlers running")
        await until(lambda: len(probe.calls.visibility_batches) >= 3, "three extension rounds")
        assert await queue_counts(sqs, queue) == (0, 10), "a message became visible while handled"
        release.set()
        await until_empty(sqs, queue, "the ten messages deleted")

    batches = probe.calls.visibility_batches
    extended = sum(len(b) for b in batches)
    assert probe.calls.requests["ChangeMessageVisibility"] == 0
    assert extended >= 30
    assert extended >= 5 * len(batches), f"extensions not batched: {batches}"
    assert probe.calls.deleted_early == []
    assert [m.receive_count for m in seen] == [1] * 10
