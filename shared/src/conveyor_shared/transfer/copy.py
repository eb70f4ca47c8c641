"""``copy()``: the only code in Conveyor that moves a file's bytes.

It streams from a ``Source`` into a ``Destination`` upload, commits only when
every byte arrived, and verifies the result: always the size, and every hash
that can be compared end to end. ``CopyResult.verified_by`` names the
strongest check made (docs/architecture.md, "How a file is verified"):

* ``<algorithm>:destination``: the source's own hash equals the hash the
  destination computed over what it holds;
* ``<algorithm>:stream``: the hash of the bytes read equals the source's hash,
  and the destination's size was checked;
* ``<algorithm>:received``: the source vouches for no hash; the destination's
  hash equals the hash of the bytes read;
* ``size``: only sizes were compared, and ``verify_note`` says why.

Memory stays bounded by the backends' chunk sizes, whatever the file size.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from conveyor_shared.errors import IntegrityError, PermanentError
from conveyor_shared.transfer.protocols import (
    AssuredHashUnavailable,
    AssuringUpload,
    Destination,
    Features,
    ObjectInfo,
    ServerSideCopier,
    Source,
    Upload,
)

log = structlog.get_logger("conveyor.copy")

Progress = Callable[[int], Awaitable[None]]

#: Chunks at least this large are hashed in a worker thread (hashlib releases the
#: GIL), so hashing overlaps network I/O on the event loop.
_THREAD_HASH_THRESHOLD = 256 * 1024

#: Strongest first: which hash names ``verified_by`` when several were compared.
_STRENGTH = ("sha256", "sha1", "md5")
#: Strongest first: what a check proves (see the module docstring).
_KINDS = ("destination", "stream", "received")


class ChecksumRequired(PermanentError):
    """The route requires a content hash and this copy could compare only sizes.

    Permanent, not an ``IntegrityError``: nothing arrived wrong, and another
    try meets the same source and the same destination, so it would fail the
    same way after moving every byte again.
    """


@dataclass(frozen=True)
class CopyResult:
    size: int
    #: What the bytes hash to: the source's word where it gives one, else what was read.
    hashes: dict[str, str]
    server_side: bool
    seconds: float
    #: Every check made, e.g. ``("md5:stream", "md5:destination")``.
    verified: tuple[str, ...]
    #: The strongest of them, or ``size`` (see the module docstring).
    verified_by: str
    #: Why only sizes were compared, when ``verified_by`` is ``size``.
    verify_note: str | None = None


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


def _vouched(info: ObjectInfo) -> dict[str, str]:
    """The source's hashes that can be recomputed here."""
    return {
        name: value.lower()
        for name, value in info.hashes.items()
        if name in hashlib.algorithms_available
    }


def _hashes_to_compute(
    vouched: Mapping[str, str], features: Features, assured: frozenset[str]
) -> set[str]:
    """Hash locally only what cannot be compared end to end without it.

    When the destination *assures* a hash the source vouches for (GCS's
    ``md5Hash`` against an S3 ETag), those two are compared directly and the
    source's hashes are not computed here: MD5 costs about 1.4 CPU-seconds per
    GiB, SHA-256 0.6, and would prove nothing more. Otherwise the strongest
    hash the source vouches for is computed while streaming, because the
    destination may end up reporting nothing (an SFTP server that refuses
    ``md5sum``, an FTP server without ``HASH``), and so is every hash the
    destination may report, to compare it with what was read (against the
    source's, where it vouches for that one too).
    """
    if vouched.keys() & assured:
        return set(features.native_hashes - vouched.keys()) & hashlib.algorithms_available
    strongest = min(vouched, key=_rank, default=None)
    wanted = set(features.native_hashes) | ({strongest} if strongest else set())
    return wanted & hashlib.algorithms_available


def _rank(name: str) -> int:
    """Strongest first (``_STRENGTH``), then any other hash."""
    return _STRENGTH.index(name) if name in _STRENGTH else len(_STRENGTH)


def _assured(upload: Upload, features: Features) -> frozenset[str]:
    """The upload's own promise where it makes one, else the destination's."""
    if isinstance(upload, AssuringUpload):
        return upload.assured_hashes
    return features.assured_hashes


