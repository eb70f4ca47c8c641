"""``copy()``: the only code in Conveyor that moves a file's bytes.

It streams from a ``Source`` into a ``Destination`` upload, hashes what it
reads, commits only when every byte arrived, and verifies the result:
always the size, and every hash both sides can vouch for. Memory stays
bounded by the backends' chunk sizes, whatever the file size.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from conveyor_shared.errors import IntegrityError
from conveyor_shared.transfer.protocols import (
    Destination,
    HashVerifier,
    ObjectInfo,
    ServerSideCopier,
    Source,
)

log = structlog.get_logger("conveyor.copy")

Progress = Callable[[int], Awaitable[None]]

#: Chunks at least this large are hashed in a worker thread (hashlib releases the
#: GIL), so hashing overlaps network I/O on the event loop.
_THREAD_HASH_THRESHOLD = 256 * 1024


@dataclass(frozen=True)
class CopyResult:
    size: int
    hashes: dict[str, str]
    server_side: bool
    seconds: float
    verified: tuple[str, ...]


class _Hasher:
    def __init__(self, algorithms: set[str]) -> None:
        self._hashes = {name: hashlib.new(name) for name in sorted(algorithms)}

    def update(self, chunk: bytes) -> None:
        for h in self._hashes.values():
            h.update(chunk)

    async def update_async(self, chunk: bytes) -> None:
        if self._hashes and len(chunk) >= _THREAD_HASH_THRESHOLD:
            await asyncio.to_thread(self.update, chunk)
        else:
            self.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def _hashes_to_compute(info: ObjectInfo, destination: Destination) -> set[str]:
    """Hash locally only what cannot be compared end to end without it.

    When the source vouches for a hash the destination also reports (an S3
    ETag's MD5 against GCS's ``md5Hash`` or the server's ``md5sum``), those
    two are compared directly: reading every byte through MD5 here would
    cost a core-second per GiB and prove nothing more. What the destination
    reports that the source does not vouch for is computed while streaming;
    with a destination that reports nothing, the source's hashes are checked
    against what was read.
    """
    reported = set(destination.features.native_hashes)
    if isinstance(destination, HashVerifier):
        reported |= set(destination.features.verify_hashes)
    wanted = reported - set(info.hashes) if reported else set(info.hashes)
    return wanted & hashlib.algorithms_available


def _compare(label: str, expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    checked = []
    for name in expected.keys() & actual.keys():
        if expected[name].lower() != actual[name].lower():
            raise IntegrityError(
                f"{name} mismatch against {label}: read {expected[name]}, got {actual[name]}"
            )
        checked.append(f"{name}:{label}")
    return checked


async def copy(
    source: Source,
    info: ObjectInfo,
    destination: Destination,
    path: str,
    *,
    verify: bool = True,
    progress: Progress | None = None,
    progress_interval: float = 3.0,
) -> CopyResult:
    """Copy ``info`` (from ``source.stat``) to ``path`` on ``destination``.

    Raises ``NotFound`` if the source vanished, ``IntegrityError`` if sizes or
    hashes differ (the upload is then aborted, or, for a destination hash
    checked after commit, the object is left for the retry to overwrite), and
    whatever the backends raise, already translated to ``conveyor_shared.errors``.
    """
    started = time.monotonic()
    if isinstance(destination, ServerSideCopier):
        copied = await destination.copy_from(source, info, path)
        if copied is not None:
            _check_size(info.size, copied.size)
            verified = _compare("destination", dict(info.hashes), dict(copied.hashes))
            return CopyResult(
                info.size or 0,
                dict(copied.hashes),
                True,
                time.monotonic() - started,
                tuple(verified),
            )
    hasher = _Hasher(_hashes_to_compute(info, destination) if verify else set())
    moved = 0
    upload = await destination.begin(path, info.size)
    try:
        last_report = time.monotonic()
        async with source.open(info.path) as stream:
            async for chunk in stream:
                await asyncio.gather(hasher.update_async(chunk), upload.write(chunk))
                moved += len(chunk)
                if progress and time.monotonic() - last_report >= progress_interval:
                    last_report = time.monotonic()
                    await progress(moved)
        _check_size(info.size, moved)
        read = hasher.hexdigests()
        verified = _compare("source", dict(info.hashes), read) if verify else []
        committed = await upload.commit()
    except BaseException:
        await asyncio.shield(upload.abort())
        raise
    _check_size(moved, committed.size)
    # What the bytes should hash to: the source's own word where it gives one,
    # else what was read.
    expected = {**read, **info.hashes}
    if verify:
        verified += _compare("destination", expected, dict(committed.hashes))
        verified += await _verify_remote(destination, path, expected)
    if progress:
        await progress(moved)
    return CopyResult(moved, expected, False, time.monotonic() - started, tuple(verified))


async def _verify_remote(destination: Destination, path: str, read: dict[str, str]) -> list[str]:
    if not isinstance(destination, HashVerifier):
        return []
    for algorithm in sorted(destination.features.verify_hashes & read.keys()):
        remote = await destination.remote_hash(path, algorithm)
        if remote is not None:
            return _compare("destination", {algorithm: read[algorithm]}, {algorithm: remote})
    return []


def _check_size(expected: int | None, actual: int | None) -> None:
    if expected is not None and actual is not None and expected != actual:
        raise IntegrityError(f"size mismatch: expected {expected} bytes, got {actual}")
