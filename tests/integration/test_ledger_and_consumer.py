"""The ledger's conditional writes and the SQS consumer loop, against moto in
server mode, under real concurrency (D4, D7, A3)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conveyor_shared.ledger import FileEntry, FileLedger, FileStatus, Job, JobLedger, JobStatus
from conveyor_shared.ledger.dynamo import now_iso
from conveyor_shared.ledger.paths import DestinationPaths
from conveyor_shared.messaging import QueueConsumer, ReceivedMessage
from conveyor_shared.messaging.consumer import RetryLater
from tests.support import Stack, eventually, queue_counts, queue_url


def ledgers(aws: dict[str, Any], stack: Stack) -> tuple[FileLedger, JobLedger]:
    return (
        FileLedger(aws["dynamodb"], f"{stack.name}-files"),
        JobLedger(aws["dynamodb"], f"{stack.name}-jobs"),
    )


def entry(job_id: str, content_id: str, name: str = "a.csv") -> FileEntry:
    now = now_iso()
    return FileEntry(
        client_id="H5001",
        content_id=content_id,
        timestamp=now,
        status=FileStatus.PROCESSING,
        file_path=f"s3://p/H5001/{name}",
        file_name=name,
        job_id=job_id,
        route_name="r",
        source_bucket="p",
        source_key=f"H5001/{name}",
        active_since=now,
    )


async def new_job(jobs: JobLedger, job_id: str, total: int) -> None:
    assert await jobs.create(
        Job(
            job_id=job_id,
            client_id="H5001",
            route_name="r",
            status=JobStatus.FORMING,
            started_at=now_iso(),
        )
    )
    assert await jobs.start(job_id, total)


async def test_two_workers_recording_the_same_file_create_one_entry(
    stack: Stack, aws: dict[str, Any]
) -> None:
    files, jobs = ledgers(aws, stack)
    await new_job(jobs, "J1", 1)
    await new_job(jobs, "J2", 1)
    results = await asyncio.gather(
        *(files.record_new(entry(j, "etag-1")) for j in ["J1", "J2"] * 5)
    )
    assert sorted(results) == [False] * 9 + [True]
    stored = await files.get("H5001", "etag-1")
    assert stored is not None
    assert (stored.status, stored.send_attempts, stored.active) == (FileStatus.PROCESSING, 0, True)


async def test_one_claim_wins_and_settling_twice_counts_once(
    stack: Stack, aws: dict[str, Any]
) -> None:
    files, jobs = ledgers(aws, stack)
    await new_job(jobs, "J3", 1)
    assert await files.record_new(entry("J3", "etag-2"))
    claims = await asyncio.gather(
        *(files.claim("H5001", "etag-2", "J3", f"message-{i}", 60) for i in range(6))
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert winners[0].send_attempts == 1
    owner = winners[0].lease_owner
    assert owner is not None
    # Another claim token, even for the same message, waits for the live lease.
    assert await files.claim("H5001", "etag-2", "J3", "message-0-redelivered", 60) is None
    # The holder itself may claim again (a renewal); the attempt counts.
    again = await files.claim("H5001", "etag-2", "J3", owner, 60)
    assert again is not None
    assert again.send_attempts == 2
    assert not await files.renew_lease("H5001", "etag-2", "someone-else", 60)
    assert await files.renew_lease("H5001", "etag-2", owner, 60, bytes_done=10)
    settled = await asyncio.gather(
        *(files.settle(winners[0], FileStatus.SUCCESS, owner=owner) for _ in range(4))
    )
    assert sorted(s is not None for s in settled) == [False, False, False, True]
    # Only the one settle that won counts the file in its job.
    [won] = [s for s in settled if s is not None]
    counted = await jobs.count(won.job_id, succeeded=1)
    assert counted is not None
    assert (counted.succeeded, counted.failed, counted.complete) == (1, 0, True)


async def test_an_expired_lease_is_taken_over_and_a_released_claim_is_not_counted(
    stack: Stack, aws: dict[str, Any]
) -> None:
    files, jobs = ledgers(aws, stack)
    await new_job(jobs, "J5", 1)
    assert await files.record_new(entry("J5", "etag-5"))
    first = await files.claim("H5001", "etag-5", "J5", "stalled-worker", 0)
    assert first is not None
    assert first.send_attempts == 1

    async def taken_over() -> Any:
        return await files.claim("H5001", "etag-5", "J5", "second-worker", 60)

    second = await eventually(taken_over, timeout=5, what="the expired lease to be taken")
    assert second.send_attempts == 2
    # The first worker wakes up: it can neither renew, nor settle, nor release.
    assert not await files.renew_lease("H5001", "etag-5", "stalled-worker", 60)
    assert not await files.settle(first, FileStatus.SUCCESS, owner="stalled-worker")
    assert not await files.release_claim("H5001", "etag-5", "stalled-worker")
    # A graceful stop gives the claim back without counting the attempt.
    assert await files.release_claim("H5001", "etag-5", "second-worker")
    released = await files.get("H5001", "etag-5")
    assert released is not None
    assert (released.send_attempts, released.lease_owner) == (1, None)
    assert await files.record_attempt_failure("H5001", "etag-5", "x", "boom", "transient") is False
    third = await files.claim("H5001", "etag-5", "J5", "third-worker", 60)
    assert third is not None
    assert await files.record_attempt_failure(
        "H5001", "etag-5", "third-worker", "refused", "transient"
    )
    assert await files.claim("H5001", "etag-5", "J5", "fourth-worker", 60) is not None
    assert await files.settle(
        third, FileStatus.SUCCESS, owner="fourth-worker", verified_by="md5:destination"
    )
    done = await files.get("H5001", "etag-5")
    assert done is not None
    assert done.verified_by == "md5:destination"
    assert [(a.outcome, a.error) for a in done.attempts or []] == [
        ("failed", "refused"),
        ("success", None),
    ]


async def test_exactly_one_caller_finishes_a_job(stack: Stack, aws: dict[str, Any]) -> None:
    files, jobs = ledgers(aws, stack)
    await new_job(jobs, "J4", 3)
    entries = [entry("J4", f"etag-{i}", f"f{i}.csv") for i in range(3)]
    for e in entries:
        assert await files.record_new(e)
    for settled in await asyncio.gather(*(files.settle(e, FileStatus.SUCCESS) for e in entries)):
        assert settled is not None
        await jobs.count(settled.job_id, succeeded=1)
    job = await jobs.get("J4")
    assert job is not None
    assert job.complete
    finishers = await asyncio.gather(*(jobs.finish("J4") for _ in range(8)))
    assert len([f for f in finishers if f is not None]) == 1
    assert await jobs.mark_published("J4", "finished")
    assert not await jobs.mark_published("J4", "finished")


async def test_consumer_keeps_a_long_message_invisible_and_deletes_it_after(
    stack: Stack, aws: dict[str, Any]
) -> None:
    sqs = aws["sqs"]
    url = await queue_url(sqs, f"{stack.name}-transfer-s3")
    await sqs.send_message(QueueUrl=url, MessageBody="{}")
    seen: list[ReceivedMessage] = []
    release = asyncio.Event()
    stop = asyncio.Event()

    async def long_handler(message: ReceivedMessage) -> None:
        seen.append(message)
        await release.wait()  # a transfer that outlasts the visibility timeout

    consumer = QueueConsumer(
        sqs, url, long_handler, concurrency=4, visibility_timeout=2, wait_seconds=1
    )
    running = asyncio.create_task(consumer.run(stop))

    async def counts() -> tuple[int, int]:
        return await queue_counts(sqs, url)

    await eventually(lambda: asyncio.sleep(0, bool(seen)), what="the handler to start")
    started = asyncio.get_running_loop().time()

    async def still_hidden_after_three_timeouts() -> bool:
        assert await counts() == (0, 1), "the message became visible while being handled"
        return asyncio.get_running_loop().time() - started > 6

    await eventually(
        still_hidden_after_three_timeouts,
        timeout=20,
        interval=0.25,
        what="three visibility timeouts to pass",
    )
    release.set()
    await eventually(
        lambda: _gone(counts), timeout=10, what="the message deleted after the handler returned"
    )
    stop.set()
    await running
    assert [m.receive_count for m in seen] == [1], "never handed to a second handler"


async def _gone(counts: Any) -> bool:
    return bool(await counts() == (0, 0))


async def test_a_stop_interrupts_handlers_after_the_drain_bound_and_frees_their_messages(
    stack: Stack, aws: dict[str, Any]
) -> None:
    sqs = aws["sqs"]
    url = await queue_url(sqs, f"{stack.name}-transfer-s3")
    await sqs.send_message(QueueUrl=url, MessageBody="{}")
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def endless(_message: ReceivedMessage) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    stop = asyncio.Event()
    consumer = QueueConsumer(
        sqs, url, endless, visibility_timeout=300, wait_seconds=1, drain_seconds=0.5
    )
    running = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 20)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert interrupted.is_set()
    # Visible again at once, not after the 300 s visibility timeout.
    assert await queue_counts(sqs, url) == (1, 0)


async def test_a_handler_whose_message_was_taken_away_is_cancelled(
    stack: Stack, aws: dict[str, Any]
) -> None:
    sqs = aws["sqs"]
    url = await queue_url(sqs, f"{stack.name}-transfer-s3")
    await sqs.send_message(QueueUrl=url, MessageBody="{}")
    seen: list[ReceivedMessage] = []
    interrupted = asyncio.Event()

    async def endless(message: ReceivedMessage) -> None:
        seen.append(message)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    stop = asyncio.Event()
    consumer = QueueConsumer(sqs, url, endless, visibility_timeout=3, wait_seconds=1)
    running = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: asyncio.sleep(0, bool(seen)), what="the handler to start")
    # The receipt stops being valid (as when another receiver deleted it).
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=seen[0].receipt_handle)
    await asyncio.wait_for(interrupted.wait(), 10)
    stop.set()
    await asyncio.wait_for(running, 10)


async def test_a_long_retry_later_is_cut_to_what_sqs_allows_and_holds(
    stack: Stack, aws: dict[str, Any]
) -> None:
    sqs = aws["sqs"]
    url = await queue_url(sqs, f"{stack.name}-transfer-s3-dlq")
    await sqs.send_message(QueueUrl=url, MessageBody="not a message")
    handled = asyncio.Event()

    async def park(_message: ReceivedMessage) -> None:
        handled.set()
        raise RetryLater(12 * 3600, "parked for an operator")

    stop = asyncio.Event()
    consumer = QueueConsumer(sqs, url, park, visibility_timeout=2, wait_seconds=1)
    running = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(handled.wait(), 20)
    stop.set()
    await asyncio.wait_for(running, 10)
    # Three old visibility timeouts later the message is still parked.
    deadline = asyncio.get_running_loop().time() + 6
    while asyncio.get_running_loop().time() < deadline:
        assert await queue_counts(sqs, url) == (0, 1)
        await asyncio.sleep(0.5)
    cut = QueueConsumer._within_limit(
        ReceivedMessage("m", "r", "", 1, received_at=time.time() - 3600), 12 * 3600
    )
    assert 11 * 3600 - 62 <= cut <= 11 * 3600 - 60


async def test_a_destination_path_is_held_by_one_and_only_moves_forward(
    stack: Stack, aws: dict[str, Any]
) -> None:
    done: set[str] = set()

    async def holder_done(_holder: str, owner: str) -> bool:
        return owner in done

    paths = DestinationPaths(aws["dynamodb"], f"{stack.name}-locks", holder_done)
    name, older, newer = "path/H5001/a.csv", "2026-12-01T10:00:00.000Z", "2026-12-01T11:00:00.000Z"
    first = await paths.hold(name, "worker-1", 60, "H5001/sha256:old", older)
    assert (first.held, first.superseded_by) == (True, None)
    assert not (await paths.hold(name, "worker-2", 60, "H5001/sha256:new", newer)).held
    assert (await paths.hold(name, "worker-1", 60, "H5001/sha256:old", older)).held, "a renewal"
    await paths.release(name, "worker-2")  # not its own: nothing changes
    assert not (await paths.hold(name, "worker-2", 60, "H5001/sha256:new", newer)).held
    # worker-1 delivered and kept the path; once its claim ended, the next upload takes over.
    done.add("worker-1")
    assert (await paths.hold(name, "worker-2", 60, "H5001/sha256:new", newer)).held
    # The older upload, retried late, is superseded: the path only moves forward.
    late = await paths.hold(name, "worker-3", 60, "H5001/sha256:old", older)
    assert (late.held, late.superseded_by) == (False, newer)
    await paths.release(name, "worker-2")  # not delivered: freed, and still moved forward
    again = await paths.hold(name, "worker-4", 60, "H5001/sha256:old", older)
    assert (again.held, again.superseded_by) == (False, newer)
    assert (await paths.hold(name, "worker-5", 60, "H5001/sha256:new", newer)).held
