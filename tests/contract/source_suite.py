"""One contract every Source passes against its real server: list, stat,
open, a missing file, a connection dropped mid-read, and delete where the
backend can.

A backend's test module subclasses ``SourceContract`` and provides one
fixture, ``source_under_test``, yielding a ``SourceUnderTest`` for a fresh,
empty location on the real server:

* ``source``: the backend under test, rooted in that location;
* ``async put(path, data)``: writes ``data`` at ``path`` (relative to the
  root, ``/``-separated, parent folders created) through the server's own
  client or file system, not through ``source``;
* ``hashes``: the algorithms (``md5``, ``sha256``) whose values ``stat``
  vouches for on every file the suite writes; the suite checks each against
  the bytes. Empty when the backend vouches for none;
* ``cut``: an ``async`` callable that drops every connection
  ``source`` has open at that moment, as a network failure would (new
  connections still succeed). ``DroppingProxy`` does this for a backend that
  reaches its server over one TCP port; a backend with more (FTP's data
  connections) brings its own.

A backend with several configurations (a server without an extension)
subclasses its own test class and overrides ``source_under_test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from conveyor_shared.errors import NotFound, TransientError
from conveyor_shared.transfer import ObjectInfo, Source
from tests.support import TcpProxy

MiB = 1024 * 1024

#: Larger than what loopback sockets, a proxy and a client can buffer between
#: them, so a connection cut after the first chunk is cut mid-read.
CUT_FILE_SIZE = 48 * MiB

#: The largest chunk ``open`` may yield: streamed, never the whole file.
MAX_CHUNK = 4 * MiB


class SourceUnderTest(Protocol):
    @property
    def source(self) -> Source: ...

    @property
    def hashes(self) -> frozenset[str]: ...

    @property
    def cut(self) -> Callable[[], Awaitable[None]] | None: ...

    async def put(self, path: str, data: bytes) -> None: ...


class DroppingProxy(TcpProxy):
    """A TCP proxy whose ``drop`` aborts every connection open through it."""

    def __init__(self, upstream: int) -> None:
        super().__init__(upstream)
        self._links: set[asyncio.WriteTransport] = set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer.transport)
        try:
            await super()._accept(reader, writer)
        finally:
            self._links.discard(writer.transport)

    async def drop(self) -> None:
        for link in list(self._links):
            link.abort()


def digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


async def listed(source: Source, prefix: str = "") -> dict[str, ObjectInfo]:
    return {info.path: info async for info in source.list(prefix)}


async def read_chunks(source: Source, path: str) -> list[bytes]:
    async with source.open(path) as chunks:
        return [chunk async for chunk in chunks]


async def read_cutting(
    source: Source, path: str, cut: Callable[[], Awaitable[None]], sizes: list[int]
) -> None:
    """Read ``path``, calling ``cut`` once the first chunk arrived; ``sizes``
    collects each chunk's length."""
    async with source.open(path) as chunks:
        async for chunk in chunks:
            if not sizes:
                await cut()
            sizes.append(len(chunk))


