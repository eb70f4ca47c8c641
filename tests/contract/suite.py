"""One contract every Destination passes against its real peer (rclone's
fstests, in miniature).

A backend's test module subclasses ``DestinationContract`` and provides two
fixtures: ``destination`` (the backend under test, rooted in a fresh,
empty location) and ``peer`` (a ``Peer`` reading that same location through
the peer's own client, not through the backend).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any, Protocol

import pytest

from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.errors import NotFound
from conveyor_shared.transfer import Destination, copy

MiB = 1024 * 1024


class Peer(Protocol):
    async def read(self, path: str) -> bytes:
        """The bytes at ``path`` as the server holds them; raises ``NotFound``."""
        ...

    async def names(self) -> list[str]:
        """Every object or file name under the destination's root, temporary ones included."""
        ...


async def write(
    destination: Destination,
    path: str,
    data: bytes,
    chunk: int = MiB,
    *,
    expected: Mapping[str, str] | None = None,
) -> Any:
    upload = await destination.begin(path, len(data))
    for start in range(0, len(data), chunk):
        await upload.write(data[start : start + chunk])
    return await upload.commit(expected)


class DestinationContract:
    async def test_small_file_round_trips(self, destination: Destination, peer: Peer) -> None:
        info = await write(destination, "hello.txt", b"hello, conveyor\n")
        assert info.size == 16
        assert await peer.read("hello.txt") == b"hello, conveyor\n"
        assert (await destination.stat("hello.txt")).size == 16

    async def test_large_file_streams_in_chunks(self, destination: Destination, peer: Peer) -> None:
        data = os.urandom(6 * MiB + 12345)
        info = await write(destination, "big.bin", data, chunk=256 * 1024 + 7)
        assert info.size == len(data)
        assert hashlib.sha256(await peer.read("big.bin")).digest() == hashlib.sha256(data).digest()

    async def test_empty_file(self, destination: Destination, peer: Peer) -> None:
        info = await write(destination, "empty.csv", b"")
        assert info.size == 0
        assert await peer.read("empty.csv") == b""

    async def test_name_with_spaces_and_unicode(self, destination: Destination, peer: Peer) -> None:
        await write(destination, "Rapport été 2026 (final).csv", b"x")
        assert await peer.read("Rapport été 2026 (final).csv") == b"x"

    async def test_nothing_visible_under_final_name_before_commit(
        self, destination: Destination, peer: Peer
    ) -> None:
        upload = await destination.begin("partial.bin", 2 * MiB)
        await upload.write(os.urandom(MiB))
        with pytest.raises(NotFound):
            await destination.stat("partial.bin")
        with pytest.raises(NotFound):
            await peer.read("partial.bin")
        await upload.abort()
        with pytest.raises(NotFound):
            await destination.stat("partial.bin")
        assert await peer.names() == []

    async def test_commit_replaces_existing_file(
        self, destination: Destination, peer: Peer
    ) -> None:
        await write(destination, "same.txt", b"first version, longer")
        await write(destination, "same.txt", b"second")
        assert await peer.read("same.txt") == b"second"
        assert await peer.names() == ["same.txt"]

    async def test_stat_of_missing_file_raises_not_found(self, destination: Destination) -> None:
        with pytest.raises(NotFound):
            await destination.stat("no-such-file.txt")

    async def test_abort_is_safe_after_nothing_was_written(
        self, destination: Destination, peer: Peer
    ) -> None:
        upload = await destination.begin("never.txt", None)
        await upload.abort()
        await upload.abort()
        assert await peer.names() == []

    async def test_copy_from_s3_verifies_content(
        self, destination: Destination, peer: Peer, source_bucket: S3Store
    ) -> None:
        data = os.urandom(2 * MiB + 1)
        await source_bucket.client.put_object(
            Bucket=source_bucket.bucket, Key="src/file.bin", Body=data
        )
        info = await source_bucket.stat("src/file.bin")
        result = await copy(source_bucket, info, destination, "copied.bin", verify=True)
        assert result.size == len(data)
        assert result.verified, "copy() should have compared at least one checksum"
        assert result.verified_by != "size"
        assert await peer.read("copied.bin") == data
