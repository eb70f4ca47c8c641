"""The scanner against moto in server mode (D2, D3, D4, D5, D9, D10, D12).

The scanner runs in-process (its real `run()`, over real HTTP to moto); no
transfer service runs, so the transfer queue shows exactly what was dispatched.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings
from tests.support import (
    InProcessServices,
    Stack,
    all_jobs,
    bodies,
    drain,
    eventually,
    ledger_items,
    queue_url,
    scanner_parts,
    subscribe_events,
    write_routes,
)


def route(stack: Stack, client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"client {client_id}",
        "client_id": client_id,
        "contacts": [f"{client_id.lower()}@example.com"],
        "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
        "destination": {"type": "s3", "bucket": "nowhere", "prefix": "in/"},
        **extra,
    }


def scanner_settings(stack: Stack, routes: Path, **overrides: Any) -> ScannerSettings:
    values: dict[str, Any] = {
        "routes_uri": str(routes),
        "stack": stack.name,
        "environment": "test",
        "receive_wait_seconds": 1,
        "batch_window_seconds": 0.3,
        "repair_grace_seconds": 0,
        **overrides,
    }
    return ScannerSettings(**values)


@pytest.fixture
async def scanner(stack: Stack, tmp_path: Path, services: InProcessServices) -> Path:
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            route(stack, "H2001"),
            route(stack, "H2002", trigger_on_done_file=True),
            route(stack, "H2003", bypass_file_checks=True),
        ],
    )
    services.start(run_scanner, scanner_settings(stack, routes))
    return routes


async def transfer_queue(aws: dict[str, Any], stack: Stack) -> str:
    return await queue_url(aws["sqs"], f"{stack.name}-transfer-s3")


async def put(aws: dict[str, Any], stack: Stack, key: str, body: bytes) -> None:
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=key, Body=body)


async def test_arrival_is_recorded_and_dispatched_within_seconds(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    events = await subscribe_events(aws, stack)
    await put(aws, stack, "H2001/members.csv", b"a,b\n1,2\n")
    transfers = await queue_url(aws["sqs"], f"{stack.name}-transfer-s3")
    sent = await eventually(
        lambda: bodies(aws["sqs"], transfers, settle=0.2), timeout=10, what="a transfer message"
    )
    assert len(sent) == 1
    assert sent[0]["kind"] == "transfer.requested"
    assert sent[0]["source"]["key"] == "H2001/members.csv"
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert entry["status"] == "processing"
    assert entry["sendAttempts"] == 0
    assert entry["active"] is True
    assert entry["fileName"] == "members.csv"
    assert entry["filePath"] == f"s3://{stack.pickup_bucket}/H2001/members.csv"
    assert entry["contentId"] == sent[0]["content_id"]

    async def started() -> list[dict[str, Any]]:
        return [e for e in await bodies(aws["sqs"], events) if e["kind"] == "job.started"]

    # Dispatched first; the job (which groups files for the mails) starts when its batch closes.
    announced = await eventually(started, what="job.started")
    announced += await started()
    assert [(e["client_id"], e["job_id"], e["files"]) for e in announced] == [
        ("H2001", entry["jobId"], 1)
    ]


async def test_same_s3_event_three_times_gives_one_transfer(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs = aws["sqs"]
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2001/claims.csv", b"claims\n")
    first = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="first transfer")
    assert len(first) == 1
    head = await aws["s3"].head_object(Bucket=stack.pickup_bucket, Key="H2001/claims.csv")
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": stack.pickup_bucket},
                    "object": {"key": "H2001/claims.csv", "size": 7, "eTag": head["ETag"]},
                },
            }
        ]
    }
    scanner_queue = await queue_url(sqs, f"{stack.name}-scanner")
    for _ in range(3):
        await sqs.send_message(QueueUrl=scanner_queue, MessageBody=json.dumps(event))

    async def scanner_queue_empty() -> bool:
        attrs = (
            await sqs.get_queue_attributes(
                QueueUrl=scanner_queue,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        )["Attributes"]
        return set(attrs.values()) == {"0"}

    await eventually(scanner_queue_empty, what="the duplicates to be handled")
    assert await bodies(sqs, transfers) == []
    # A repeated event may open a batch of its own; with nothing new in it,
    # it is discarded when it closes.
    jobs = await eventually(
        lambda: _one_job_left(aws, stack), what="only the file's job to be left"
    )
    assert jobs[0]["jobId"] == first[0]["job_id"]


async def test_done_file_with_200_files_is_one_job(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs = aws["sqs"]
    events = await subscribe_events(aws, stack)
    transfers = await transfer_queue(aws, stack)
    await asyncio.gather(
        *(put(aws, stack, f"H2002/part-{i:03d}.csv", f"row {i}\n".encode()) for i in range(200))
    )
    assert await bodies(sqs, transfers, settle=1.5) == [], "nothing moves before the .done"
    await put(aws, stack, "H2002/H2002.done", b"")

    async def dispatched() -> list[dict[str, Any]] | None:
        found = await bodies(sqs, transfers, settle=0.5)
        return found or None

    sent = await eventually(dispatched, timeout=30, what="the batch")
    sent += await bodies(sqs, transfers, settle=1.0)
    assert len(sent) == 200
    assert len({m["content_id"] for m in sent}) == 200
    assert len({m["job_id"] for m in sent}) == 1
    started = [e for e in await bodies(sqs, events) if e["kind"] == "job.started"]
    assert len(started) == 1
    assert started[0]["files"] == 200
    listed = await aws["s3"].list_objects_v2(Bucket=stack.pickup_bucket, Prefix="H2002/")
    keys = {o["Key"] for o in listed["Contents"]}
    assert "H2002/H2002.done" not in keys, "the .done file is deleted once the batch is recorded"
    assert len(keys) == 200


async def test_files_uploaded_10_ms_after_the_done_file_wait_for_the_next_one(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    routes = write_routes(
        tmp_path / "routes.yaml", [route(stack, "H2002", trigger_on_done_file=True)]
    )
    for _ in range(2):  # two replicas on one queue: either may take the .done
        services.start(run_scanner, scanner_settings(stack, routes))
    transfers = await transfer_queue(aws, stack)
    # Start just after a second boundary, so that S3's LastModified (to the
    # second) cannot tell the files apart: only their arrival order can.
    await asyncio.sleep(1.05 - time.time() % 1)
    await put(aws, stack, "H2002/before.csv", b"before")
    await put(aws, stack, "H2002/H2002.done", b"")
    await asyncio.sleep(0.01)  # the scenario: an upload 10 ms after the .done
    await put(aws, stack, "H2002/after.csv", b"after")
    seconds = set()
    for key in ("before.csv", "H2002.done", "after.csv"):
        head = await s3.head_object(Bucket=stack.pickup_bucket, Key=f"H2002/{key}")
        seconds.add(head["LastModified"])
    assert len(seconds) == 1, "the three uploads share one LastModified second"

    first = await eventually(lambda: bodies(sqs, transfers, settle=0.5), what="the first batch")
    assert [m["file_name"] for m in first] == ["before.csv"]
    await eventually(
        lambda: _missing(s3, stack, "H2002/H2002.done"), what="the .done to be deleted"
    )
    assert await bodies(sqs, transfers, settle=1.0) == [], "after.csv waits for the next .done"

    await put(aws, stack, "H2002/H2002.done", b"")
    second = await eventually(lambda: bodies(sqs, transfers, settle=0.5), what="the next batch")
    assert [m["file_name"] for m in second] == ["after.csv"]
    assert second[0]["job_id"] != first[0]["job_id"]


async def _one_job_left(aws: dict[str, Any], stack: Stack) -> list[dict[str, Any]] | None:
    jobs = await all_jobs(aws["dynamodb"], stack)
    return jobs if len(jobs) == 1 else None


async def _missing(s3: Any, stack: Stack, key: str) -> bool:
    listed = await s3.list_objects_v2(Bucket=stack.pickup_bucket, Prefix=key)
    return not listed.get("Contents")


async def test_burst_of_1000_files_forms_a_handful_of_jobs(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    sqs = aws["sqs"]
    routes = write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    # moto answers one request at a time (a 10-message receive takes ~0.2 s),
    # so under this upload flood its replies can stall for seconds: a quiet
    # window of 5 s here stands for the default 2 s against AWS.
    services.start(
        run_scanner,
        scanner_settings(stack, routes, batch_window_seconds=5.0, batch_max_wait_seconds=60.0),
    )
    events = await subscribe_events(aws, stack)
    transfers = await transfer_queue(aws, stack)
    semaphore = asyncio.Semaphore(16)

    async def put_one(i: int) -> None:
        async with semaphore:
            await put(aws, stack, f"H2001/burst/f{i:04d}.dat", f"content {i}".encode())

    await asyncio.gather(*(put_one(i) for i in range(1000)))
    sent: list[dict[str, Any]] = []

    async def all_dispatched() -> bool:
        sent.extend(await bodies(sqs, transfers, settle=0.3))
        return len(sent) >= 1000

    await eventually(all_dispatched, timeout=120, what="1000 transfer messages")
    sent += await bodies(sqs, transfers, settle=1.0)
    assert len(sent) == 1000
    assert len({m["content_id"] for m in sent}) == 1000, "every file dispatched exactly once"
    jobs = {m["job_id"] for m in sent}
    assert 1 <= len(jobs) <= 10, f"{len(jobs)} jobs for one burst"
    started: list[dict[str, Any]] = []

    async def every_job_started() -> bool:
        started.extend(e for e in await bodies(sqs, events) if e["kind"] == "job.started")
        return {e["job_id"] for e in started} >= jobs

    await eventually(every_job_started, timeout=60, what="job.started for every job")
    started += [e for e in await bodies(sqs, events) if e["kind"] == "job.started"]
    assert sorted(e["job_id"] for e in started) == sorted(jobs)
    assert sum(e["files"] for e in started) == 1000


async def test_duplicate_content_is_removed_and_not_sent(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2001/original.csv", b"same bytes")
    [first] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="first transfer")
    # Delivered (as the transfer service would record it), then the same bytes again:
    await _settle(aws, stack, "H2001", first["content_id"], "success")
    await put(aws, stack, "H2001/copy-of-original.csv", b"same bytes")

    async def removed() -> bool:
        listed = await s3.list_objects_v2(
            Bucket=stack.pickup_bucket, Prefix="H2001/copy-of-original.csv"
        )
        return not listed.get("Contents")

    await eventually(removed, what="the duplicate to leave the pick-up")
    versions = await s3.list_object_versions(
        Bucket=stack.pickup_bucket, Prefix="H2001/copy-of-original.csv"
    )
    assert not versions.get("Versions"), "exactly the duplicate's version is deleted"
    assert not versions.get("DeleteMarkers"), "no delete marker hides a newer upload"
    assert await bodies(sqs, transfers) == []
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert entry["fileName"] == "original.csv"
    assert entry["status"] == "success"


async def test_bypass_resets_the_entry_and_sends_again(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs = aws["sqs"]
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2003/monthly.csv", b"monthly data")
    [first] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="first transfer")
    await _settle(aws, stack, "H2003", first["content_id"], "success")
    await put(aws, stack, "H2003/monthly.csv", b"monthly data")
    [second] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="the resend")
    assert second["content_id"] == first["content_id"]
    assert second["job_id"] != first["job_id"]
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2003")
    assert (entry["status"], entry["sendAttempts"], entry["active"]) == ("processing", 0, True)
    assert entry["jobId"] == second["job_id"]


async def test_a_failed_file_dropped_again_is_retried(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs = aws["sqs"]
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2001/flaky.csv", b"flaky")
    [first] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="first transfer")
    await _settle(aws, stack, "H2001", first["content_id"], "fail")
    await put(aws, stack, "H2001/flaky.csv", b"flaky")
    [again] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="the retry")
    assert again["content_id"] == first["content_id"]


async def _settle(
    aws: dict[str, Any], stack: Stack, client: str, content_id: str, status: str
) -> None:
    from conveyor_shared.ledger import FileLedger, FileStatus

    files = FileLedger(aws["dynamodb"], f"{stack.name}-files")
    entry = await files.get(client, content_id)
    assert entry is not None
    assert await files.settle(entry, FileStatus(status), error="test" if status == "fail" else None)


async def test_bad_input_is_refused_on_purpose_and_logged(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    sqs = aws["sqs"]
    events = await subscribe_events(aws, stack)
    transfers = await transfer_queue(aws, stack)
    scanner_queue = await queue_url(sqs, f"{stack.name}-scanner")
    dlq = await queue_url(sqs, f"{stack.name}-scanner-dlq")
    long_name = "x" * 256 + ".csv"
    refused = [
        "H2001/../escape.csv",
        "H2001/bad\x07name.csv",
        "H2001/reports\\2026.csv",
        f"H2001/{long_name}",
    ]
    with structlog.testing.capture_logs() as logs:
        await aws["s3"].create_bucket(Bucket=f"{stack.name}-elsewhere")
        await sqs.send_message(
            QueueUrl=scanner_queue,
            MessageBody=json.dumps(
                {
                    "Records": [
                        {
                            "eventName": "ObjectCreated:Put",
                            "s3": {
                                "bucket": {"name": f"{stack.name}-elsewhere"},
                                "object": {"key": "a.csv"},
                            },
                        }
                    ]
                }
            ),
        )
        await sqs.send_message(QueueUrl=scanner_queue, MessageBody="this is not json")
        for key in refused:
            await put(aws, stack, key, b"1")
        await put(aws, stack, "H2001/folder/", b"")
        await put(aws, stack, "H2001/empty.csv", b"")
        await put(aws, stack, "H2001/ok.csv", b"ok")

        sent = await eventually(
            lambda: _transfers_until(sqs, transfers, 2),
            timeout=20,
            what="the two good files (empty.csv and ok.csv)",
        )
        dead = await eventually(
            lambda: drain(sqs, dlq, settle=0.2), timeout=30, what="the malformed message in the DLQ"
        )
        reported: list[dict[str, Any]] = []

        async def all_reported() -> bool:
            found = await bodies(sqs, events, settle=0.5)
            reported.extend(e for e in found if e["kind"] == "file.failed")
            return len(reported) >= len(refused)

        await eventually(all_reported, what="one ops report per refused file")
        # The next scheduled scan does not meet them again.
        await sqs.send_message(
            QueueUrl=scanner_queue, MessageBody=json.dumps({"kind": "scan.requested", "v": 1})
        )
        await eventually(
            lambda: _logged(logs, "scan.finished"), timeout=20, what="a scheduled scan"
        )
        reported += [e for e in await bodies(sqs, events, settle=0.5) if e["kind"] == "file.failed"]
    assert sorted(m["file_name"] for m in sent) == ["empty.csv", "ok.csv"]
    assert [m["Body"] for m in dead] == ["this is not json"]
    rejected = [(e["key"], e["reason"]) for e in logs if e["event"] == "pickup.rejected"]
    assert len(rejected) == len(refused), "each refused file is logged once"
    reasons = dict(rejected)
    assert "'..'" in reasons["H2001/../escape.csv"]
    assert "control character" in reasons["H2001/bad\x07name.csv"]
    assert reasons["H2001/reports\\2026.csv"] == "name contains a backslash"
    assert "260 bytes" in reasons[f"H2001/{long_name}"]
    assert all(e["log_level"] == "error" for e in logs if e["event"] == "pickup.rejected")
    assert sorted(e["file_name"] for e in reported) == sorted(
        ["../escape.csv", "bad\\x07name.csv", "reports\\2026.csv", long_name]
    )
    assert all(e["error"].startswith("refused: ") for e in reported)
    listed = await aws["s3"].list_objects_v2(Bucket=stack.pickup_bucket)
    keys = {o["Key"] for o in listed["Contents"]}
    assert {f"conveyor-quarantine/{k}" for k in refused} <= keys
    assert not keys & set(refused), "refused files are moved out of the pick-up"
    unknown = [e for e in logs if e["event"] == "pickup.unknown_location"]
    assert [e["bucket"] for e in unknown] == [f"{stack.name}-elsewhere"]
    assert any(e["event"] == "message.malformed" for e in logs)
    entries = await ledger_items(aws["dynamodb"], stack, "H2001")
    empty = next(e for e in entries if e["fileName"] == "empty.csv")
    assert empty["contentId"] == "empty:H2001/empty.csv"


async def _logged(logs: list[Any], event: str) -> bool:
    return any(e["event"] == event for e in logs)


async def _transfers_until(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    found = await bodies(sqs, url, settle=1.0)
    return found if len(found) >= count else []


async def test_object_deleted_before_pickup_is_skipped(
    stack: Stack, aws: dict[str, Any], tmp_path: Path
) -> None:
    recorder, _ = await _recorder(aws, stack, tmp_path)
    the_route = await _route(tmp_path)
    with structlog.testing.capture_logs() as logs:
        assert await recorder.record(the_route, ["H2001/vanished.csv"]) is None
    assert [e["event"] for e in logs] == ["pickup.gone"]
    assert await all_jobs(aws["dynamodb"], stack) == []


async def _route(tmp_path: Path) -> Any:
    from conveyor_shared.config import load_routes

    return (await load_routes(str(tmp_path / "routes.yaml"))).routes[0]


async def _recorder(
    aws: dict[str, Any], stack: Stack, tmp_path: Path, sender_url: str | None = None
) -> tuple[Any, Any]:
    write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    parts = await scanner_parts(aws, stack, sender_url or await transfer_queue(aws, stack))
    return parts.recorder, parts.files


async def test_crash_between_ledger_write_and_enqueue_is_repaired_by_the_next_scan(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    from botocore.exceptions import ClientError

    sqs = aws["sqs"]
    events = await subscribe_events(aws, stack)
    transfers = await transfer_queue(aws, stack)
    # A recorder whose queue does not exist fails exactly between the ledger
    # write and the enqueue, as a crash there would.
    broken, _ = await _recorder(aws, stack, tmp_path, sender_url=transfers + "-does-not-exist")
    the_route = await _route(tmp_path)
    await put(aws, stack, "H2001/interrupted.csv", b"interrupted")
    with pytest.raises(ClientError):
        await broken.record(the_route, ["H2001/interrupted.csv"])
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert entry["status"] == "processing"
    assert await bodies(sqs, transfers, settle=0.3) == []

    routes = tmp_path / "routes.yaml"
    services.start(run_scanner, scanner_settings(stack, routes))
    scanner_queue = await queue_url(sqs, f"{stack.name}-scanner")
    for _ in range(2):  # two scheduled scans: the second must not send it again
        await sqs.send_message(
            QueueUrl=scanner_queue, MessageBody=json.dumps({"kind": "scan.requested", "v": 1})
        )
    sent = await eventually(lambda: bodies(sqs, transfers, settle=0.5), what="the repair")
    sent += await bodies(sqs, transfers, settle=2.0)
    assert [m["source"]["key"] for m in sent] == ["H2001/interrupted.csv"]
    assert sent[0]["job_id"] == entry["jobId"]
    started = [e for e in await bodies(sqs, events) if e["kind"] == "job.started"]
    assert [e["job_id"] for e in started] == [entry["jobId"]]


async def test_two_scanners_racing_run_exactly_one_scan(
    stack: Stack, aws: dict[str, Any], tmp_path: Path
) -> None:
    from conveyor_scanner.identities import KnownIdentities
    from conveyor_scanner.scan import ScheduledScan
    from conveyor_shared.config.loader import RoutesSource
    from conveyor_shared.ledger import Leases

    recorder, files = await _recorder(aws, stack, tmp_path)
    leases = Leases(aws["dynamodb"], f"{stack.name}-locks")
    scans_run: list[str] = []

    class Health:
        async def run(self, _routes: Any) -> None:
            scans_run.append("health")
            await asyncio.sleep(0.5)  # hold the lease while the other scanner tries

    def scanner() -> ScheduledScan:
        return ScheduledScan(
            leases=leases,
            routes=RoutesSource(str(tmp_path / "routes.yaml")),
            recorder=recorder,
            done_files=None,
            health=Health(),  # type: ignore[arg-type]
            files=files,
            identities=KnownIdentities(aws["dynamodb"], f"{stack.name}-locks"),
            s3_client=aws["s3"],
            lease_seconds=60,
            batch_max_files=100,
        )

    one = scanner()  # two messages handled by one scanner process exclude each other too
    results = await asyncio.gather(*(s.run() for s in [one, one, scanner(), scanner(), one]))
    assert sorted(results) == [False, False, False, False, True]
    assert scans_run == ["health"]
    # The lease was released: the next scan runs.
    assert await scanner().run() is True


async def test_a_crashed_scanners_lease_expires(stack: Stack, aws: dict[str, Any]) -> None:
    from conveyor_shared.ledger import Leases

    leases = Leases(aws["dynamodb"], f"{stack.name}-locks")
    assert await leases.acquire("scheduled-scan", "crashed-scanner", seconds=1)
    assert not await leases.acquire("scheduled-scan", "another", seconds=60)
    await eventually(
        lambda: leases.acquire("scheduled-scan", "another", seconds=60),
        timeout=5,
        interval=0.25,
        what="the lease to expire",
    )


async def test_health_check_requeues_or_fails_stale_entries(
    stack: Stack, aws: dict[str, Any], tmp_path: Path
) -> None:
    from conveyor_scanner.scan import HealthCheck

    sqs = aws["sqs"]
    events = await subscribe_events(aws, stack)
    transfers = await transfer_queue(aws, stack)
    write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    parts = await scanner_parts(aws, stack, transfers)
    recorder, files = parts.recorder, parts.files
    the_route = await _route(tmp_path)
    await put(aws, stack, "H2001/stuck.csv", b"stuck")
    await put(aws, stack, "H2001/gone.csv", b"gone")
    await put(aws, stack, "H2001/tired.csv", b"tired")
    job_id = await recorder.record(
        the_route, ["H2001/stuck.csv", "H2001/gone.csv", "H2001/tired.csv"]
    )
    first = await bodies(sqs, transfers, settle=0.5)
    assert len(first) == 3
    by_name = {m["file_name"]: m for m in first}
    # "tired" was attempted three times by workers that died; "gone" left the pick-up.
    for _ in range(3):
        m = by_name["tired.csv"]
        assert await files.claim("H2001", m["content_id"], job_id, f"dead-{_}", lease_seconds=-1)
    await aws["s3"].delete_object(Bucket=stack.pickup_bucket, Key="H2001/gone.csv")

    health = HealthCheck(
        files=files,
        jobs=parts.jobs,
        recorder=recorder,
        batches=parts.batches,
        publisher=parts.publisher,
        completion=parts.completion,
        s3_client=aws["s3"],
        stale_after=0,
        max_attempts=3,
    )
    with structlog.testing.capture_logs() as logs:
        await health.run([the_route])
    stale = sorted(e["file"] for e in logs if e["event"] == "file.stale")
    assert stale == ["gone.csv", "stuck.csv", "tired.csv"]
    assert all(e["log_level"] == "error" for e in logs if e["event"] == "file.stale")
    requeued = await bodies(sqs, transfers, settle=0.5)
    assert [m["file_name"] for m in requeued] == ["stuck.csv"]
    entries = {e["fileName"]: e for e in await ledger_items(aws["dynamodb"], stack, "H2001")}
    assert entries["gone.csv"]["status"] == "fail"
    assert "left the pick-up" in entries["gone.csv"]["lastError"]
    assert entries["tired.csv"]["status"] == "fail"
    assert entries["stuck.csv"]["status"] == "processing"
    failed = [e for e in await bodies(sqs, events) if e["kind"] == "file.failed"]
    assert sorted(e["file_name"] for e in failed) == ["gone.csv", "tired.csv"]
