"""What every storage backend is: a ``Source`` that lists, stats and streams
objects, and a ``Destination`` that writes one atomically.

Optional abilities are separate protocols (``ServerSideCopier``), discovered
at run time with ``isinstance``; what a destination can do is also recorded in
its ``Features`` so logs and benchmarks can say which path a copy took.

Paths are relative to the backend's root (a bucket and prefix, or an SFTP
directory) and use ``/`` as the separator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from conveyor_shared.errors import TransientError


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    #: Bytes, or None when the backend cannot tell before reading.
    size: int | None
    modified: datetime | None = None
    #: Content hashes the backend vouches for, lower-case hex: "md5", "sha256", "crc32c".
    hashes: Mapping[str, str] = field(default_factory=dict)
    #: An opaque version token (S3 VersionId/LastModified, GCS generation).
    version: str | None = None
    #: How far ``modified`` may be from the real time: None when exact to the
    #: second or better; a minute for an FTP LIST time without seconds, a day
    #: for one without a time of day.
    modified_precision: timedelta | None = None


@dataclass(frozen=True)
class Features:
    #: ``copy_from`` can copy without the bytes passing through Conveyor.
    server_side_copy: bool = False
    #: Hashes the destination may compute itself over what it holds and return
    #: from ``Upload.commit``; ``copy()`` compares them with the source's.
    native_hashes: frozenset[str] = frozenset()
    #: Of those, the ones every commit returns for sure (GCS's ``md5Hash``):
    #: ``copy()`` skips hashing them while streaming. Anything not assured (an
    #: SFTP ``md5sum`` the server may refuse, an S3 multipart ETag) is also
    #: hashed while streaming, so the bytes are checked whatever the
    #: destination then reports. An ``AssuringUpload`` overrides this.
    assured_hashes: frozenset[str] = frozenset()


@runtime_checkable
class Source(Protocol):
    async def stat(self, path: str) -> ObjectInfo:
        """Describe ``path``. Raises ``NotFound`` if it does not exist."""
        ...

    def open(self, path: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream ``path``'s bytes in chunks, never all at once.

        Raises ``NotFound`` on entering if the object is gone, and
        ``TransientError`` if the connection drops mid-stream.
        """
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, recursively, in no particular order."""
        ...


class Upload(Protocol):
    """One object being written. Nothing is visible under the final name until
    ``commit``; after ``abort`` (or a crash) nothing is visible at all."""

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``. Raises ``TransientError`` if the connection fails."""
        ...

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Make the object visible under its final name, atomically, replacing any
        object already there, and return what the destination now holds.

        ``expected`` are the hashes the bytes should have. A destination that can
        hash what it holds before making it visible (SFTP ``md5sum`` on the
        temporary file) compares them first: on a mismatch it discards the
        upload and raises ``IntegrityError``, and nothing appears under the
        final name. Raises ``AssuredHashUnavailable`` (nothing visible) when it
        cannot compute a hash it assured (``Features.assured_hashes``, or an
        ``AssuringUpload``'s own). The
        returned ``hashes`` are only those the destination computed itself.
        """
        ...

    async def abort(self) -> None:
        """Discard what was written. Never raises; safe to call after a failure."""
        ...


class AssuredHashUnavailable(TransientError):
    """``commit`` could not compute a hash the destination had assured (an SFTP
    server that ran ``md5sum`` before refuses it now). Nothing was made visible;
    ``copy()`` streams the file once more, hashing it itself."""


@runtime_checkable
class AssuringUpload(Protocol):
    """An upload that decides its own assured hashes, because they depend on
    what its destination learned about the server (SFTP: whether ``md5sum``
    runs there). ``copy()`` then trusts these, not ``Features.assured_hashes``,
    and the upload keeps exactly this promise in ``commit``."""

    @property
    def assured_hashes(self) -> frozenset[str]: ...


@runtime_checkable
class Destination(Protocol):
    features: Features

    async def stat(self, path: str) -> ObjectInfo:
        """Describe ``path``. Raises ``NotFound`` if it does not exist."""
        ...

    async def begin(self, path: str, size: int | None) -> Upload:
        """Start writing ``path``; ``size`` may be None when unknown.

        Raises ``NotFound`` if the parent directory is missing and the
        destination is not configured to create it, ``PermanentError`` on
        permission denied or bad credentials.
        """
        ...

    def describe(self, path: str) -> str:
        """A URI naming ``path`` on this destination, for the ledger and logs."""
        ...


@runtime_checkable
class ServerSideCopier(Protocol):
    async def copy_from(
        self,
        source: Source,
        info: ObjectInfo,
        path: str,
        *,
        progress: Callable[[int], Awaitable[None]] | None = None,
    ) -> ObjectInfo | None:
        """Copy ``info`` from ``source`` to ``path`` without moving the bytes
        through this process. Returns None, having done nothing, when this
        ``source`` cannot be copied server-side (another provider, other
        credentials); the caller then streams. ``progress`` is awaited with the
        bytes copied so far, where the destination can tell. If it raises, the
        copy stops (what was partly copied is discarded) and the error
        propagates unchanged."""
        ...