def _compare(kind: str, expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    checked = []
    for name in sorted(expected.keys() & actual.keys()):
        if expected[name].lower() != actual[name].lower():
            raise IntegrityError(
                f"{name} mismatch ({kind}): expected {expected[name]}, got {actual[name]}"
            )
        checked.append(f"{name}:{kind}")
    return checked


def _strongest(checks: list[str]) -> str:
    def rank(check: str) -> tuple[int, int]:
        name, kind = check.split(":", 1)
        strength = _STRENGTH.index(name) if name in _STRENGTH else len(_STRENGTH)
        return _KINDS.index(kind), strength

    return min(checks, key=rank) if checks else "size"


async def copy(
    source: Source,
    info: ObjectInfo,
    destination: Destination,
    path: str,
    *,
    verify: bool = True,
    require_checksum: bool = False,
    progress: Progress | None = None,
    progress_interval: float = 3.0,
) -> CopyResult:
    """Copy ``info`` (from ``source.stat``) to ``path`` on ``destination``.

    Raises ``NotFound`` if the source vanished; ``IntegrityError`` if sizes or
    hashes differ (the upload is aborted; for a hash the destination reports
    only after commit, the object is left for the retry to overwrite);
    ``ChecksumRequired`` with ``require_checksum`` when only sizes could be
    compared (before commit, so nothing is visible, whenever the destination
    could not have reported a hash; otherwise after it); and whatever the
    backends raise, already translated to ``conveyor_shared.errors``.
    ``verify=False`` compares sizes only and cannot be combined with
    ``require_checksum``.
    """
    if require_checksum and not verify:
        raise ValueError("require_checksum needs verify")
    job = _Copy(
        source=source,
        info=info,
        destination=destination,
        path=path,
        vouched=_vouched(info) if verify else {},
        verify=verify,
        require_checksum=require_checksum,
        progress=progress,
        progress_interval=progress_interval,
        started=time.monotonic(),
    )
    if isinstance(destination, ServerSideCopier) and not (
        # A server-side copy can be checked only by a hash the destination reports.
        require_checksum and not job.vouched.keys() & destination.features.native_hashes
    ):
        copied = await destination.copy_from(source, info, path, progress=progress)
        if copied is not None:
            return job.server_side(copied)
    try:
        return await job.stream(trust_assured=True)
    except AssuredHashUnavailable as exc:
        log.warning(
            "copy.assured_hash_unavailable",
            to=destination.describe(path),
            reason=str(exc),
            note="streaming again, hashing what is read",
        )
        return await job.stream(trust_assured=False)


@dataclass(frozen=True)
class _Copy:
    source: Source
    info: ObjectInfo
    destination: Destination
    path: str
    #: The source's hashes to check, or none when verification is off.
    vouched: dict[str, str]
    verify: bool
    require_checksum: bool
    progress: Progress | None
    progress_interval: float
    started: float

    def server_side(self, copied: ObjectInfo) -> CopyResult:
        _check_size(self.info.size, copied.size)
        checks = _compare("destination", self.vouched, copied.hashes)
        note = self.size_note("the copy made server-side reported")
        return self.finish(self.info.size or 0, dict(copied.hashes), True, checks, note)

    async def stream(self, *, trust_assured: bool) -> CopyResult:
        """Stream, hash what cannot be compared otherwise, commit, compare."""
        features = self.destination.features
        upload = await self.destination.begin(self.path, self.info.size)
        try:
            assured = _assured(upload, features) if trust_assured else frozenset()
            wanted = _hashes_to_compute(self.vouched, features, assured)
            hasher = _Hasher(wanted if self.verify else set())
            moved = await self._pump(hasher, upload)
            _check_size(self.info.size, moved)
            read = hasher.hexdigests()
            checks = _compare("stream", self.vouched, read)
            # What the bytes should hash to: the source's own word where it
            # gives one, else what was read.
            expected = {**read, **self.vouched}
            if (
                self.require_checksum
                and not checks
                and not expected.keys() & features.native_hashes
            ):
                why = self.size_note("the destination reports")
                raise self.checksum_required(f"{why}; nothing was made visible")
            committed = await upload.commit(expected)
        except BaseException:
            await asyncio.shield(upload.abort())
            raise
        _check_size(moved, committed.size)
        checks += _compare("destination", self.vouched, committed.hashes)
        unvouched = {name: value for name, value in read.items() if name not in self.vouched}
        checks += _compare("received", unvouched, committed.hashes)
        # No last progress report: the caller's settle records the bytes moved.
        note = self.size_note("the destination reported")
        return self.finish(moved, expected, False, checks, note)

    async def _pump(self, hasher: _Hasher, upload: Upload) -> int:
        moved = 0
        last_report = time.monotonic()
        async with self.source.open(self.info.path) as stream:
            async for chunk in stream:
                await asyncio.gather(hasher.update_async(chunk), upload.write(chunk))
                moved += len(chunk)
                if self.progress and time.monotonic() - last_report >= self.progress_interval:
                    last_report = time.monotonic()
                    await self.progress(moved)
        return moved

    def finish(
        self, size: int, hashes: dict[str, str], server_side: bool, checks: list[str], note: str
    ) -> CopyResult:
        verified_by = _strongest(checks)
        result = CopyResult(
            size,
            hashes,
            server_side,
            time.monotonic() - self.started,
            tuple(checks),
            verified_by,
            note if verified_by == "size" else None,
        )
        if self.require_checksum and verified_by == "size":
            raise self.checksum_required(f"{note}; the file is in place, not recorded as delivered")
        return result

    def size_note(self, destination_part: str) -> str:
        """Why only sizes can be compared, once no check was made."""
        if not self.verify:
            return "verification is off for this destination"
        if not self.vouched:
            return f"the source vouches for no hash and {destination_part} none"
        names = ", ".join(sorted(self.vouched))
        return f"{destination_part} no hash the source vouches for ({names})"

    def checksum_required(self, why: str) -> ChecksumRequired:
        where = self.destination.describe(self.path)
        return ChecksumRequired(f"copy to {where}: the route requires a checksum, but {why}")


def _check_size(expected: int | None, actual: int | None) -> None:
    if expected is not None and actual is not None and expected != actual:
        raise IntegrityError(f"size mismatch: expected {expected} bytes, got {actual}")
