"""One file being written over a data connection, streamed: each chunk goes
to the socket as it comes, never gathered in memory or on disk.

``commit`` closes the data connection, reads the server's 226, compares
``SIZE`` and, where FEAT offers one and the route verifies, a server hash
(``HASH``, ``XSHA256``, ``XMD5``, ``XCRC``) with what ``copy()`` expects,
then puts the file in place as the route's ``upload_mode`` says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from conveyor_shared.backends.ftp.session import DataConnection, FtpSession
from conveyor_shared.errors import ConveyorError, IntegrityError, PermanentError
from conveyor_shared.transfer.protocols import ObjectInfo

if TYPE_CHECKING:
    from conveyor_shared.backends.ftp.store import FtpStore

_HEX = re.compile(r"\b([0-9a-fA-F]{8,128})\b")
#: Hash commands some servers list in FEAT, by the hash name they give.
X_COMMANDS = {"XSHA256": "sha256", "XSHA1": "sha1", "XMD5": "md5", "XCRC": "crc32"}
#: The HASH command's algorithm names (draft-bryan-ftpext-hash) -> Conveyor's names.
HASH_NAMES = {"SHA-256": "sha256", "SHA-1": "sha1", "MD5": "md5", "CRC32": "crc32"}
#: Which to ask for when ``expected`` names none the server offers: MD5 is
#: what S3 and GCS vouch for, so it is compared end to end.
PREFERENCE = ("md5", "sha256", "sha1", "crc32")
DIGEST_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32, "crc32": 8}


def offered_hashes(features: Mapping[str, str]) -> dict[str, str]:
    """Conveyor's hash name -> the command computing it: ``HASH`` (with
    ``OPTS HASH <algorithm>`` first when that is not the server's current
    one, shown as ``HASH <algorithm>``) where offered, else ``XSHA256`` etc."""
    offered: dict[str, str] = {}
    for item in features.get("HASH", "").split(";"):
        algorithm = item.strip().rstrip("*").upper()
        if algorithm in HASH_NAMES:
            offered[HASH_NAMES[algorithm]] = "HASH" if item.endswith("*") else f"HASH {algorithm}"
    for command, name in X_COMMANDS.items():
        if command in features:
            offered.setdefault(name, command)
    return offered


def choose_hash(offered: Mapping[str, str], expected: Mapping[str, str]) -> str | None:
    """The hash to ask the server for: one ``expected`` names, else the preferred."""
    for name in PREFERENCE:
        if name in offered and name in expected:
            return name
    return next((name for name in PREFERENCE if name in offered), None)


def hash_in(reply_text: str, length: int | None) -> str | None:
    """The hex digest in a HASH or X* reply (``213 SHA-256 0-9 <hex> name``)."""
    for found in _HEX.finditer(reply_text):
        if length is None or len(found[1]) == length:
            return found[1].lower()
    return None


class FtpUpload:
    def __init__(
        self,
        store: FtpStore,
        session: FtpSession,
        data: DataConnection,
        path: str,
        final: str,
        written_to: str,
    ) -> None:
        self._store = store
        self._session: FtpSession | None = session
        self._data = data
        self._path = path
        self._final = final
        self._written_to = written_to
        self._offset = 0
        self._what = f"upload {store.describe(path)}"

    @property
    def temporary_path(self) -> str:
        """Where the bytes go until ``commit`` (the final path with ``upload_mode: direct``)."""
        return self._written_to

    async def write(self, chunk: bytes) -> None:
        """Send ``chunk``; raises ``TransientError`` when the connection fails."""
        if self._session is None:
            raise RuntimeError("upload already committed or aborted")
        await self._data.write(chunk)
        self._offset += len(chunk)

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Finish the transfer, check size and server hash, and put the file in
        place; see the module docstring.

        Raises ``IntegrityError`` when the server holds other bytes (the
        temporary file is removed first), ``PermanentError`` when the server
        refuses the rename (naming the ``upload_mode`` that would work), and
        the reply's error otherwise; then the caller's ``abort`` cleans up.
        """
        session = self._session
        if session is None:
            raise RuntimeError("upload already committed or aborted")
        await self._data.finish()
        if self._written_to != self._final:
            await self._store.sweep(session, self._written_to)
        held = await self._store.size_of(session, self._written_to, self._what)
        if held is not None and held != self._offset:
            await self.abort()
            raise IntegrityError(
                f"{self._what}: the server holds {held} bytes of {self._offset} sent"
            )
        hashes = await self._check_hash(session, expected or {})
        if self._written_to != self._final:
            await self._put_in_place(session)
        info = await self._store.stat_remote(session, self._final, self._path, self._what)
        self._session = None
        self._store.pool.release(session)
        return ObjectInfo(
            info.path,
            info.size,
            info.modified,
            hashes=hashes,
            modified_precision=info.modified_precision,
        )

    async def _check_hash(self, session: FtpSession, expected: Mapping[str, str]) -> dict[str, str]:
        """The server's hash of what it holds, compared with ``expected``;
        empty when the route does not verify or the server offers none."""
        if not self._store.settings.verify_hash:
            return {}
        offered = offered_hashes(session.features)
        name = choose_hash(offered, expected)
        if name is None:
            return {}
        command, _, algorithm = offered[name].partition(" ")
        if algorithm:
            await session.command(f"OPTS HASH {algorithm}", f"choose {name} for {self._what}")
        reply = await session.command(
            f"{command} {self._written_to}", f"{command} {self._what}", required=False
        )
        digest = hash_in(reply.text, DIGEST_LENGTHS[name]) if reply.ok else None
        if digest is None:
            self._store.pool.log.warning("ftp.hash_unavailable", command=command, reply=str(reply))
            return {}
        if name in expected and expected[name].lower() != digest:
            await self.abort()
            raise IntegrityError(
                f"{self._what}: {name} mismatch: expected {expected[name]}, the server holds "
                f"{digest}; the temporary file was removed"
            )
        return {name: digest}

    async def _put_in_place(self, session: FtpSession) -> None:
        mode = self._store.settings.upload_mode
        if mode == "delete_then_rename":
            await session.command(f"DELE {self._final}", self._what, required=False)
        await session.command(f"RNFR {self._written_to}", f"rename for {self._what}")
        reply = await session.command(f"RNTO {self._final}", self._what, required=False)
        if reply.ok:
            return
        if mode == "rename" and reply.code in {550, 553}:
            raise PermanentError(
                f"{self._what}: the server refused to rename the temporary file over the "
                f"existing one ({reply}); set upload_mode: delete_then_rename for this server"
            )
        await session.command(f"RNTO {self._final}", self._what)  # raises the reply's error

    async def abort(self) -> None:
        """Drop the transfer and remove what was written (over a fresh session:
        the dropped one is closed). Never raises; with ``direct`` the final
        name itself is removed, as it holds only part of the file."""
        session, self._session = self._session, None
        if session is None:
            return
        self._data.abort()
        self._store.pool.release(session)
        try:
            async with self._store.pool.session() as fresh:
                await fresh.command(f"DELE {self._written_to}", self._what, required=False)
        except (ConveyorError, OSError) as exc:
            self._store.pool.log.warning(
                "ftp.temporary_file_left", file=self._written_to, reason=str(exc)
            )
