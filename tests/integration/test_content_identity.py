"""A file's content identity depends on its bytes only (D4), against moto in
server mode: one PutObject, a multipart upload without checksums and one with
a full-object checksum of the same bytes are one file, delivered once; an
entry recorded under the older identity (the MD5 ETag) is still recognised."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from conveyor_scanner.app import run as run_scanner
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.identity import content_id, legacy_content_id
from tests.integration.test_scanner import _settle, route, scanner_settings, transfer_queue
from tests.support import (
    InProcessServices,
    Stack,
    bodies,
    eventually,
    ledger_items,
    scanner_parts,
    write_routes,
)

MiB = 1024 * 1024
PART = 5 * MiB
#: Three parts: above every SDK's multipart threshold in spirit, small for moto.
DATA = os.urandom(12 * MiB)
SHA256 = hashlib.sha256(DATA).hexdigest()


async def put_multipart(s3: Any, bucket: str, key: str, data: bytes, **checksum: str) -> None:
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key, **checksum)
    parts = []
    for number, start in enumerate(range(0, len(data), PART), 1):
        extra = {"ChecksumAlgorithm": checksum["ChecksumAlgorithm"]} if checksum else {}
        sent = await s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[start : start + PART],
            **extra,
        )
        part = {"PartNumber": number, "ETag": sent["ETag"]}
        part |= {k: v for k, v in sent.items() if k.startswith("Checksum") and k != "ChecksumType"}
        parts.append(part)
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )


UPLOADS: dict[str, dict[str, str] | None] = {
    "single.bin": None,  # PutObject with boto3's default CRC-32
    "multipart.bin": {},  # no checksum at all
    "multipart-sha256-full.bin": {"ChecksumAlgorithm": "SHA256", "ChecksumType": "FULL_OBJECT"},
    "multipart-sha256-composite.bin": {"ChecksumAlgorithm": "SHA256"},
}


async def upload(aws: dict[str, Any], stack: Stack, key: str) -> None:
    how = UPLOADS[key.rsplit("/", 1)[-1]]
    if how is None:
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=key, Body=DATA)
    else:
        await put_multipart(aws["s3"], stack.pickup_bucket, key, DATA, **how)


async def test_every_upload_method_gives_the_same_identity(
    stack: Stack, aws: dict[str, Any]
) -> None:
    pickup = S3Store(aws["s3"], stack.pickup_bucket)
    reads: list[str] = []

    def reader(key: str) -> Any:
        @asynccontextmanager
        async def read() -> AsyncIterator[AsyncIterator[bytes]]:
            reads.append(key)
            async with pickup.open(f"H2001/{key}") as chunks:
                yield chunks

        return read

    identities = {}
    for name in UPLOADS:
        await upload(aws, stack, f"H2001/{name}")
        head = await pickup.head(f"H2001/{name}")
        identities[name] = await content_id(head, name, reader(name))
    assert identities == dict.fromkeys(UPLOADS, f"sha256:{SHA256}")
    # Only the full-object SHA-256 is taken from S3; moto reports a multipart
    # upload's composite SHA-256 without marking it, and it is not trusted.
    assert reads == ["single.bin", "multipart.bin", "multipart-sha256-composite.bin"]


async def test_same_bytes_uploaded_three_ways_are_delivered_once(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    routes = write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    services.start(run_scanner, scanner_settings(stack, routes))
    transfers = await transfer_queue(aws, stack)
    await upload(aws, stack, "H2001/single.bin")
    [first] = await eventually(lambda: bodies(sqs, transfers, settle=0.2), what="the delivery")
    assert first["content_id"] == f"sha256:{SHA256}"
    await _settle(aws, stack, "H2001", first["content_id"], "success")

    await upload(aws, stack, "H2001/multipart.bin")
    await upload(aws, stack, "H2001/multipart-sha256-full.bin")

    async def duplicates_removed() -> bool:
        listed = await s3.list_objects_v2(Bucket=stack.pickup_bucket, Prefix="H2001/multipart")
        return not listed.get("Contents")

    await eventually(duplicates_removed, timeout=20, what="both duplicates to leave the pick-up")
    assert await bodies(sqs, transfers, settle=0.5) == []
    [entry] = await ledger_items(aws["dynamodb"], stack, "H2001")
    assert (entry["fileName"], entry["status"]) == ("single.bin", "success")


async def test_an_entry_under_the_older_identity_is_still_known(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, services: InProcessServices
) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    routes = write_routes(tmp_path / "routes.yaml", [route(stack, "H2001")])
    transfers = await transfer_queue(aws, stack)
    # Delivered before the identity was the SHA-256: keyed by the MD5 ETag.
    await s3.put_object(Bucket=stack.pickup_bucket, Key="H2001/old/report.csv", Body=b"old bytes")
    head = await S3Store(s3, stack.pickup_bucket).head("H2001/old/report.csv")
    legacy = legacy_content_id(head, "H2001/old/report.csv")
    assert legacy == hashlib.md5(b"old bytes").hexdigest()  # noqa: S324 - S3's ETag
    await s3.delete_object(Bucket=stack.pickup_bucket, Key="H2001/old/report.csv")
    await aws["dynamodb"].put_item(
        TableName=f"{stack.name}-files",
        Item={
            "clientId": {"S": "H2001"},
            "contentId": {"S": legacy},
            "timestamp": {"S": "2026-01-05T10:00:00.000Z"},
            "status": {"S": "success"},
            "filePath": {"S": f"s3://{stack.pickup_bucket}/H2001/old/report.csv"},
            "fileName": {"S": "report.csv"},
            "sendAttempts": {"N": "1"},
            "active": {"BOOL": False},
            "jobId": {"S": "H2001-20260105T100000Z-000000"},
            "routeName": {"S": "client H2001"},
            "sourceBucket": {"S": stack.pickup_bucket},
            "sourceKey": {"S": "H2001/old/report.csv"},
        },
    )
    services.start(run_scanner, scanner_settings(stack, routes, legacy_identities=True))
    await s3.put_object(Bucket=stack.pickup_bucket, Key="H2001/again.csv", Body=b"old bytes")
    await s3.put_object(Bucket=stack.pickup_bucket, Key="H2001/new.csv", Body=b"new bytes")
    [sent] = await eventually(lambda: bodies(sqs, transfers, settle=0.5), what="the new file")
    assert sent["file_name"] == "new.csv"

    async def duplicate_removed() -> bool:
        listed = await s3.list_objects_v2(Bucket=stack.pickup_bucket, Prefix="H2001/again.csv")
        return not listed.get("Contents")

    await eventually(duplicate_removed, what="the file known by its older identity to be removed")
    entries = {e["contentId"]: e for e in await ledger_items(aws["dynamodb"], stack, "H2001")}
    assert set(entries) == {legacy, f"sha256:{hashlib.sha256(b'new bytes').hexdigest()}"}


async def test_a_scan_of_kept_files_reads_and_writes_none_of_them_again(
    stack: Stack, aws: dict[str, Any], tmp_path: Path
) -> None:
    from conveyor_scanner.identities import KnownIdentities
    from conveyor_scanner.scan import ScheduledScan
    from conveyor_shared.config import load_routes
    from conveyor_shared.config.loader import RoutesSource
    from conveyor_shared.ledger import FileStatus, Leases

    routes = write_routes(tmp_path / "routes.yaml", [route(stack, "H2001", after_delivery="keep")])
    the_route = (await load_routes(str(routes))).routes[0]
    identities = KnownIdentities(aws["dynamodb"], f"{stack.name}-locks")
    parts = await scanner_parts(aws, stack, await transfer_queue(aws, stack), identities=identities)
    keys = [f"H2001/kept/{i:03d}.csv" for i in range(120)]
    for key in keys:
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=key, Body=key.encode())
    assert await parts.recorder.record(the_route, keys)
    for entry in await parts.files.files_of_client("H2001"):  # delivered, and kept
        assert await parts.files.settle(entry, FileStatus.SUCCESS)

    class NoHealthCheck:
        async def run(self, _routes: Any) -> None:
            return None

    scan = ScheduledScan(
        leases=Leases(aws["dynamodb"], f"{stack.name}-locks"),
        routes=RoutesSource(str(routes)),
        recorder=parts.recorder,
        done_files=None,  # type: ignore[arg-type]
        health=NoHealthCheck(),  # type: ignore[arg-type]
        files=parts.files,
        identities=identities,
        s3_client=aws["s3"],
        lease_seconds=60,
        batch_max_files=1000,
    )
    async with count_requests(aws["s3"], aws["dynamodb"]) as calls:
        assert await scan.run()
    per_key = {op: n for op, n in calls.items() if n >= len(keys) // 2}
    assert per_key == {}, f"requests that grow with the kept files: {per_key}"
    assert calls["BatchGetItem"] == 2, calls  # 100 keys a request
    for operation in ("GetObject", "HeadObject", "PutItem"):
        assert operation not in calls, calls

    # One of them uploaded again with other bytes: only that one is read and recorded.
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=keys[7], Body=b"a correction")
    async with count_requests(aws["s3"], aws["dynamodb"]) as calls:
        assert await scan.run()
    assert calls["GetObject"] == 1, calls
    entries = {e.file_name: e for e in await parts.files.files_of_client("H2001") if e.active}
    assert list(entries) == ["007.csv"]


@asynccontextmanager
async def count_requests(*clients: Any) -> AsyncIterator[dict[str, int]]:
    """How many requests of each operation ``clients`` make inside the block."""
    calls: dict[str, int] = {}

    def count(model: Any, **_kwargs: Any) -> None:
        calls[model.name] = calls.get(model.name, 0) + 1

    for client in clients:
        client.meta.events.register("before-call.*.*", count)
    try:
        yield calls
    finally:
        for client in clients:
            client.meta.events.unregister("before-call.*.*", count)
