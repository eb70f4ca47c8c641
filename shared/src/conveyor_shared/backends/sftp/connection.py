"""Pooled SSH connections to one server, each carrying one SFTP session."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh

from conveyor_shared.backends.sftp.errors import translated
from conveyor_shared.backends.sftp.server import SftpServer, SftpTuning
from conveyor_shared.errors import Misconfigured
from conveyor_shared.logging import get_logger
from conveyor_shared.secrets import SftpCredentials
from conveyor_shared.transfer.protocols import ObjectInfo

log = get_logger("conveyor.sftp")

CredentialsSource = Callable[[], Awaitable[SftpCredentials]]


def _pinned_keys(server: SftpServer) -> list[asyncssh.SSHKey]:
    keys = []
    for number, line in enumerate(server.host_keys, start=1):
        try:
            keys.append(asyncssh.import_public_key(line))
        except (asyncssh.KeyImportError, ValueError):
            raise Misconfigured(
                f"host_keys entry {number} for {server.address} is not an SSH public key"
            ) from None
    return keys


@dataclass
class Session:
    """One SSH connection carrying one SFTP session."""

    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    idle_since: float = 0.0

    @property
    def closed(self) -> bool:
        return bool(self.conn.is_closed())

    def close(self) -> None:
        self.conn.close()


class SftpConnectionPool:
    """Up to ``max_sessions`` connections to one server, reused across files.

    ``acquire`` waits while all are busy. A connection that dropped (or idled
    past ``idle_seconds``) is closed and replaced by a fresh one on the next
    ``acquire``; credentials are fetched again for every new connection.
    """

    def __init__(
        self,
        server: SftpServer,
        credentials: CredentialsSource,
        max_sessions: int = 4,
        tuning: SftpTuning | None = None,
        *,
        credentials_name: str = "the SFTP credentials",
    ) -> None:
        self.server = server
        self.tuning = tuning or SftpTuning()
        self.max_sessions = max_sessions
        self._credentials = credentials
        self._credentials_name = credentials_name
        self._known_hosts: tuple[list[asyncssh.SSHKey], list[Any], list[Any]] = (
            _pinned_keys(server),
            [],
            [],
        )
        self._slots = asyncio.Semaphore(max_sessions)
        self._idle: list[Session] = []
        self._closed = False
        #: When each directory was last swept of orphaned temporary files (monotonic).
        self.swept: dict[str, float] = {}
        #: Whether the server ran the checksum command the last time it was asked
        #: (None: not asked yet, or it timed out), and when it last refused.
        self.checksums_run: bool | None = None
        self.checksum_refused_at = 0.0
        #: One upload at a time asks a server it knows nothing of whether it runs md5sum.
        self.probing = asyncio.Lock()
        self.log = log.bind(server=server.address, user=server.username)
        #: Each is logged once per server, then only counted.
        self.noted: set[str] = set()

    def note_once(self, event: str, **fields: Any) -> None:
        if event not in self.noted:
            self.noted.add(event)
            self.log.warning(event, **fields)

    def checksums_worth_asking(self) -> bool:
        """False while a refusal is recent: asking costs a round trip per file."""
        if self.checksums_run is not False:
            return True
        return time.monotonic() - self.checksum_refused_at > self.tuning.checksum_retry_seconds

    def checksum_outcome(self, ran: bool | None) -> None:
        """Record whether the checksum command ran (None: it timed out)."""
        self.checksums_run = ran
        if ran is False:
            self.checksum_refused_at = time.monotonic()

    async def acquire(self) -> Session:
        """A live session for this caller alone; ``release`` it when done.

        Raises what ``_connect`` raises when a new connection is needed and fails.
        """
        await self._slots.acquire()
        try:
            while self._idle:
                session = self._idle.pop()
                if session.closed:
                    self.log.info("sftp.connection_dropped", reason="found closed in the pool")
                elif time.monotonic() - session.idle_since > self.tuning.idle_seconds:
                    session.close()
                else:
                    return session
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, session: Session) -> None:
        """Return ``session`` to the pool, or close it if it dropped or the pool is closed."""
        try:
            if session.closed or self._closed:
                session.close()
            else:
                session.idle_since = time.monotonic()
                self._idle.append(session)
        finally:
            self._slots.release()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        session = await self.acquire()
        try:
            yield session
        finally:
            self.release(session)

    async def _client_keys(self, credentials: SftpCredentials) -> list[asyncssh.SSHKey] | None:
        """The secret's private key, if it has one. Decrypting it (bcrypt for
        OpenSSH keys) is CPU work, so it runs in a thread, off the event loop."""
        if credentials.private_key is None:
            return None
        key = credentials.private_key.get_secret_value()
        passphrase = credentials.passphrase.get_secret_value() if credentials.passphrase else None
        try:
            return [await asyncio.to_thread(asyncssh.import_private_key, key, passphrase)]
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            # asyncssh's reasons are fixed phrases ("Incorrect passphrase"), never key material.
            raise Misconfigured(
                f"the private key in {self._credentials_name} cannot be read: {exc} "
                "(check the key text and its passphrase)"
            ) from None

    async def _connect(self) -> Session:
        """Open a connection and its SFTP session.

        Raises ``PermanentError`` if the host key is not pinned or the
        credentials are refused, ``Misconfigured`` if the secret is unusable,
        ``TransientError`` if the server cannot be reached or drops the
        connection during the handshake.
        """
        credentials = await self._credentials()
        client_keys = await self._client_keys(credentials)
        password = credentials.password.get_secret_value() if credentials.password else None
        tuning = self.tuning
        with translated(f"connect to {self.server.url}", self.server):
            conn = await asyncssh.connect(
                self.server.host,
                self.server.port,
                username=self.server.username,
                known_hosts=self._known_hosts,
                client_keys=client_keys,
                password=password,
                agent_path=None,
                config=None,
                gss_host=None,
                encryption_algs=list(tuning.encryption_algs),
                compression_algs=None,
                connect_timeout=tuning.connect_timeout,
                login_timeout=tuning.connect_timeout,
                keepalive_interval=tuning.keepalive_interval,
                keepalive_count_max=tuning.keepalive_count_max,
            )
            try:
                sftp = await conn.start_sftp_client()
            except BaseException:
                conn.close()
                raise
        self.log.info("sftp.connected", cipher=conn.get_extra_info("send_cipher"))
        return Session(conn, sftp)

    async def close(self) -> None:
        """Close every idle connection; busy ones close when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()
        for session in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.conn.wait_closed(), self.tuning.cleanup_timeout)


def file_info(
    path: str, attrs: asyncssh.SFTPAttrs, hashes: Mapping[str, str] | None = None
) -> ObjectInfo:
    modified = datetime.fromtimestamp(attrs.mtime, UTC) if attrs.mtime is not None else None
    return ObjectInfo(path=path, size=attrs.size, modified=modified, hashes=dict(hashes or {}))
