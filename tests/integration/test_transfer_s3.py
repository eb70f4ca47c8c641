"""transfer-s3 against moto in server mode (issue 4: D6, D7): server-side copy
when the same credentials reach both buckets, streaming otherwise; KMS and
bucket-owner settings; the multipart server-side copy used above 5 GiB; and
what happens to a delivered file in the pick-up (delete, keep, archive)."""

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
        {"bucket": destination, "prefix": "in/"},
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
    assert await keys(aws, stack.pickup_bucket, f"{CLIENT}/") == []


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
    assert not [e for e in logs if e["event"] in {"job.started", "file.recorded"}]
    [again] = await ledger_items(aws["dynamodb"], stack, CLIENT)
    assert (again["status"], again["sendAttempts"], again["jobId"]) == (
        "success",
        1,
        entry["jobId"],
    )


async def test_server_side_copy_above_the_copy_object_limit_uses_upload_part_copy(
    aws: dict[str, Any], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 GiB objects do not fit in moto's memory: shrink the limits instead.
    monkeypatch.setattr(s3_backend, "_COPY_OBJECT_LIMIT", 4 * MiB)
    monkeypatch.setattr(s3_backend, "_COPY_PART", 5 * MiB)
    for bucket in (f"src-{unique}", f"dst-{unique}"):
        await aws["s3"].create_bucket(Bucket=bucket)
    data = os.urandom(12 * MiB + 3)
    await aws["s3"].put_object(Bucket=f"src-{unique}", Key="huge.bin", Body=data)
    source, target = S3Store(aws["s3"], f"src-{unique}"), S3Store(aws["s3"], f"dst-{unique}")
    copied = await target.copy_from(source, await source.stat("huge.bin"), "huge.bin")
    assert copied is not None
    assert copied.size == len(data)
    head = await aws["s3"].head_object(Bucket=f"dst-{unique}", Key="huge.bin")
    assert head["ETag"].strip('"').endswith("-3"), "three UploadPartCopy parts"
    assert await read(aws, f"dst-{unique}", "huge.bin") == data