class SourceContract:
    async def test_empty_location_lists_nothing(self, source_under_test: SourceUnderTest) -> None:
        assert await listed(source_under_test.source) == {}
        assert await listed(source_under_test.source, "no-such-folder/") == {}

    async def test_list_is_recursive_with_sizes(self, source_under_test: SourceUnderTest) -> None:
        files = {
            "top.csv": b"top",
            ".hidden": b"dot",
            "in/a.csv": b"a" * 10,
            "in/deeper/b.csv": b"",
            "out/c.csv": b"c" * 3,
        }
        for path, data in files.items():
            await source_under_test.put(path, data)
        found = await listed(source_under_test.source)
        assert sorted(found) == sorted(files)
        assert {path: info.size for path, info in found.items()} == {
            path: len(data) for path, data in files.items()
        }

    async def test_list_under_a_prefix(self, source_under_test: SourceUnderTest) -> None:
        for path in ("in/a.csv", "in/deeper/b.csv", "inbound/c.csv", "out/d.csv"):
            await source_under_test.put(path, b"x")
        assert sorted(await listed(source_under_test.source, "in/")) == [
            "in/a.csv",
            "in/deeper/b.csv",
        ]
        assert sorted(await listed(source_under_test.source, "in/deeper/")) == ["in/deeper/b.csv"]

    async def test_names_with_spaces_and_unicode(self, source_under_test: SourceUnderTest) -> None:
        name = "Rapport été 2026 (final) 東京.csv"
        await source_under_test.put(f"dossier à/{name}", b"donn\xc3\xa9es")
        assert list(await listed(source_under_test.source)) == [f"dossier à/{name}"]
        info = await source_under_test.source.stat(f"dossier à/{name}")
        assert info.size == 8
        assert b"".join(await read_chunks(source_under_test.source, f"dossier à/{name}")) == (
            b"donn\xc3\xa9es"
        )

    async def test_stat_reports_size_time_and_vouched_hashes(
        self, source_under_test: SourceUnderTest
    ) -> None:
        data = os.urandom(MiB + 17)
        before = datetime.now(UTC) - timedelta(minutes=2)
        await source_under_test.put("in/report.bin", data)
        info = await source_under_test.source.stat("in/report.bin")
        assert info.path == "in/report.bin"
        assert info.size == len(data)
        assert info.modified is not None
        assert info.modified.tzinfo is not None, "a time without a zone cannot be compared"
        assert before <= info.modified <= datetime.now(UTC) + timedelta(minutes=2)
        for algorithm in source_under_test.hashes:
            assert info.hashes.get(algorithm) == digest(algorithm, data), algorithm

    async def test_open_streams_the_exact_bytes_in_chunks(
        self, source_under_test: SourceUnderTest
    ) -> None:
        data = os.urandom(9 * MiB + 12345)
        await source_under_test.put("big.bin", data)
        chunks = await read_chunks(source_under_test.source, "big.bin")
        assert len(chunks) > 1, "the whole file in one chunk"
        assert max(len(chunk) for chunk in chunks) <= MAX_CHUNK
        assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()

    async def test_open_an_empty_file(self, source_under_test: SourceUnderTest) -> None:
        await source_under_test.put("empty.csv", b"")
        assert b"".join(await read_chunks(source_under_test.source, "empty.csv")) == b""
        assert (await source_under_test.source.stat("empty.csv")).size == 0

    async def test_missing_file_is_not_found(self, source_under_test: SourceUnderTest) -> None:
        await source_under_test.put("in/present.csv", b"here")
        for path in ("missing.csv", "in/missing.csv", "no-such-folder/missing.csv"):
            with pytest.raises(NotFound):
                await source_under_test.source.stat(path)
            with pytest.raises(NotFound):
                async with source_under_test.source.open(path):
                    pass

    async def test_delete_removes_only_that_file(self, source_under_test: SourceUnderTest) -> None:
        """For sources that can delete (provider sync's ``after_copy: delete``)."""
        delete = getattr(source_under_test.source, "delete", None)
        assert delete is not None, "every source can delete (provider sync's after_copy)"
        await source_under_test.put("in/copied.csv", b"copied")
        await source_under_test.put("in/kept.csv", b"kept")
        await delete("in/copied.csv")
        assert list(await listed(source_under_test.source)) == ["in/kept.csv"]
        with pytest.raises(NotFound):
            await source_under_test.source.stat("in/copied.csv")
        # Deleting what is gone (a retry after a lost reply) is NotFound or nothing.
        with contextlib.suppress(NotFound):
            await delete("in/copied.csv")
        assert b"".join(await read_chunks(source_under_test.source, "in/kept.csv")) == b"kept"

    async def test_dropped_connection_mid_read_is_transient(
        self, source_under_test: SourceUnderTest
    ) -> None:
        cut = source_under_test.cut
        assert cut is not None, "every source's fixture must be able to drop its connection"
        await source_under_test.put("cut.bin", os.urandom(CUT_FILE_SIZE))
        sizes: list[int] = []
        with pytest.raises(TransientError):
            await read_cutting(source_under_test.source, "cut.bin", cut, sizes)
        received = sum(sizes)
        assert 0 < received < CUT_FILE_SIZE, f"read {received} bytes: the cut was not mid-read"
        # A fresh connection reads the file whole: the drop left nothing stuck.
        whole = await read_chunks(source_under_test.source, "cut.bin")
        assert sum(len(chunk) for chunk in whole) == CUT_FILE_SIZE
