"""A duplicate of a file in flight is decided the moment that file settles,
not at the next scheduled scan (D4), against moto in server mode: removed
(exactly its S3 version) if the original was delivered, sent if it failed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conveyor_scanner.app import run as run_scanner
from conveyor_shared.delivery.held import HeldDuplicates
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger import FileLedger, FileStatus
from conveyor_shared.ledger.models import FileEntry
from conveyor_transfer_s3.app import run as run_transfer_s3
from tests.integration.test_scanner import put, route, scanner_settings, transfer_queue
from tests.support import (
    InProcessServices,
    Stack,
    bodies,
    eventually,
    ledger_items,
    queue_url,
    scanner_parts,
    write_routes,
)


@pytest.fixture
async def scanner(stack: Stack, tmp_path: Path, services: InProcessServices) -> Path:
    routes = write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    services.start(run_scanner, scanner_settings(stack, routes))
    return routes


def ledger(aws: dict[str, Any], stack: Stack) -> FileLedger:
    return FileLedger(aws["dynamodb"], f"{stack.name}-files")


async def versions(aws: dict[str, Any], stack: Stack, key: str) -> list[tuple[str, bool]]:
    """(VersionId, is a delete marker) of every version of ``key``."""
    listed = await aws["s3"].list_object_versions(Bucket=stack.pickup_bucket, Prefix=key)
    return [(v["VersionId"], False) for v in listed.get("Versions", [])] + [
        (m["VersionId"], True) for m in listed.get("DeleteMarkers", [])
    ]


async def hold_a_duplicate(aws: dict[str, Any], stack: Stack) -> tuple[dict[str, Any], str]:
    """``original.csv`` dispatched (no worker takes it), then ``copy.csv`` of the
    same bytes, held for it; the transfer message and copy.csv's VersionId."""
    sqs, s3 = aws["sqs"], aws["s3"]
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2001/original.csv", b"same bytes")
    [first] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="the original")
    await put(aws, stack, "H2001/copy.csv", b"same bytes")

    async def held() -> FileEntry | None:
        entry = await ledger(aws, stack).get("H2001", first["content_id"])
        return entry if entry and entry.held_duplicates else None

    entry = await eventually(held, what="copy.csv to be held for the original")
    assert entry is not None
    assert entry.held_duplicates is not None
    [duplicate] = entry.held_duplicates
    head = await s3.head_object(Bucket=stack.pickup_bucket, Key="H2001/copy.csv")
    assert (duplicate.key, duplicate.version) == ("H2001/copy.csv", head["VersionId"])
    return first, head["VersionId"]


async def settle_and_release(
    aws: dict[str, Any], stack: Stack, content_id: str, status: FileStatus
) -> None:
    files = ledger(aws, stack)
    entry = await files.get("H2001", content_id)
    assert entry is not None
    assert await files.settle(entry, status, error="test" if status is FileStatus.FAIL else None)
    settled = await files.get("H2001", content_id)
    assert settled is not None
    scanner_queue = await queue_url(aws["sqs"], f"{stack.name}-scanner")
    await HeldDuplicates(aws["sqs"], scanner_queue).release(settled)


