"""What every storage backend is: a ``Source`` that lists, stats and streams
objects, and a ``Destination`` that writes one atomically.

Optional abilities are separate protocols (``ServerSideCopier``), discovered
at run time with ``isinstance``; what a destination can do is also recorded in
its ``Features`` so logs and benchmarks can say which path a copy took.

Paths are relative to the backend's root (a bucket and prefix, or an SFTP
directory) and use ``/`` as the separator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


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


@dataclass(frozen=True)
class Features:
    #: ``copy_from`` can copy without the bytes passing through Conveyor.
    server_side_copy: bool = False
    #: Hashes the destination computes itself from what it received; ``copy()``
    #: compares them with what it read from the source.
    native_hashes: frozenset[str] = frozenset()
    #: Hashes the destination can compute on request after upload (SFTP ``md5sum``).
    verify_hashes: frozenset[str] = frozenset()


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

    async def commit(self) -> ObjectInfo:
        """Make the object visible under its final name, atomically, replacing any
        object already there, and return what the destination now holds."""
        ...

    async def abort(self) -> None:
        """Discard what was written. Never raises; safe to call after a failure."""
        ...


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
    async def copy_from(self, source: Source, info: ObjectInfo, path: str) -> ObjectInfo | None:
        """Copy ``info`` from ``source`` to ``path`` without moving the bytes
        through this process. Returns None, having done nothing, when this
        ``source`` cannot be copied server-side (another provider, other
        credentials); the caller then streams."""
        ...


@runtime_checkable
class HashVerifier(Protocol):
    async def remote_hash(self, path: str, algorithm: str) -> str | None:
        """Ask the destination to hash ``path`` after upload; None if it cannot."""
        ...
