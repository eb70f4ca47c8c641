"""One directory on one FTP server as a ``Source`` and a ``Destination``."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from conveyor_shared.backends.ftp.listing import Entry, mlsx_time, parse_listing
from conveyor_shared.backends.ftp.replies import ServerPathMissing, expect
from conveyor_shared.backends.ftp.session import FtpSession, FtpSessionPool
from conveyor_shared.backends.ftp.settings import FtpCredentials, FtpSettings
from conveyor_shared.backends.ftp.upload import FtpUpload, choose_hash, offered_hashes
from conveyor_shared.backends.temporary import is_temporary_name, temporary_name
from conveyor_shared.errors import (
    ConveyorError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.transfer.protocols import Features, ObjectInfo

#: Bytes per read from a data connection: ``open`` yields chunks up to this size.
READ_SIZE = 1024 * 1024


class RemoteDirectoryMissing(NotFound, Misconfigured):
    """The destination directory does not exist and ``create_dirs`` is off."""


def _checked_relative(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise PermanentError(
            f"refusing {path!r}: only plain relative paths stay inside the directory"
        )
    return path


class FtpStore:
    """``settings.directory`` on the server, reached through ``pool``."""

    def __init__(self, pool: FtpSessionPool, username: str) -> None:
        self.pool = pool
        self.settings = pool.settings
        self.username = username
        self.features = Features()

    # --- paths -------------------------------------------------------------

    def _absolute(self, session: FtpSession, relative: str) -> str:
        base = posixpath.join(session.home, self.settings.directory)
        return posixpath.normpath(posixpath.join(base, relative)) if relative else base

    def describe(self, path: str) -> str:
        scheme = "ftp" if self.settings.tls == "none" else "ftps"
        where = posixpath.normpath(posixpath.join(self.settings.directory, path)).lstrip("/")
        return f"{scheme}://{self.username}@{self.pool.where}/{where}"

    def _learn(self, session: FtpSession) -> None:
        """Record the server hash FEAT offers, so ``copy()`` hashes the stream
        with it and compares the two."""
        chosen = choose_hash(offered_hashes(session.features), {})
        useful = self.settings.verify_hash and chosen in hashlib.algorithms_available
        self.features = Features(
            native_hashes=frozenset({chosen}) if useful and chosen else frozenset()
        )

    # --- stat --------------------------------------------------------------

    async def size_of(self, session: FtpSession, remote: str, what: str) -> int | None:
        """``SIZE``; None when the server does not implement it. Raises ``NotFound``."""
        reply = await session.command(f"SIZE {remote}", what, required=False)
        if reply.code in {500, 502}:
            return None
        expect(reply, what, path_lookup=True)
        number = reply.text.split()[-1] if reply.text else ""
        return int(number) if number.isdigit() else None

    async def stat_remote(
        self, session: FtpSession, remote: str, path: str, what: str
    ) -> ObjectInfo:
        size = await self.size_of(session, remote, what)
        modified = await self._mdtm(session, remote, what)
        if size is None and modified is None:
            raise ServerPathMissing(f"{what}: the server knows no size or time for it")
        return ObjectInfo(path=path, size=size, modified=modified)

    async def stat(self, path: str) -> ObjectInfo:
        """``SIZE`` and ``MDTM`` (UTC, to the second). Raises ``NotFound``."""
        relative = _checked_relative(path)
        async with self.pool.session() as session:
            self._learn(session)
            remote = self._absolute(session, relative)
            return await self.stat_remote(session, remote, path, f"stat {self.describe(path)}")

    # --- open --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream ``path`` in reads of up to 1 MiB over one session.

        Raises ``NotFound`` on entering when it is missing, ``TransientError``
        when the connection drops or fewer bytes arrive than ``SIZE`` said.
        """
        relative = _checked_relative(path)
        what = f"read {self.describe(path)}"
        async with self.pool.session() as session:
            remote = self._absolute(session, relative)
            size = await self.size_of(session, remote, what)
            data = await session.transfer(f"RETR {remote}", what, path_lookup=True)
            finished = False

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal finished
                received = 0
                while chunk := await data.read(READ_SIZE):
                    received += len(chunk)
                    yield chunk
                await data.finish()
                finished = True
                if size is not None and received != size:
                    raise TransientError(f"{what}: {received} of {size} bytes arrived")

            try:
                yield chunks()
            finally:
                if not finished:
                    data.abort()

    # --- delete ------------------------------------------------------------

    async def delete(self, path: str) -> None:
        """``DELE`` ``path`` (provider sync's ``after_copy: delete``).

        A 550 means missing or refused alike, so the path is looked up:
        ``NotFound`` if it is gone, else ``PermanentError`` with the server's
        reply. ``TransientError`` if the connection drops.
        """
        relative = _checked_relative(path)
        what = f"delete {self.describe(path)}"
        async with self.pool.session() as session:
            remote = self._absolute(session, relative)
            reply = await session.command(f"DELE {remote}", what, required=False)
            if reply.code == 550:
                await self.stat_remote(session, remote, path, what)  # raises NotFound if gone
            expect(reply, what)

    # --- list --------------------------------------------------------------

    async def _entries(self, relative_dir: str) -> list[Entry]:
        """The entries of one directory, or none when it does not exist."""
        what = f"list {self.describe(relative_dir or '.')}"
        async with self.pool.session() as session:
            self._learn(session)
            return await self.entries_in(session, self._absolute(session, relative_dir), what)

    async def entries_in(self, session: FtpSession, remote_dir: str, what: str) -> list[Entry]:
        """``remote_dir``'s entries over ``session``: MLSD where FEAT offers
        it, else ``LIST -a`` (vsftpd, proftpd and pure-ftpd hide dotfiles
        from a bare LIST). None when the directory does not exist."""
        cwd = await session.command(f"CWD {remote_dir}", what, required=False)
        if cwd.code == 550:
            return []
        expect(cwd, what)
        mlsd = "MLST" in session.features or "MLSD" in session.features
        data = await session.transfer("MLSD" if mlsd else "LIST -a", what)
        lines = await _read_lines(data)
        await data.finish()
        return parse_listing(lines, mlsd=mlsd, zone=self.settings.zone, what=what)

    async def sweep(self, session: FtpSession, temporary: str) -> None:
        """Remove Conveyor's temporary files beside ``temporary`` that nobody
        wrote to for ``orphan_age`` (what crashed workers left), at most once
        per ``orphan_age`` per directory.

        Ages are ``MDTM`` times against ``temporary``'s own (just written), so
        the server's clock and zone decide, not this machine's nor
        ``time_zone``. Never raises: a failed sweep is logged and tried again
        after ``orphan_age``.
        """
        parent = posixpath.dirname(temporary)
        age = self.settings.orphan_age
        last = self.pool.swept.get(parent)
        if last is not None and time.monotonic() - last < age:
            return
        self.pool.swept[parent] = time.monotonic()
        what = f"sweep {parent} on {self.pool.where}"
        removed = []
        try:
            now = await self._mdtm(session, temporary, what)
            if now is None:
                return
            for entry in await self.entries_in(session, parent, what):
                candidate = posixpath.join(parent, entry.name)
                if not is_temporary_name(entry.name) or candidate == temporary:
                    continue
                written = await self._mdtm(session, candidate, what)
                if written is not None and (now - written).total_seconds() > age:
                    await session.command(f"DELE {candidate}", what, required=False)
                    removed.append(entry.name)
        except ConveyorError as exc:
            self.pool.log.warning("ftp.sweep_failed", directory=parent, reason=str(exc))
            return
        if removed:
            self.pool.log.info("ftp.orphans_removed", directory=parent, files=removed)

    async def _mdtm(self, session: FtpSession, remote: str, what: str) -> datetime | None:
        reply = await session.command(f"MDTM {remote}", what, required=False)
        return mlsx_time(reply.text.split()[-1]) if reply.code == 213 and reply.text else None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every file under ``prefix`` (a key prefix: ``in/`` lists that folder,
        ``in`` also ``inbound/``), recursively; Conveyor's temporary names and
        links left out. A folder that does not exist lists nothing."""
        pending = [prefix.rpartition("/")[0]]
        while pending:
            folder = pending.pop()
            for entry in await self._entries(folder):
                path = f"{folder}/{entry.name}" if folder else entry.name
                if entry.type == "dir" and (path + "/").startswith(prefix[: len(path) + 1]):
                    pending.append(path)
                elif (
                    entry.type == "file"
                    and path.startswith(prefix)
                    and not is_temporary_name(entry.name)
                ):
                    yield ObjectInfo(
                        path, entry.size, entry.modified, modified_precision=entry.precision
                    )

    # --- upload ------------------------------------------------------------

    async def _ensure_directory(self, session: FtpSession, remote_dir: str, what: str) -> None:
        reply = await session.command(f"CWD {remote_dir}", what, required=False)
        if reply.ok:
            return
        if reply.code != 550:
            expect(reply, what)
        if not self.settings.create_dirs:
            raise RemoteDirectoryMissing(
                f"{what}: directory {remote_dir} does not exist on {self.pool.where} and "
                "create_dirs is off; create it on the server or set create_dirs: true"
            )
        built = ""
        for part in remote_dir.strip("/").split("/"):
            built = f"{built}/{part}"
            made = await session.command(f"MKD {built}", what, required=False)
            if not made.ok and made.code != 550 and made.code != 521:
                expect(made, what)
        expect(await session.command(f"CWD {remote_dir}", what), what)

    async def begin(self, path: str, size: int | None) -> FtpUpload:
        """Open the data connection that writes ``path``'s bytes: to a unique
        temporary name beside it (``.conveyor-<hash>-<token>.part``), or to the
        final name with ``upload_mode: direct``. Holds one session until
        ``commit`` or ``abort``. Raises ``RemoteDirectoryMissing`` (or creates
        the directory with ``create_dirs``), ``PermanentError`` on refusal."""
        relative = _checked_relative(path)
        what = f"upload {self.describe(path)}"
        session = await self.pool.acquire()
        try:
            self._learn(session)
            final = self._absolute(session, relative)
            parent, name = posixpath.split(final)
            await self._ensure_directory(session, parent, what)
            direct = self.settings.upload_mode == "direct"
            target = final if direct else posixpath.join(parent, temporary_name(name))
            data = await session.transfer(f"STOR {target}", what)
        except BaseException:
            self.pool.release(session)
            raise
        return FtpUpload(self, session, data, path, final, target)

    async def close(self) -> None:
        await self.pool.close()


async def _read_lines(data: Any) -> list[str]:
    buffer = bytearray()
    while chunk := await data.read(64 * 1024):
        buffer += chunk
    return buffer.decode("utf-8", errors="replace").splitlines()


async def open_ftp_store(settings: FtpSettings, credentials: Mapping[str, Any]) -> FtpStore:
    """A store for ``settings``, logging in with the secret's ``credentials``
    (username, password, optional ca_bundle). Connects lazily, on first use;
    ``close`` it when done. Raises ``Misconfigured`` for an unusable secret
    (the message names the fields, never their values)."""
    try:
        parsed = FtpCredentials.model_validate(dict(credentials))
    except ValueError as exc:
        fields = sorted({str(e["loc"][0]) for e in getattr(exc, "errors", list)() if e["loc"]})
        raise Misconfigured(f"the FTP secret is unusable (check {', '.join(fields)})") from None

    async def fetch() -> FtpCredentials:
        return parsed

    return FtpStore(FtpSessionPool(settings, fetch), parsed.username)