async def test_held_duplicate_is_removed_once_the_original_is_delivered(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    first, _ = await hold_a_duplicate(aws, stack)
    await settle_and_release(aws, stack, first["content_id"], FileStatus.SUCCESS)

    async def removed() -> bool:
        return await versions(aws, stack, "H2001/copy.csv") == []

    await eventually(removed, timeout=10, what="exactly copy.csv's version to be deleted")
    assert await bodies(aws["sqs"], await transfer_queue(aws, stack), settle=0.5) == []
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert (entry["fileName"], entry["status"]) == ("original.csv", "success")
    assert "heldDuplicates" not in entry


async def test_held_duplicate_is_sent_when_the_original_fails(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    first, _ = await hold_a_duplicate(aws, stack)
    await settle_and_release(aws, stack, first["content_id"], FileStatus.FAIL)
    transfers = await transfer_queue(aws, stack)
    [again] = await eventually(
        lambda: bodies(aws["sqs"], transfers, settle=0.2), timeout=10, what="copy.csv to be sent"
    )
    assert (again["file_name"], again["content_id"]) == ("copy.csv", first["content_id"])
    assert again["job_id"] != first["job_id"]


async def test_a_newer_upload_under_the_duplicates_key_survives(
    stack: Stack, aws: dict[str, Any], scanner: Path
) -> None:
    s3 = aws["s3"]
    first, held_version = await hold_a_duplicate(aws, stack)
    transfers = await transfer_queue(aws, stack)
    await put(aws, stack, "H2001/copy.csv", b"different bytes")  # a new file under that key
    [newer] = await eventually(
        lambda: bodies(aws["sqs"], transfers, settle=0.2), what="the newer upload to be sent"
    )
    assert newer["file_name"] == "copy.csv"
    assert newer["content_id"] != first["content_id"]
    await settle_and_release(aws, stack, first["content_id"], FileStatus.SUCCESS)

    async def held_version_gone() -> bool:
        return held_version not in {v for v, _ in await versions(aws, stack, "H2001/copy.csv")}

    await eventually(held_version_gone, timeout=10, what="the held version to be deleted")
    assert await versions(aws, stack, "H2001/copy.csv") == [(newer["source"]["version"], False)]
    current = await s3.get_object(Bucket=stack.pickup_bucket, Key="H2001/copy.csv")
    async with current["Body"] as body:
        assert await body.read() == b"different bytes"


async def test_duplicates_in_one_batch_are_settled_with_the_delivery(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    """End to end: the transfer worker releases what was held when it settles."""
    s3 = aws["s3"]
    destination = f"{stack.name}-inbound"
    await s3.create_bucket(Bucket=destination)
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H2001", destination={"type": "s3", "bucket": destination})],
    )
    services.start(run_scanner, scanner_settings(stack, routes, batch_window_seconds=1.0))
    services.start(
        run_transfer_s3,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    # Three uploads of the same bytes in one batch: one is delivered, the
    # others are held for it while it is in flight.
    await asyncio.gather(*(put(aws, stack, f"H2001/copy-{i}.csv", b"same") for i in range(3)))

    async def settled() -> bool:
        pickup = await s3.list_objects_v2(Bucket=stack.pickup_bucket, Prefix="H2001/")
        delivered = await s3.list_objects_v2(Bucket=destination)
        return not pickup.get("Contents") and len(delivered.get("Contents", [])) == 1

    await eventually(settled, timeout=20, what="one delivery and both duplicates removed")
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert entry["status"] == "success"


async def test_the_health_check_sends_what_was_held_for_a_file_it_fails(
    stack: Stack, aws: dict[str, Any], scanner: Path, tmp_path: Path
) -> None:
    from conveyor_scanner.scan import HealthCheck
    from conveyor_shared.config import load_routes

    first, _ = await hold_a_duplicate(aws, stack)
    await aws["s3"].delete_object(Bucket=stack.pickup_bucket, Key="H2001/original.csv")
    transfers = await transfer_queue(aws, stack)
    parts = await scanner_parts(aws, stack, transfers)
    health = HealthCheck(
        files=parts.files,
        jobs=parts.jobs,
        recorder=parts.recorder,
        batches=parts.batches,
        publisher=parts.publisher,
        completion=parts.completion,
        s3_client=aws["s3"],
        stale_after=0,
        max_attempts=3,
    )
    await health.run([(await load_routes(str(tmp_path / "routes.yaml"))).routes[0]])
    [again] = await bodies(aws["sqs"], transfers, settle=0.5)
    assert (again["file_name"], again["content_id"]) == ("copy.csv", first["content_id"])
