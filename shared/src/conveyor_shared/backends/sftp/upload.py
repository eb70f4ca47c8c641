"""One file being written under a unique temporary name, checked, then
renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import asyncssh

from conveyor_shared.backends.sftp.connection import Session, file_info
from conveyor_shared.backends.sftp.hashing import hash_file
from conveyor_shared.errors import ConveyorError, IntegrityError
from conveyor_shared.transfer.protocols import AssuredHashUnavailable, ObjectInfo

if TYPE_CHECKING:
    from conveyor_shared.backends.sftp.store import SftpStore


class SftpUpload:
    """One file being written to its temporary name; see the module docstring.

    A failed write request is raised by the next ``write`` or by ``commit``;
    ``abort`` then cancels what is in flight and removes the temporary file.
    """

    def __init__(
        self,
        store: SftpStore,
        session: Session,
        path: str,
        final: str,
        temp: str,
        handle: asyncssh.SFTPClientFile,
        assured: frozenset[str],
    ) -> None:
        self._store = store
        self._session: Session | None = session
        self._path = path
        self._final = final
        self._temp = temp
        self._handle = handle
        self._assured = assured
        self._what = f"upload {store.describe(path)}"
        tuning = store.pool.tuning
        self._block = tuning.block_size
        self._slots = asyncio.Semaphore(tuning.requests_in_flight)
        self._pending: set[asyncio.Task[None]] = set()
        self._failure: ConveyorError | None = None
        self._offset = 0

    @property
    def assured_hashes(self) -> frozenset[str]:
        """MD5 when the server ran ``md5sum`` before this upload began: ``commit``
        then returns it or raises ``AssuredHashUnavailable``."""
        return self._assured

    @property
    def temporary_path(self) -> str:
        """Where the bytes are until ``commit`` renames them."""
        return self._temp

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk`` as write requests; waits while the window is full."""
        self._raise_if_failed()
        for start in range(0, len(chunk), self._block):
            await self._slots.acquire()
            if self._failure is not None:
                self._slots.release()
                raise self._failure
            block = chunk[start : start + self._block]
            task = asyncio.create_task(self._write_block(self._offset, block))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            self._offset += len(block)

    async def _write_block(self, offset: int, block: bytes) -> None:
        try:
            with self._store._errors(self._what):
                await self._handle.write(block, offset)
        except ConveyorError as exc:
            self._failure = self._failure or exc
        finally:
            self._slots.release()

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Wait for every write, check the temporary file's size and (where the
        route asks for it) its ``md5sum`` against ``expected``, rename it into
        place and return the final file's stat, with the hash the server computed.

        Raises ``IntegrityError`` on a size or hash mismatch, and
        ``AssuredHashUnavailable`` if the server no longer runs ``md5sum``
        though the store assured MD5 when the upload began; the temporary file
        is then removed and the final name untouched. On any other failure the
        final name is untouched (or, with the fallback rename, possibly absent)
        and the caller's ``abort`` removes the temporary file.
        """
        if self._session is None:
            raise RuntimeError("upload already committed or aborted")
        if self._pending:
            await asyncio.gather(*self._pending)
        self._raise_if_failed()
        session = self._session
        with self._store._errors(self._what):
            written = (await self._handle.stat()).size
            await self._handle.close()
        if written != self._offset:
            raise IntegrityError(
                f"{self._what}: the server holds {written} bytes of {self._offset} written"
            )
        hashes = await self._check_hash(session, expected or {})
        await self._store.rename_into_place(session, self._temp, self._final, self._what)
        with self._store._errors(self._what):
            attrs = await session.sftp.stat(self._final)
        self._session = None
        self._store.pool.release(session)
        return file_info(self._path, attrs, hashes)

    async def _check_hash(self, session: Session, expected: Mapping[str, str]) -> dict[str, str]:
        """The server's MD5 of the temporary file, compared with ``expected``;
        empty when the route does not ask for it or the server cannot tell."""
        store = self._store
        if "md5" not in expected or not store.verify_checksum:
            return {}
        if "md5" not in self._assured and not store.pool.checksums_worth_asking():
            return {}
        what = f"checksum {store.describe(self._path)}"
        digest = await hash_file(store.pool, session, self._temp, "md5", what)
        if digest is None:
            if "md5" in self._assured:
                await self.abort()
                raise AssuredHashUnavailable(f"{self._what}: the server did not run md5sum")
            return {}
        if digest != expected["md5"].lower():
            await self.abort()
            raise IntegrityError(
                f"{self._what}: md5 mismatch before rename: expected {expected['md5']}, "
                f"the server holds {digest}; the temporary file was removed"
            )
        return {"md5": digest}

    async def abort(self) -> None:
        """Cancel outstanding writes, close and remove the temporary file.

        Never raises. If the connection dropped, the file is removed over a
        fresh one; if the server cannot be reached either, it stays until a
        later upload to its directory sweeps it (``orphan_age``).
        """
        session, self._session = self._session, None
        if session is None:
            return
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            async with asyncio.timeout(self._store.pool.tuning.cleanup_timeout):
                with contextlib.suppress(asyncssh.Error, OSError, ValueError):
                    await self._handle.close()
                if session.closed:
                    self._store.pool.release(session)
                    session = None
                    async with self._store.pool.session() as fresh:
                        await self._remove(fresh)
                else:
                    await self._remove(session)
        except Exception as exc:  # abort() never raises; a later sweep removes what is left
            self._store.pool.log.warning(
                "sftp.temporary_file_left",
                file=self._temp,
                reason=f"{type(exc).__name__}: {getattr(exc, 'reason', '') or exc}",
                note="removed by a later upload to this directory once it is old",
            )
        finally:
            if session is not None:
                self._store.pool.release(session)

    async def _remove(self, session: Session) -> None:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            await session.sftp.remove(self._temp)
