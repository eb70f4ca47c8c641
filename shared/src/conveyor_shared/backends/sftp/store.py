"""One directory on one SFTP server: a Source (list, stat, open, delete) and
a Destination (begin an upload, sweep orphans, rename into place)."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import stat as mode
import time
from collections.abc import AsyncIterator
from typing import cast

import asyncssh

from conveyor_shared.backends.folders import checked_relative
from conveyor_shared.backends.sftp.connection import Session, SftpConnectionPool, file_info
from conveyor_shared.backends.sftp.errors import RemoteDirectoryMissing, translated
from conveyor_shared.backends.sftp.hashing import hash_file
from conveyor_shared.backends.sftp.upload import SftpUpload
from conveyor_shared.backends.temporary import is_temporary_name, temporary_name
from conveyor_shared.errors import ConveyorError, NotFound
from conveyor_shared.transfer.protocols import Features, ObjectInfo

#: What ``open`` asks for at a time; asyncssh splits it into parallel requests.
READ_SIZE = 1024 * 1024


class SftpStore:
    """One directory on one SFTP server, reached through ``pool``: a Source
    (``list``, ``stat``, ``open``) and a Destination (``begin``).

    ``directory`` is absolute, or relative to the directory the server starts
    a session in. With ``create_directory`` a missing directory (and any
    sub-directory a path names) is created; without it, writing into one
    raises ``RemoteDirectoryMissing``.
    """

    def __init__(
        self,
        pool: SftpConnectionPool,
        directory: str = ".",
        *,
        create_directory: bool = False,
        verify_checksum: bool = True,
    ) -> None:
        self.pool = pool
        self.server = pool.server
        self.directory = directory or "."
        self.create_directory = create_directory
        self.verify_checksum = verify_checksum
        # Whether MD5 is assured depends on the server; each SftpUpload says so.
        self.features = Features(
            native_hashes=frozenset({"md5"}) if verify_checksum else frozenset()
        )

    def remote_path(self, path: str) -> str:
        """``path`` inside the directory; raises ``PermanentError`` for a path that
        would leave it (absolute, empty segments, ``..``)."""
        return posixpath.join(self.directory, checked_relative(path))

    def describe(self, path: str) -> str:
        return self._describe_remote(posixpath.join(self.directory, path))

    def _describe_remote(self, remote: str) -> str:
        return f"{self.server.url}/{posixpath.normpath(remote).lstrip('/')}"

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translated(what, self.server)

    async def stat(self, path: str) -> ObjectInfo:
        """Size and time of ``path``, and its MD5 where the store verifies
        checksums and the server runs ``md5sum`` (which reads the file once,
        on the server). Raises ``NotFound`` if it does not exist."""
        remote = self.remote_path(path)
        what = f"stat {self.describe(path)}"
        async with self.pool.session() as session:
            with self._errors(what):
                attrs = await session.sftp.stat(remote)
            hashes = {}
            regular = mode.S_ISREG(attrs.permissions or 0)  # md5sum of a folder fails
            if regular and self.verify_checksum and self.pool.checksums_worth_asking():
                digest = await hash_file(self.pool, session, remote, "md5", what)
                hashes = {"md5": digest} if digest else {}
        return file_info(path, attrs, hashes)

    @contextlib.asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream ``path`` in reads of ``READ_SIZE``, holding one session.

        Raises ``NotFound`` on entering if it does not exist, and
        ``TransientError`` if the connection drops mid-stream.
        """
        remote = self.remote_path(path)
        what = f"read {self.describe(path)}"
        async with self.pool.session() as session:
            with self._errors(what):
                handle = await session.sftp.open(remote, "rb")
            try:
                yield self._chunks(handle, what)
            finally:
                # A dropped connection cannot close the handle; it must not hide the error.
                with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                    async with asyncio.timeout(self.pool.tuning.cleanup_timeout):
                        await handle.close()

    async def _chunks(self, handle: asyncssh.SFTPClientFile, what: str) -> AsyncIterator[bytes]:
        with self._errors(what):
            while chunk := await handle.read(READ_SIZE):
                yield cast(bytes, chunk)  # opened "rb": asyncssh returns bytes

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every file under ``prefix`` (a folder, or the start of names in
        one), recursively, without hashes. Conveyor's temporary files and
        what is neither a file nor a directory (links, devices) are left out;
        a missing folder lists nothing. Raises ``PermanentError`` for a prefix
        leaving the directory or a folder the server will not list."""
        folder = prefix.rpartition("/")[0]
        if folder:
            checked_relative(folder)
        async with self.pool.session() as session:
            with self._errors(f"list {self.describe(prefix)}"):
                pending = [folder]
                while pending:
                    parent = pending.pop()
                    for name, attrs in await self._entries(session, parent):
                        relative = f"{parent}/{name}" if parent else name
                        kind = attrs.permissions or 0
                        if mode.S_ISDIR(kind) and _may_hold(relative, prefix):
                            pending.append(relative)
                        elif mode.S_ISREG(kind) and _is_listed(name, relative, prefix):
                            yield file_info(relative, attrs)

    async def _entries(
        self, session: Session, folder: str
    ) -> tuple[tuple[str, asyncssh.SFTPAttrs], ...]:
        """The names in ``folder`` (relative to the directory); none if it is missing."""
        remote = posixpath.join(self.directory, folder) if folder else self.directory
        try:
            entries = await session.sftp.readdir(remote)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return ()
        names = ((str(entry.filename), entry.attrs) for entry in entries)
        return tuple((name, attrs) for name, attrs in names if name not in {".", ".."})

    async def begin(self, path: str, size: int | None) -> SftpUpload:
        """Open a new temporary file for ``path``, after removing what crashed
        uploads left in its directory.

        Holds one of the server's sessions until ``commit`` or ``abort``.
        Raises ``RemoteDirectoryMissing`` if the directory is missing and
        ``create_directory`` is off, ``PermanentError`` on permission denied.
        """
        final = self.remote_path(path)
        temp = posixpath.join(posixpath.dirname(final), temporary_name(posixpath.basename(final)))
        session = await self.pool.acquire()
        try:
            handle = await self._open_temporary(session, path, temp)
            await self._sweep(session, temp, handle)
            assured = await self._assured(session, path, temp)
        except BaseException:
            self.pool.release(session)
            raise
        return SftpUpload(self, session, path, final, temp, handle, assured)

    async def _assured(self, session: Session, path: str, temp: str) -> frozenset[str]:
        """MD5 if the server runs ``md5sum``. Not known yet, it is asked once,
        on the new, empty temporary file, so even the first upload needs no
        local hashing where the server can check it."""
        if not self.verify_checksum:
            return frozenset()
        if self.pool.checksums_run is None:
            async with self.pool.probing:
                if self.pool.checksums_run is None:
                    await hash_file(
                        self.pool, session, temp, "md5", f"checksum {self.describe(path)}"
                    )
                if self.pool.checksums_run is None:  # timed out: do not wait on every upload
                    self.pool.checksum_outcome(False)
        return frozenset({"md5"}) if self.pool.checksums_run else frozenset()

    async def _sweep(self, session: Session, temp: str, handle: asyncssh.SFTPClientFile) -> None:
        """Remove Conveyor's temporary files in ``temp``'s directory that nothing
        wrote to for ``orphan_age``, at most once per ``orphan_age`` per directory.

        Ages are measured against the new temporary file's own time, so the
        server's clock decides, not this machine's. Never raises: a sweep that
        fails (a partner may forbid deleting) is logged and tried again after
        ``orphan_age``, not at every upload.
        """
        parent = posixpath.dirname(temp)
        age = self.pool.tuning.orphan_age
        last = self.pool.swept.get(parent)
        if last is not None and time.monotonic() - last < age:
            return
        self.pool.swept[parent] = time.monotonic()
        removed = []
        try:
            with self._errors(f"sweep {self._describe_remote(parent)}"):
                now = (await handle.stat()).mtime or 0
                for entry in await session.sftp.readdir(parent):
                    name = str(entry.filename)
                    mtime = entry.attrs.mtime
                    if is_temporary_name(name) and mtime is not None and mtime < now - age:
                        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                            await session.sftp.remove(posixpath.join(parent, name))
                        removed.append(name)
        except ConveyorError as exc:
            self.pool.log.warning("sftp.sweep_failed", directory=parent, reason=str(exc))
            return
        if removed:
            self.pool.log.info("sftp.orphans_removed", directory=parent, files=removed)

    async def _open_temporary(
        self, session: Session, path: str, temp: str
    ) -> asyncssh.SFTPClientFile:
        what = f"upload {self.describe(path)}"
        parent = posixpath.dirname(temp)
        try:
            return await self._open(session, temp, what)
        except NotFound:
            if not self.create_directory:
                raise RemoteDirectoryMissing(
                    f"{what}: directory {self._describe_remote(parent)} does not exist and "
                    "the destination has create_directory: false; "
                    "create it on the server or set create_directory: true"
                ) from None
        with self._errors(f"create directory {self._describe_remote(parent)} for {what}"):
            await session.sftp.makedirs(parent, exist_ok=True)
        self.pool.log.info("sftp.directory_created", directory=parent)
        return await self._open(session, temp, what)

    async def _open(self, session: Session, temp: str, what: str) -> asyncssh.SFTPClientFile:
        with self._errors(what):
            # block_size=0: one request per write call; SftpUpload cuts the blocks.
            return await session.sftp.open(temp, "wb", block_size=0)

    async def rename_into_place(self, session: Session, temp: str, final: str, what: str) -> None:
        """Atomic ``posix-rename`` where offered; otherwise a plain rename, and
        if the server will not rename over an existing file, remove it first
        (the final name is then absent for a moment, never partial)."""
        with self._errors(what):
            try:
                await session.sftp.posix_rename(temp, final)
                return
            except asyncssh.SFTPOpUnsupported:
                self.pool.note_once(
                    "sftp.rename_not_atomic",
                    reason="server lacks posix-rename@openssh.com; "
                    "replacing a file removes it first",
                )
            try:
                await session.sftp.rename(temp, final)
            except asyncssh.SFTPError:
                if not await session.sftp.exists(final):
                    raise
                await session.sftp.remove(final)
                await session.sftp.rename(temp, final)

    async def delete(self, path: str) -> None:
        """Remove ``path`` (a file; provider sync's ``after_copy: delete``).

        Raises ``NotFound`` if it does not exist, ``PermanentError`` if the
        server refuses, ``TransientError`` if the connection drops.
        """
        async with self.pool.session() as session:
            with self._errors(f"delete {self.describe(path)}"):
                await session.sftp.remove(self.remote_path(path))

    async def remote_hash(self, path: str, algorithm: str) -> str | None:
        """Run ``md5sum`` (``sha1sum``, ``sha256sum``) on ``path`` on the server.

        Returns None as ``hash_file`` does. Raises ``NotFound`` if ``path`` is
        gone, ``TransientError`` if the connection drops.
        """
        async with self.pool.session() as session:
            what = f"checksum {self.describe(path)}"
            return await hash_file(self.pool, session, self.remote_path(path), algorithm, what)


def _is_listed(name: str, relative: str, prefix: str) -> bool:
    """A file under ``prefix``, and not an upload in progress."""
    return relative.startswith(prefix) and not is_temporary_name(name)


def _may_hold(folder: str, prefix: str) -> bool:
    """Whether files under ``folder`` can start with ``prefix``."""
    return prefix.startswith(f"{folder}/") or f"{folder}/".startswith(prefix)
