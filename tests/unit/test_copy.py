"""copy(): what it verifies, and what it bothers to hash itself. In-process
fakes (a unit test); every real backend runs the contract suite instead."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from conveyor_shared.errors import IntegrityError, PermanentError
from conveyor_shared.transfer import (
    AssuredHashUnavailable,
    ChecksumRequired,
    CopyResult,
    Features,
    ObjectInfo,
    copy,
)
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
    """Reports the MD5 of what it holds; ``corrupt`` flips one stored byte.

    ``assured``: the hashes it promises; ``refuses`` withdraws the promise at
    commit (as an SFTP server that stops running ``md5sum`` does), once.
    """

    def __init__(
        self,
        reports: frozenset[str] = frozenset({"md5"}),
        *,
        assured: frozenset[str] | None = None,
        corrupt: bool = False,
        refuses: bool = False,
        upload_assures: bool = False,
    ) -> None:
        self.features = Features(
            native_hashes=reports, assured_hashes=reports if assured is None else assured
        )
        self.corrupt, self.refuses, self.upload_assures = corrupt, refuses, upload_assures
        self.stored: dict[str, bytes] = {}
        self.expected: list[dict[str, str]] = []
        self.commits = 0

    async def stat(self, path: str) -> ObjectInfo:
        return ObjectInfo(path, len(self.stored[path]))

    async def begin(self, path: str, size: int | None) -> MemoryUpload | AssuringMemoryUpload:
        if self.upload_assures:
            return AssuringMemoryUpload(MemoryUpload(self, path, frozenset({"md5"})))
        return MemoryUpload(self, path, self.features.assured_hashes)

    def describe(self, path: str) -> str:
        return f"memory://{path}"


class AssuringMemoryUpload:
    """An upload that makes its own promise, as an SFTP upload does."""

    def __init__(self, upload: MemoryUpload) -> None:
        self.upload = upload
        self.write, self.commit, self.abort = upload.write, upload.commit, upload.abort

    @property
    def assured_hashes(self) -> frozenset[str]:
        return frozenset({"md5"})


class MemoryUpload:
    def __init__(self, destination: MemoryDestination, path: str, assured: frozenset[str]) -> None:
        self.destination, self.path, self.parts, self.assured = (
            destination,
            path,
            bytearray(),
            assured,
        )

    async def write(self, chunk: bytes) -> None:
        self.parts += chunk

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        destination = self.destination
        destination.commits += 1
        destination.expected.append(dict(expected or {}))
        data = bytes(self.parts)
        if destination.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        if destination.refuses:
            destination.refuses = False
            destination.features = Features(native_hashes=destination.features.native_hashes)
            if "md5" in self.assured:
                raise AssuredHashUnavailable("md5 refused")
            reported: dict[str, str] = {}
        else:
            reported = {"md5": md5(data)} if destination.features.native_hashes else {}
        destination.stored[self.path] = data
        return ObjectInfo(self.path, len(data), hashes=reported)

    async def abort(self) -> None:
        self.parts.clear()


def promises(destination: MemoryDestination) -> tuple[Features, frozenset[str]]:
    return destination.features, destination.features.assured_hashes


async def run_copy(
    source: MemorySource, destination: MemoryDestination, **options: Any
) -> CopyResult:
    return await copy(source, await source.stat("f"), destination, "f", **options)


def test_nothing_is_hashed_locally_when_the_destination_assures_the_sources_hash() -> None:
    assert _hashes_to_compute({"md5": "abc"}, *promises(MemoryDestination())) == set()


def test_one_assured_hash_in_common_is_enough() -> None:
    vouched = {"md5": "abc", "sha256": "def"}
    assert _hashes_to_compute(vouched, *promises(MemoryDestination())) == set()


def test_a_hash_the_destination_only_may_report_is_also_hashed_while_streaming() -> None:
    features = MemoryDestination(assured=frozenset()).features
    assert _hashes_to_compute({"md5": "abc"}, features, features.assured_hashes) == {"md5"}


def test_what_the_source_does_not_vouch_for_is_hashed_while_streaming() -> None:
    assert _hashes_to_compute({}, *promises(MemoryDestination())) == {"md5"}


def test_with_a_destination_that_reports_nothing_the_read_is_checked() -> None:
    features = MemoryDestination(reports=frozenset()).features
    assert _hashes_to_compute({"md5": "abc"}, features, features.assured_hashes) == {"md5"}


async def test_source_hash_is_compared_with_the_destinations_end_to_end() -> None:
    source, destination = MemorySource(DATA, {"md5": md5(DATA)}), MemoryDestination()
    result = await run_copy(source, destination)
    assert result.verified == ("md5:destination",)
    assert result.verified_by == "md5:destination"
    assert result.verify_note is None
    assert destination.stored["f"] == DATA
    assert destination.expected == [{"md5": md5(DATA)}], "commit is told what to expect"


async def test_a_corrupted_destination_is_caught_without_local_hashing() -> None:
    source = MemorySource(DATA, {"md5": md5(DATA)})
    with pytest.raises(IntegrityError, match=r"md5 mismatch \(destination\)"):
        await run_copy(source, MemoryDestination(corrupt=True))


async def test_a_source_that_lies_about_its_content_is_caught() -> None:
    source = MemorySource(DATA, {"md5": md5(b"something else")})
    destination = MemoryDestination(reports=frozenset())
    with pytest.raises(IntegrityError, match=r"md5 mismatch \(stream\)"):
        await run_copy(source, destination)
    assert destination.commits == 0, "nothing is committed after a mismatch"


async def test_without_a_source_hash_what_was_read_is_compared() -> None:
    source, destination = MemorySource(DATA, {}), MemoryDestination(corrupt=True)
    with pytest.raises(IntegrityError, match=r"md5 mismatch \(received\)"):
        await run_copy(source, destination)
    result = await run_copy(source, MemoryDestination())
    assert result.verified_by == "md5:received"


async def test_a_destination_that_reports_no_hash_is_checked_by_the_stream() -> None:
    # An S3 multipart commit, SSE-KMS, an SFTP server without md5sum: nothing reported.
    source = MemorySource(DATA, {"md5": md5(DATA)})
    result = await run_copy(source, MemoryDestination(reports=frozenset()))
    assert result.verified_by == "md5:stream"


async def test_a_remote_hash_that_turns_out_unavailable_still_leaves_the_bytes_checked() -> None:
    # Reported only when the server runs md5sum; this one does not.
    source = MemorySource(DATA, {"md5": md5(DATA)})
    destination = MemoryDestination(assured=frozenset(), refuses=True)
    result = await run_copy(source, destination)
    assert result.verified_by == "md5:stream"


async def test_a_broken_assurance_streams_again_hashing_locally() -> None:
    source = MemorySource(DATA, {"md5": md5(DATA)})
    destination = MemoryDestination(refuses=True)
    result = await run_copy(source, destination)
    assert destination.commits == 2
    assert "md5:stream" in result.verified, "the second try hashed what it read"
    assert destination.stored["f"] == DATA


async def test_an_uploads_own_promise_overrides_the_destinations() -> None:
    source = MemorySource(DATA, {"md5": md5(DATA)})
    destination = MemoryDestination(assured=frozenset(), upload_assures=True)
    result = await run_copy(source, destination)
    assert result.verified == ("md5:destination",), "nothing hashed locally"


async def test_the_strongest_check_is_named() -> None:
    source = MemorySource(DATA, {"md5": md5(DATA), "sha256": hashlib.sha256(DATA).hexdigest()})
    result = await run_copy(source, MemoryDestination(assured=frozenset()))
    assert set(result.verified) == {"md5:stream", "sha256:stream", "md5:destination"}
    assert result.verified_by == "md5:destination"


async def test_size_only_says_why() -> None:
    result = await run_copy(MemorySource(DATA, {}), MemoryDestination(reports=frozenset()))
    assert result.verified_by == "size"
    assert result.verify_note == "the source vouches for no hash and the destination reported none"
    result = await run_copy(
        MemorySource(DATA, {"md5": md5(DATA)}), MemoryDestination(), verify=False
    )
    assert result.verified_by == "size"
    assert result.verify_note == "verification is off for this destination"


async def test_required_checksum_fails_before_commit_when_none_is_possible() -> None:
    destination = MemoryDestination(reports=frozenset())
    with pytest.raises(ChecksumRequired, match="nothing was made visible") as raised:
        await run_copy(MemorySource(DATA, {}), destination, require_checksum=True)
    assert isinstance(raised.value, PermanentError)
    assert destination.commits == 0, "nothing became visible"


async def test_required_checksum_is_met_by_the_stream() -> None:
    result = await run_copy(
        MemorySource(DATA, {"md5": md5(DATA)}),
        MemoryDestination(reports=frozenset()),
        require_checksum=True,
    )
    assert result.verified_by == "md5:stream"


async def test_required_checksum_fails_when_the_destination_reported_nothing_after_all() -> None:
    destination = MemoryDestination(assured=frozenset(), refuses=True)
    with pytest.raises(ChecksumRequired, match="not recorded as delivered"):
        await run_copy(MemorySource(DATA, {}), destination, require_checksum=True)
