"""Version-exact operations on a picked-up file, against moto in server mode:
once a file is recorded, stat, read, copy and delete address the recorded
S3 version even when a newer upload of the same key is current."""

from __future__ import annotations

import os
from typing import Any

import pytest

from conveyor_shared.backends import s3 as s3_backend
from conveyor_shared.backends.s3 import S3Store, version_id
from conveyor_shared.errors import NotFound
from conveyor_shared.transfer.copy import copy

MiB = 1024 * 1024


async def read(store: S3Store, path: str, version: str | None = None) -> bytes:
    async with store.open(path, version) as chunks:
        return b"".join([chunk async for chunk in chunks])


@pytest.fixture
async def pickup(aws: dict[str, Any], unique: str) -> S3Store:
    bucket = f"versioned-{unique}"
    await aws["s3"].create_bucket(Bucket=bucket)
    await aws["s3"].put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return S3Store(aws["s3"], bucket)


async def two_uploads(store: S3Store, key: str, old: bytes, new: bytes) -> tuple[str, str]:
    first = await store.client.put_object(Bucket=store.bucket, Key=key, Body=old)
    second = await store.client.put_object(Bucket=store.bucket, Key=key, Body=new)
    return first["VersionId"], second["VersionId"]


async def test_stat_and_open_address_the_recorded_version(pickup: S3Store) -> None:
    old_id, new_id = await two_uploads(pickup, "a.csv", b"old content", b"newer")
    recorded = await pickup.stat("a.csv", old_id)
    assert (recorded.size, recorded.version) == (len(b"old content"), old_id)
    assert version_id(recorded.version) == old_id
    assert (await pickup.head("a.csv", old_id))["VersionId"] == old_id
    assert await read(pickup, "a.csv", old_id) == b"old content"
    current = await pickup.stat("a.csv")
    assert (current.size, current.version) == (len(b"newer"), new_id)
    assert await read(pickup, "a.csv") == b"newer"


async def test_deleting_the_recorded_version_leaves_the_newer_upload_current(
    pickup: S3Store, aws: dict[str, Any]
) -> None:
    old_id, new_id = await two_uploads(pickup, "a.csv", b"old content", b"newer")
    await pickup.delete("a.csv", old_id)
    listed = await aws["s3"].list_object_versions(Bucket=pickup.bucket, Prefix="a.csv")
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [(new_id, True)]
    assert listed.get("DeleteMarkers", []) == [], "no delete marker over the newer upload"
    assert await read(pickup, "a.csv") == b"newer"
    with pytest.raises(NotFound):
        await pickup.stat("a.csv", old_id)
    await pickup.delete("a.csv", old_id)  # already gone: not an error


async def test_copy_from_copies_the_recorded_version(
    pickup: S3Store, aws: dict[str, Any], unique: str
) -> None:
    old_id, _ = await two_uploads(pickup, "a.csv", b"old content", b"newer")
    await aws["s3"].create_bucket(Bucket=f"dst-{unique}")
    target = S3Store(aws["s3"], f"dst-{unique}", "in")
    copied = await target.copy_from(pickup, await pickup.stat("a.csv", old_id), "a.csv")
    assert copied is not None
    assert copied.size == len(b"old content")
    assert await read(target, "a.csv") == b"old content"


async def test_the_multipart_copy_copies_the_recorded_version(
    pickup: S3Store, aws: dict[str, Any], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_backend, "_COPY_OBJECT_LIMIT", 4 * MiB)
    monkeypatch.setattr(s3_backend, "_COPY_PART", 5 * MiB)
    old = os.urandom(11 * MiB)
    old_id, _ = await two_uploads(pickup, "big.bin", old, os.urandom(11 * MiB))
    await aws["s3"].create_bucket(Bucket=f"dst-{unique}")
    target = S3Store(aws["s3"], f"dst-{unique}")
    info = await pickup.stat("big.bin", old_id)
    assert await target.copy_from(pickup, info, "big.bin") is not None
    head = await aws["s3"].head_object(Bucket=f"dst-{unique}", Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "three UploadPartCopy parts"
    assert await read(target, "big.bin") == old


async def test_without_versioning_the_token_addresses_the_current_object(
    aws: dict[str, Any], unique: str
) -> None:
    await aws["s3"].create_bucket(Bucket=f"plain-{unique}")
    store = S3Store(aws["s3"], f"plain-{unique}")
    await store.client.put_object(Bucket=store.bucket, Key="a.csv", Body=b"only")
    info = await store.stat("a.csv")
    assert info.version is not None
    assert version_id(info.version) is None, "a LastModified time"
    assert (await store.stat("a.csv", info.version)).size == 4
    assert await read(store, "a.csv", info.version) == b"only"
    await store.delete("a.csv", info.version)
    with pytest.raises(NotFound):
        await store.stat("a.csv")


async def test_copy_streams_the_version_a_pinned_store_reads(
    pickup: S3Store, aws: dict[str, Any], unique: str
) -> None:
    old_id, _ = await two_uploads(pickup, "a.csv", b"old content", b"newer")
    await aws["s3"].create_bucket(Bucket=f"dst-{unique}")
    # Other credentials: copy() streams through source.open(path).
    target = S3Store(aws["s3"], f"dst-{unique}", account="secret:client")
    source = pickup.pinned("a.csv", old_id)
    info = await source.stat("a.csv")
    assert info.version == old_id
    result = await copy(source, info, target, "a.csv")
    assert result.server_side is False
    assert await read(target, "a.csv") == b"old content"
    assert await read(pickup, "a.csv") == b"newer", "the store itself is not pinned"
