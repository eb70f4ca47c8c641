"""S3 multipart arithmetic and the decisions made from S3's responses: part
sizes that fit S3's 10,000 parts, part numbers 1..n without gaps, version
tokens, folder prefixes, and when a multipart ETag can be compared."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor_shared.backends.folders import folder
from conveyor_shared.backends.s3 import (
    _COPY_PART,
    MiB,
    S3DestinationFactory,
    S3Store,
    is_kms_encrypted,
    object_version,
    part_ranges,
    part_size_for,
    version_id,
)
from conveyor_shared.config.models import S3Destination
from conveyor_shared.errors import IntegrityError, PermanentError
from conveyor_shared.transfer.protocols import ObjectInfo

TiB = 1024 * 1024 * MiB
KMS = {"ServerSideEncryption": "aws:kms"}


@pytest.mark.parametrize("preferred", [5 * MiB, 16 * MiB, _COPY_PART])
@pytest.mark.parametrize(
    "size", [0, 1, 16 * MiB * 10_000, 16 * MiB * 10_000 + 1, 1 * TiB, 5 * TiB - 1, 5 * TiB]
)
def test_every_size_up_to_5_tib_fits_in_10000_parts(preferred: int, size: int) -> None:
    part = part_size_for(size, preferred)
    assert part >= preferred
    assert part % MiB == 0
    assert part <= 5 * 1024 * MiB, "S3's largest part"
    assert -(-size // part) <= 10_000


def test_the_part_size_grows_only_when_it_must() -> None:
    assert part_size_for(100 * MiB, 16 * MiB) == 16 * MiB
    assert part_size_for(5 * TiB, 16 * MiB) == 525 * MiB
    # The 512 MiB copy part alone would take 10,240 parts for 5 TiB.
    assert part_size_for(5 * TiB, _COPY_PART) == 525 * MiB


def test_unknown_size_keeps_the_preferred_part_and_above_5_tib_is_refused() -> None:
    assert part_size_for(None, 16 * MiB) == 16 * MiB
    with pytest.raises(PermanentError, match="5 TiB"):
        part_size_for(5 * TiB + 1, 16 * MiB)


def test_part_ranges_cover_every_byte_once() -> None:
    assert part_ranges(12, 5) == [(1, 0, 4), (2, 5, 9), (3, 10, 11)]
    assert part_ranges(10, 5) == [(1, 0, 4), (2, 5, 9)]
    assert part_ranges(0, 5) == []


def test_a_last_modified_fallback_is_not_a_version_id() -> None:
    modified = datetime(2026, 12, 2, 0, 0, 57, 120000, tzinfo=UTC)
    fallback = object_version({"LastModified": modified})
    assert version_id(fallback) is None
    assert version_id(modified.replace(microsecond=0).isoformat()) is None
    for real in ("3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo", "null"):
        assert version_id(object_version({"VersionId": real, "LastModified": modified})) == real
    assert version_id("fe99f75f-f970-4e2b-97dd-2ebecf002d4e") is not None
    assert version_id(None) is None
    assert version_id("") is None


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("a/b", "a/b/"), ("a/b/", "a/b/"), ("/a/b", "a/b/"), ("", ""), ("/", "")],
)
def test_a_destination_prefix_is_a_folder(prefix: str, expected: str) -> None:
    assert folder(prefix) == expected
    assert S3Store(None, "bucket", prefix).key("x.csv") == f"{expected}x.csv"


async def test_a_routes_prefix_reaches_the_store_as_a_folder() -> None:
    factory = S3DestinationFactory(None, None, None, contextlib.AsyncExitStack())
    spec = S3Destination(type="s3", bucket="client-inbound", prefix="/in")
    store = await factory.open(spec)
    assert store.describe("2026/a.csv") == "s3://client-inbound/in/2026/a.csv"


def test_kms_is_read_from_the_response() -> None:
    assert is_kms_encrypted({"ServerSideEncryption": "aws:kms"})
    assert is_kms_encrypted({"ServerSideEncryption": "aws:kms:dsse"})
    assert not is_kms_encrypted({"ServerSideEncryption": "AES256"})
    assert not is_kms_encrypted({})


class PartRecorder:
    """An S3 client that keeps parts in memory and finishes them in reverse
    order of starting (each part waits until the next one has finished)."""

    def __init__(self, complete_response: dict[str, Any] | None = None) -> None:
        self.started: list[int] = []
        self.completed: list[int] = []
        self.finished: list[int] = []
        self.data: dict[int, bytes] = {}
        self._complete_response = complete_response
        self._done: dict[int, asyncio.Event] = {}

    async def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"UploadId": "u1"}

    async def upload_part(self, PartNumber: int, Body: bytes, **_: Any) -> dict[str, Any]:
        self.started.append(PartNumber)
        mine = self._done.setdefault(PartNumber, asyncio.Event())
        following = self._done.setdefault(PartNumber + 1, asyncio.Event())
        if PartNumber < 3:
            await asyncio.wait_for(following.wait(), 5)
        self.data[PartNumber] = Body
        self.finished.append(PartNumber)
        mine.set()
        return {"ETag": f'"{hashlib.md5(Body).hexdigest()}"'}  # noqa: S324

    async def complete_multipart_upload(self, MultipartUpload: Any, **_: Any) -> dict[str, Any]:
        self.completed = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        if self._complete_response is not None:
            return self._complete_response
        digests = b"".join(hashlib.md5(self.data[n]).digest() for n in self.completed)  # noqa: S324
        return {"ETag": f'"{hashlib.md5(digests).hexdigest()}-{len(self.completed)}"'}  # noqa: S324

    async def head_object(self, **_: Any) -> dict[str, Any]:
        size = sum(len(d) for d in self.data.values())
        return {"ContentLength": size, "LastModified": datetime.now(UTC)}

    async def abort_multipart_upload(self, **_: Any) -> None:
        return None


async def upload(client: PartRecorder, data: bytes, part_size: int) -> None:
    store = S3Store(client, "bucket", part_size=part_size, parts_in_flight=4)
    target = await store.begin("x.bin", None)
    try:
        for start in range(0, len(data), 1000):
            await target.write(data[start : start + 1000])
        await target.commit()
    except BaseException:
        await target.abort()
        raise


async def test_parts_are_numbered_1_to_n_whatever_order_they_finish_in() -> None:
    client = PartRecorder()
    data = bytes(range(256)) * 40  # 10,240 bytes: five parts of 2,048
    await upload(client, data, 2048)
    order = client.finished.index
    assert order(3) < order(2) < order(1), "the parts finished out of order"
    assert sorted(client.started) == [1, 2, 3, 4, 5]
    assert client.completed == [1, 2, 3, 4, 5]
    assert b"".join(client.data[n] for n in client.completed) == data


async def test_a_kms_encrypted_multipart_etag_is_not_compared() -> None:
    # Real S3 (unlike moto) answers a bucket-default SSE-KMS upload with an
    # ETag that is no MD5 of the parts' MD5s.
    client = PartRecorder({"ETag": '"0b5e0e5bd3f8f7d8c0b5a1e6d2c4f9a7-5"', **KMS})
    await upload(client, bytes(10_240), 2048)
    assert client.completed == [1, 2, 3, 4, 5]


async def test_a_wrong_multipart_etag_without_kms_is_an_integrity_error() -> None:
    client = PartRecorder({"ETag": '"0b5e0e5bd3f8f7d8c0b5a1e6d2c4f9a7-5"'})
    with pytest.raises(IntegrityError, match="multipart ETag"):
        await upload(client, bytes(10_240), 2048)


class PartCopyCounter:
    """An S3 client whose ``UploadPartCopy`` calls wait until eight are in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.numbers: list[int] = []
        self.completed: list[int] = []
        self._eight = asyncio.Event()

    async def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"UploadId": "u1"}

    async def upload_part_copy(self, PartNumber: int, **_: Any) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight == 8:
            self._eight.set()
        await asyncio.wait_for(self._eight.wait(), 5)
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.numbers.append(PartNumber)
        return {"CopyPartResult": {"ETag": f'"{PartNumber}"'}}

    async def complete_multipart_upload(self, MultipartUpload: Any, **_: Any) -> dict[str, Any]:
        self.completed = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        return {}

    async def head_object(self, **_: Any) -> dict[str, Any]:
        return {"ContentLength": 20 * _COPY_PART, "LastModified": datetime.now(UTC)}


async def test_upload_part_copy_runs_eight_parts_at_a_time() -> None:
    client = PartCopyCounter()
    store = S3Store(client, "bucket")
    info = ObjectInfo("big.bin", 20 * _COPY_PART)
    assert await store.copy_from(store, info, "copy.bin") is not None
    assert client.most == 8
    assert sorted(client.numbers) == list(range(1, 21))
    assert client.completed == list(range(1, 21))
