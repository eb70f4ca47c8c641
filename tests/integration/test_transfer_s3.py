"""transfer-s3 against moto in server mode (D6, D7): server-side copy when
the same credentials reach both buckets, streaming otherwise; KMS (the
route's key or the bucket's default) and bucket-owner settings; the
multipart server-side copy used above 5 GiB, its progress reports and its
abort; part numbers; and what happens to a delivered file in the pick-up
(delete, keep, archive)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog

from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.backends import s3 as s3_backend
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.errors import TransientError
from conveyor_transfer_s3.app import run as run_transfer_s3
from tests.support import InProcessServices, Stack, eventually, ledger_items, write_routes

MiB = 1024 * 1024
CLIENT = "H4001"


async def start(
    stack: Stack,
    services: InProcessServices,
    tmp_path: Path,
    destination: dict[str, Any],
    **route: Any,
) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            {
                "name": "S3 client",
                "client_id": CLIENT,
                "contacts": ["ops@example.com"],
                "pickup": f"s3://{stack.pickup_bucket}/{CLIENT}/",
                "destination": {"type": "s3", **destination},
                **route,
            }
        ],
    )
    common: dict[str, Any] = {
        "stack": stack.name,
        "routes_uri": str(routes),
        "environment": "test",
        "receive_wait_seconds": 1,
    }
    services.start(run_scanner, ScannerSettings(**common, batch_window_seconds=0.2))
    services.start(run_transfer_s3, TransferSettings(**common))


async def settled(aws: dict[str, Any], stack: Stack, count: int = 1) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        items = await ledger_items(aws["dynamodb"], stack, CLIENT)
        finished = [i for i in items if i["status"] != "processing"]
        return finished if len(finished) >= count else None

    return await eventually(done, timeout=60, what=f"{count} settled file(s)")


async def read(aws: dict[str, Any], bucket: str, key: str) -> bytes:
    response = await aws["s3"].get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def keys(aws: dict[str, Any], bucket: str, prefix: str = "") -> list[str]:
    listed = await aws["s3"].list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


async def test_same_account_copies_server_side_and_archives_the_pickup_file(
    stack: Stack, aws: dict[str, Any], services: InProcessServices, tmp_path: Path, unique: str
) -> None:
    destination, archive = f"dest-{unique}", f"archive-{unique}"
    for bucket in (destination, archive):
        await aws["s3"].create_bucket(Bucket=bucket)
    await start(
        stack,
        services,
        tmp_path,
        {"bucket": destination, "prefix": "/in"},  # a folder, however it is written
        after_delivery="archive",
        archive=f"s3://{archive}/{CLIENT}/",
    )
    data = os.urandom(3 * MiB)
    with structlog.testing.capture_logs() as logs:
        await aws["s3"].put_object(
            Bucket=stack.pickup_bucket, Key=f"{CLIENT}/2026/a.bin", Body=data
        )
        [entry] = await settled(aws, stack)
        await eventually(lambda: keys(aws, archive), what="the archived copy")
    assert entry["status"] == "success"
    assert await read(aws, destination, "in/2026/a.bin") == data
    delivered = next(e for e in logs if e["event"] == "transfer.delivered")
    assert delivered["server_side"] is True
    assert delivered["verified"] == ["md5:destination"]
    assert await keys(aws, archive) == [f"{CLIENT}/2026/a.bin"]
    assert await read(aws, archive, f"{CLIENT}/2026/a.bin") == data

    async def pickup_empty() -> bool:
        return await keys(aws, stack.pickup_bucket, f"{CLIENT}/") == []

    # Deletes of delivered versions go out a few at a time, just after the settle.
    await eventually(pickup_empty, timeout=10, what="the pick-up file to be removed")


async def test_other_credentials_stream_with_kms_and_bucket_owner_control(
    stack: Stack, aws: dict[str, Any], services: InProcessServices, tmp_path: Path, unique: str
) -> None:
    import aioboto3

    destination = f"dest-{unique}"
    await aws["s3"].create_bucket(Bucket=destination)
    async with aioboto3.Session(region_name="us-east-1").client("kms") as kms:
        key_id = (await kms.create_key())["KeyMetadata"]["KeyId"]
    await aws["secretsmanager"].create_secret(
        Name=f"{stack.name}/s3",
        SecretString=json.dumps(
            {"access_key_id": "AKIDCLIENTACCOUNT", "secret_access_key": "client-secret"}
        ),
    )
    await start(
        stack,
        services,
        tmp_path,
        {
            "bucket": destination,
            "credentials": {"secret": f"{stack.name}/s3"},
            "kms_key_id": key_id,
            "bucket_owner_full_control": True,
        },
        after_delivery="keep",
    )
    data = os.urandom(7 * MiB)  # above one 5 MiB part: a streamed multipart upload
    with structlog.testing.capture_logs() as logs:
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=f"{CLIENT}/big.bin", Body=data)
        [entry] = await settled(aws, stack)
    assert entry["status"] == "success"
    delivered = next(e for e in logs if e["event"] == "transfer.delivered")
    assert delivered["server_side"] is False
    assert delivered["bytes"] == len(data)
    head = await aws["s3"].head_object(Bucket=destination, Key="big.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(key_id)
    assert (
        hashlib.sha256(await read(aws, destination, "big.bin")).digest()
        == hashlib.sha256(data).digest()
    )
    # after_delivery: keep leaves the file, and the next scan does not send it again.
    assert await keys(aws, stack.pickup_bucket, f"{CLIENT}/") == [f"{CLIENT}/big.bin"]
    with structlog.testing.capture_logs() as logs:
        await aws["sqs"].send_message(
            QueueUrl=(await aws["sqs"].get_queue_url(QueueName=f"{stack.name}-scanner"))[
                "QueueUrl"
            ],
            MessageBody=json.dumps({"kind": "scan.requested", "v": 1}),
        )

        async def scanned() -> bool:
            return any(e["event"] == "scan.finished" for e in logs)

        await eventually(scanned, what="the scheduled scan")
    assert not [e for e in logs if e["event"] == "file.recorded"]
    # (The delivered file's own job may announce itself late: it closes by its batch window.)
    assert not [e for e in logs if e["event"] == "job.started" and e["job_id"] != entry["jobId"]]
    [again] = await ledger_items(aws["dynamodb"], stack, CLIENT)
    assert (again["status"], again["sendAttempts"], again["jobId"]) == (
        "success",
        1,
        entry["jobId"],
    )


class Reports:
    """A ``progress`` callback that keeps what it was told."""

    def __init__(self) -> None:
        self.done: list[int] = []

    async def __call__(self, done: int) -> None:
        self.done.append(done)


@pytest.fixture
async def large_copy(
    aws: dict[str, Any], unique: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Store, S3Store, bytes]:
    """A source holding huge.bin above the (shrunk) CopyObject limit, and a
    destination reached with the same credentials."""
    # 5 GiB objects do not fit in moto's memory: shrink the limits instead.
    monkeypatch.setattr(s3_backend, "_COPY_OBJECT_LIMIT", 4 * MiB)
    monkeypatch.setattr(s3_backend, "_COPY_PART", 5 * MiB)
    for bucket in (f"src-{unique}", f"dst-{unique}"):
        await aws["s3"].create_bucket(Bucket=bucket)
    data = os.urandom(12 * MiB + 3)
    await aws["s3"].put_object(Bucket=f"src-{unique}", Key="huge.bin", Body=data)
    return S3Store(aws["s3"], f"src-{unique}"), S3Store(aws["s3"], f"dst-{unique}"), data


async def test_above_the_copy_object_limit_upload_part_copy_reports_each_part(
    aws: dict[str, Any], large_copy: tuple[S3Store, S3Store, bytes]
) -> None:
    source, target, data = large_copy
    reports = Reports()
    info = await source.stat("huge.bin")
    copied = await target.copy_from(source, info, "huge.bin", progress=reports)
    assert copied is not None
    assert copied.size == len(data)
    head = await aws["s3"].head_object(Bucket=target.bucket, Key="huge.bin")
    assert head["ETag"].strip('"').endswith("-3"), "three UploadPartCopy parts"
    assert await read(aws, target.bucket, "huge.bin") == data
    assert len(reports.done) == 3, "one report per part"
    assert reports.done == sorted(reports.done)
    assert reports.done[-1] == len(data)


async def test_a_single_copy_object_reports_progress_once_at_the_end(
    aws: dict[str, Any], large_copy: tuple[S3Store, S3Store, bytes]
) -> None:
    source, target, _ = large_copy
    await aws["s3"].put_object(Bucket=source.bucket, Key="small.bin", Body=b"small")
    reports = Reports()
    await target.copy_from(source, await source.stat("small.bin"), "small.bin", progress=reports)
    assert reports.done == [5]


async def test_a_failing_progress_report_aborts_the_multipart_copy(
    aws: dict[str, Any], large_copy: tuple[S3Store, S3Store, bytes]
) -> None:
    source, target, _ = large_copy
    reports: list[int] = []

    async def lost_lease(done: int) -> None:
        reports.append(done)
        raise TransientError("lost the file's lease to another worker")

    with pytest.raises(TransientError, match="lost the file's lease"):
        await target.copy_from(source, await source.stat("huge.bin"), "x.bin", progress=lost_lease)
    assert reports, "the copy got as far as its first report"
    uploads = await aws["s3"].list_multipart_uploads(Bucket=target.bucket)
    assert uploads.get("Uploads", []) == [], "the multipart copy was aborted"
    assert await keys(aws, target.bucket) == []


def recorded_parts(client: Any, operation: str) -> list[list[int]]:
    """The part numbers each ``operation`` request sends, as they are sent."""
    sent: list[list[int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if "MultipartUpload" in params:
            sent.append([p["PartNumber"] for p in params["MultipartUpload"]["Parts"]])
        else:
            sent.append([params["PartNumber"]])

    client.meta.events.register(f"provide-client-params.s3.{operation}", record)
    return sent


async def test_a_streamed_multipart_upload_numbers_its_parts_1_to_n(
    aws: dict[str, Any], unique: str
) -> None:
    await aws["s3"].create_bucket(Bucket=f"dst-{unique}")
    uploaded = recorded_parts(aws["s3"], "UploadPart")
    completed = recorded_parts(aws["s3"], "CompleteMultipartUpload")
    store = S3Store(aws["s3"], f"dst-{unique}", part_size=5 * MiB, parts_in_flight=4)
    data = os.urandom(21 * MiB)  # five parts, the last one short
    upload = await store.begin("parts.bin", len(data))
    for start in range(0, len(data), MiB):
        await upload.write(data[start : start + MiB])
    await upload.commit()
    assert sorted(n for [n] in uploaded) == [1, 2, 3, 4, 5]
    assert completed == [[1, 2, 3, 4, 5]]
    head = await aws["s3"].head_object(Bucket=f"dst-{unique}", Key="parts.bin", PartNumber=5)
    assert (head["PartsCount"], head["ContentLength"]) == (5, MiB)
    assert await read(aws, f"dst-{unique}", "parts.bin") == data


async def test_a_bucket_default_kms_key_is_seen_in_the_responses(
    aws: dict[str, Any], unique: str
) -> None:
    bucket = f"kms-{unique}"
    await aws["s3"].create_bucket(Bucket=bucket)
    await aws["s3"].put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    store = S3Store(aws["s3"], bucket, part_size=5 * MiB)  # no kms_key_id on the route
    completed: list[dict[str, Any]] = []

    def keep(parsed: dict[str, Any], **_: Any) -> None:
        completed.append(parsed)

    aws["s3"].meta.events.register("after-call.s3.CompleteMultipartUpload", keep)
    for name, size in (("small.bin", MiB), ("large.bin", 11 * MiB)):
        data = os.urandom(size)
        upload = await store.begin(name, size)
        await upload.write(data)
        committed = await upload.commit({"md5": hashlib.md5(data).hexdigest()})  # noqa: S324
        # An SSE-KMS ETag is no MD5: the destination vouches for none.
        assert committed.hashes == {}
        assert committed.size == size
    assert completed[0]["ServerSideEncryption"] == "aws:kms"
    head = await aws["s3"].head_object(Bucket=bucket, Key="large.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    copied = await store.copy_from(store, await store.stat("small.bin"), "copy.bin")
    assert copied is not None
    assert copied.hashes == {}
