"""copy(): what it verifies, and what it bothers to hash itself. In-process
fakes (a unit test); every real backend runs the contract suite instead."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest

from conveyor_shared.errors import IntegrityError
from conveyor_shared.transfer import Features, ObjectInfo, copy
from conveyor_shared.transfer.copy import _hashes_to_compute

DATA = b"member_id,plan\n" * 100_000


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - what S3 and GCS use


class MemorySource:
    def __init__(self, data: bytes, vouched: dict[str, str]) -> None:
        self.data, self.vouched = data, vouched

    async def stat(self, path: str) -> ObjectInfo:
        return ObjectInfo(path, len(self.data), hashes=self.vouched)

    @contextlib.asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(self.data), 65536):
                yield self.data[start : start + 65536]

        yield chunks()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        yield await self.stat("x")


class MemoryDestination:
    """Reports the MD5 of what it received; ``corrupt`` flips one stored byte."""

    def __init__(self, reports: frozenset[str] = frozenset({"md5"}), corrupt: bool = False):
        self.features = Features(native_hashes=reports)
        self.corrupt = corrupt
        self.stored: dict[str, bytes] = {}

    async def stat(self, path: str) -> ObjectInfo:
        return ObjectInfo(path, len(self.stored[path]))

    async def begin(self, path: str, size: int | None) -> MemoryUpload:
        return MemoryUpload(self, path)

    def describe(self, path: str) -> str:
        return f"memory://{path}"


class MemoryUpload:
    def __init__(self, destination: MemoryDestination, path: str) -> None:
        self.destination, self.path, self.parts = destination, path, bytearray()

    async def write(self, chunk: bytes) -> None:
        self.parts += chunk

    async def commit(self) -> ObjectInfo:
        data = bytes(self.parts)
        if self.destination.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        self.destination.stored[self.path] = data
        hashes = {"md5": md5(data)} if self.destination.features.native_hashes else {}
        return ObjectInfo(self.path, len(data), hashes=hashes)

    async def abort(self) -> None:
        self.parts.clear()


def test_nothing_is_hashed_locally_when_source_and_destination_can_be_compared() -> None:
    info = ObjectInfo("f", 1, hashes={"md5": "abc"})
    assert _hashes_to_compute(info, MemoryDestination()) == set()  # type: ignore[arg-type]


def test_what_the_source_does_not_vouch_for_is_hashed_while_streaming() -> None:
    info = ObjectInfo("f", 1, hashes={})
    assert _hashes_to_compute(info, MemoryDestination()) == {"md5"}  # type: ignore[arg-type]


def test_with_a_destination_that_reports_nothing_the_read_is_checked() -> None:
    info = ObjectInfo("f", 1, hashes={"md5": "abc", "crc64nvme": "x"})
    destination = MemoryDestination(reports=frozenset())
    assert _hashes_to_compute(info, destination) == {"md5"}  # type: ignore[arg-type]


async def test_source_hash_is_compared_with_the_destinations_end_to_end() -> None:
    source, destination = MemorySource(DATA, {"md5": md5(DATA)}), MemoryDestination()
    result = await copy(source, await source.stat("f"), destination, "f")  # type: ignore[arg-type]
    assert result.verified == ("md5:destination",)
    assert destination.stored["f"] == DATA


async def test_a_corrupted_destination_is_caught_without_local_hashing() -> None:
    source = MemorySource(DATA, {"md5": md5(DATA)})
    with pytest.raises(IntegrityError, match="md5 mismatch against destination"):
        await copy(source, await source.stat("f"), MemoryDestination(corrupt=True), "f")  # type: ignore[arg-type]


async def test_a_source_that_lies_about_its_content_is_caught() -> None:
    source = MemorySource(DATA, {"md5": md5(b"something else")})
    with pytest.raises(IntegrityError, match="md5 mismatch against source"):
        await copy(source, await source.stat("f"), MemoryDestination(reports=frozenset()), "f")  # type: ignore[arg-type]


async def test_without_a_source_hash_what_was_read_is_compared() -> None:
    source, destination = MemorySource(DATA, {}), MemoryDestination(corrupt=True)
    with pytest.raises(IntegrityError):
        await copy(source, await source.stat("f"), destination, "f")  # type: ignore[arg-type]
