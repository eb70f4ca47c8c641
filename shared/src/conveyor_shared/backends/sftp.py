"""SFTP as a Destination (D6, D7; docs/transfer-sftp.md).

* An upload goes to ``.conveyor-<sha1(name)[:16]>-<random token>.part`` in
  the file's own directory, then is renamed into place by ``commit()``: with
  the OpenSSH ``posix-rename@openssh.com`` extension (atomic, replaces an
  existing file) where the server offers it, else with a plain rename,
  removing an existing file first if the server refuses to rename over it.
  In that fallback the final name is briefly absent, never partial. The
  temporary name is fixed in length (a 255-byte final name still fits) and
  unique to the upload, so two replicas uploading the same path never share
  one. What crashed workers left (temporary files untouched for
  ``orphan_age``, by the server's clock) is removed when an upload begins in
  that directory, at most once per ``orphan_age``.
* Writes are pipelined: chunks are cut into blocks of at most 255 KiB (what
  OpenSSH accepts) and up to ``requests_in_flight`` write requests are
  outstanding at increasing offsets. Memory is bounded by that window, not by
  the file's size.
* Before the rename, ``commit()`` compares the temporary file's size and,
  where the route asks for it, its ``md5sum`` (run over an SSH exec channel,
  as rclone does) with the hash ``copy()`` expects: a mismatch removes the
  temporary file, so nothing wrong ever appears under the final name. The
  first upload asks the server once (on its new, empty temporary file)
  whether it runs ``md5sum``; where it does, every upload assures MD5
  (``SftpUpload.assured_hashes``) and ``copy()`` does not hash the stream
  itself. A server that allows no commands is asked again only after
  ``checksum_retry_seconds``.
* The server's host key is pinned from the route's ``host_keys``; a key not
  listed there is a ``PermanentError`` naming host:port, never trusted on
  first use.
* Connections are pooled per server, user, credentials and pinned keys, at
  most ``max_sessions`` at once (each SSH connection carries one SFTP
  session), reused across files, and replaced when they drop.
* asyncssh's exceptions are translated here; callers see only
  ``conveyor_shared.errors``. No error message or log line carries a
  password or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh

from conveyor_shared.config.models import SftpDestination
from conveyor_shared.errors import (
    AlreadyExists,
    ConveyorError,
    CredentialsRefused,
    IntegrityError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.logging import get_logger
from conveyor_shared.secrets import SecretStore, SftpCredentials
from conveyor_shared.transfer.protocols import AssuredHashUnavailable, Features, ObjectInfo

log = get_logger("conveyor.sftp")

#: OpenSSH's sftp-server refuses (and drops the connection on) bigger writes.
MAX_BLOCK = 255 * 1024

_HASH_COMMANDS = {"md5": "md5sum", "sha1": "sha1sum", "sha256": "sha256sum"}
_HEX = re.compile(r"^[0-9a-f]+$")
#: Conveyor's temporary names, this version's and the older fixed ones.
_TEMPORARY = re.compile(r"^\.conveyor-[0-9a-f]{16}(-[0-9a-f]{12})?\.part$")

CredentialsSource = Callable[[], Awaitable[SftpCredentials]]


class RemoteDirectoryMissing(NotFound, Misconfigured):
    """The destination directory does not exist and may not be created.

    A ``NotFound`` as the ``Destination`` protocol promises, and a
    ``Misconfigured`` (so permanent): retrying cannot create the directory.
    """


@dataclass(frozen=True)
class SftpTuning:
    """How SFTP transfers are run; the defaults are what docs/transfer-sftp.md measured."""

    block_size: int = MAX_BLOCK
    #: 8 MiB of writes outstanding: four times OpenSSH's 2 MiB channel window.
    #: More costs memory (about 0.65 MiB per request) and gained nothing measurable.
    requests_in_flight: int = 32
    #: Preferred first: AES-GCM is the fastest cipher asyncssh offers on x86.
    encryption_algs: tuple[str, ...] = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    )
    connect_timeout: float = 30.0
    #: A silent connection is declared dead after interval * count_max seconds.
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 4
    #: Pooled connections idle longer than this are closed rather than reused.
    idle_seconds: float = 300.0
    #: Upper bound on abort()'s clean-up of a temporary file.
    cleanup_timeout: float = 10.0
    #: A remote checksum may take this long plus one second per ``checksum_rate`` bytes.
    checksum_timeout: float = 60.0
    checksum_rate: int = 25_000_000
    #: After a server refused ``md5sum``, uploads hash locally and ask it again after this long.
    checksum_retry_seconds: float = 3600.0
    #: A temporary file not written for this long is a crashed worker's and is removed.
    orphan_age: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= MAX_BLOCK:
            raise ValueError(f"block_size must be between 1 and {MAX_BLOCK}")
        if self.requests_in_flight < 1:
            raise ValueError("requests_in_flight must be at least 1")


@dataclass(frozen=True)
class SftpServer:
    """Where to connect and as whom; ``host_keys`` are the pinned public keys."""

    host: str
    port: int
    username: str
    host_keys: tuple[str, ...]

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"sftp://{self.username}@{self.address}"


def translate(exc: BaseException, what: str, server: SftpServer) -> ConveyorError:
    """Map an asyncssh or socket failure to Conveyor's error hierarchy.

    Messages use asyncssh's reason strings, which never contain credentials.
    """
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return NotFound(f"{what}: no such file or directory")
    if isinstance(exc, asyncssh.SFTPFileAlreadyExists):
        return AlreadyExists(f"{what}: already exists")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return PermanentError(f"{what}: permission denied by the server ({reason})")
    if isinstance(exc, asyncssh.SFTPOpUnsupported):
        return PermanentError(f"{what}: not supported by the server ({reason})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return PermanentError(
            f"{what}: the host key of {server.address} is not one of the route's host_keys"
        )
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return PermanentError(
            f"{what}: no agreement with {server.address} on host key type or cipher ({reason})"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return CredentialsRefused(
            f"{what}: {server.address} refused the credentials for user {server.username!r}"
        )
    if isinstance(exc, asyncssh.IllegalUserName | asyncssh.ProtocolNotSupported):
        return PermanentError(f"{what}: {reason}")
    return TransientError(f"{what}: {type(exc).__name__}: {reason}")


@contextlib.contextmanager
def _errors(what: str, server: SftpServer) -> Iterator[None]:
    try:
        yield
    except (asyncssh.Error, OSError, EOFError) as exc:
        raise translate(exc, what, server) from exc


def temporary_name(name: str, token: str | None = None) -> str:
    """An upload's name before commit: fixed-length, and unique to the upload
    (``token``: 12 hex digits, random unless given)."""
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:16]
    return f".conveyor-{digest}-{token or secrets.token_hex(6)}.part"


def is_temporary_name(name: str) -> bool:
    return bool(_TEMPORARY.match(name))


def _checked_relative(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise PermanentError(
            f"refusing to write {path!r}: only plain relative paths stay inside the directory"
        )
    return path


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
class _Session:
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
        self._idle: list[_Session] = []
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

    async def acquire(self) -> _Session:
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

    def release(self, session: _Session) -> None:
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
    async def session(self) -> AsyncIterator[_Session]:
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

    async def _connect(self) -> _Session:
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
        with _errors(f"connect to {self.server.url}", self.server):
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
        return _Session(conn, sftp)

    async def close(self) -> None:
        """Close every idle connection; busy ones close when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()
        for session in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.conn.wait_closed(), self.tuning.cleanup_timeout)


class SftpStore:
    """One directory on one SFTP server, reached through ``pool``.

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
        return posixpath.join(self.directory, _checked_relative(path))

    def describe(self, path: str) -> str:
        return self._describe_remote(posixpath.join(self.directory, path))

    def _describe_remote(self, remote: str) -> str:
        return f"{self.server.url}/{posixpath.normpath(remote).lstrip('/')}"

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _errors(what, self.server)

    async def stat(self, path: str) -> ObjectInfo:
        remote = self.remote_path(path)
        async with self.pool.session() as session:
            with self._errors(f"stat {self.describe(path)}"):
                attrs = await session.sftp.stat(remote)
        return _info(path, attrs)

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

    async def _assured(self, session: _Session, path: str, temp: str) -> frozenset[str]:
        """MD5 if the server runs ``md5sum``. Not known yet, it is asked once,
        on the new, empty temporary file, so even the first upload needs no
        local hashing where the server can check it."""
        if not self.verify_checksum:
            return frozenset()
        if self.pool.checksums_run is None:
            async with self.pool.probing:
                if self.pool.checksums_run is None:
                    await self.hash_file(session, temp, "md5", path)
                if self.pool.checksums_run is None:  # timed out: do not wait on every upload
                    self.pool.checksum_outcome(False)
        return frozenset({"md5"}) if self.pool.checksums_run else frozenset()

    async def _sweep(self, session: _Session, temp: str, handle: asyncssh.SFTPClientFile) -> None:
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
        self, session: _Session, path: str, temp: str
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

    async def _open(self, session: _Session, temp: str, what: str) -> asyncssh.SFTPClientFile:
        with self._errors(what):
            # block_size=0: one request per write call; SftpUpload cuts the blocks.
            return await session.sftp.open(temp, "wb", block_size=0)

    async def rename_into_place(self, session: _Session, temp: str, final: str, what: str) -> None:
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

    async def remote_hash(self, path: str, algorithm: str) -> str | None:
        """Run ``md5sum`` (``sha1sum``, ``sha256sum``) on ``path`` on the server.

        Returns None as ``hash_file`` does. Raises ``NotFound`` if ``path`` is
        gone, ``TransientError`` if the connection drops.
        """
        async with self.pool.session() as session:
            return await self.hash_file(session, self.remote_path(path), algorithm, path)

    async def hash_file(
        self, session: _Session, remote: str, algorithm: str, path: str
    ) -> str | None:
        """Hash ``remote`` with the server's ``md5sum`` over an exec channel.

        Returns None, logging it once per server, when the algorithm is not
        one of md5, sha1, sha256, the server refuses commands, the command
        fails or prints no checksum, or it runs past its timeout (a chrooted
        SFTP-only account is the usual case); the pool records which.
        """
        command = _HASH_COMMANDS.get(algorithm)
        if command is None:
            return None
        with self._errors(f"checksum {self.describe(path)}"):
            attrs = await session.sftp.stat(remote)
            absolute = await session.sftp.realpath(remote)
            timeout = self.pool.tuning.checksum_timeout + (attrs.size or 0) / (
                self.pool.tuning.checksum_rate
            )
            output = await self._run(session, f"{command} -- {shlex.quote(absolute)}", timeout)
        if output is None:
            return None
        digest = output.split(maxsplit=1)[0].lstrip("\\").lower() if output.strip() else ""
        if not _HEX.match(digest) or len(digest) != hashlib.new(algorithm).digest_size * 2:
            self.pool.checksum_outcome(False)
            self.pool.note_once("sftp.checksum_unavailable", command=command, output=output[:200])
            return None
        self.pool.checksum_outcome(True)
        return digest

    async def _run(self, session: _Session, command: str, time_limit: float) -> str | None:
        """The command's standard output, or None if the server will not run it."""
        program = command.split(maxsplit=1)[0]
        try:
            async with await session.conn.create_process(
                command, stdin=asyncssh.DEVNULL, encoding=None
            ) as process:
                result = await process.wait(check=False, timeout=time_limit)
        except asyncssh.ChannelOpenError as exc:
            self.pool.checksum_outcome(False)
            self.pool.note_once("sftp.checksum_unavailable", command=program, reason=exc.reason)
            return None
        except asyncssh.TimeoutError:
            self.pool.checksum_outcome(None)
            self.pool.log.warning("sftp.checksum_timed_out", command=program, seconds=time_limit)
            return None
        if result.exit_status != 0:
            self.pool.checksum_outcome(False)
            stderr = _text(result.stderr)
            self.pool.note_once(
                "sftp.checksum_unavailable",
                command=program,
                exit_status=result.exit_status,
                stderr=stderr[:200],
            )
            return None
        return _text(result.stdout)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _info(
    path: str, attrs: asyncssh.SFTPAttrs, hashes: Mapping[str, str] | None = None
) -> ObjectInfo:
    modified = datetime.fromtimestamp(attrs.mtime, UTC) if attrs.mtime is not None else None
    return ObjectInfo(path=path, size=attrs.size, modified=modified, hashes=dict(hashes or {}))


class SftpUpload:
    """One file being written to its temporary name; see the module docstring.

    A failed write request is raised by the next ``write`` or by ``commit``;
    ``abort`` then cancels what is in flight and removes the temporary file.
    """

    def __init__(
        self,
        store: SftpStore,
        session: _Session,
        path: str,
        final: str,
        temp: str,
        handle: asyncssh.SFTPClientFile,
        assured: frozenset[str],
    ) -> None:
        self._store = store
        self._session: _Session | None = session
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
        return _info(self._path, attrs, hashes)

    async def _check_hash(self, session: _Session, expected: Mapping[str, str]) -> dict[str, str]:
        """The server's MD5 of the temporary file, compared with ``expected``;
        empty when the route does not ask for it or the server cannot tell."""
        store = self._store
        if "md5" not in expected or not store.verify_checksum:
            return {}
        if "md5" not in self._assured and not store.pool.checksums_worth_asking():
            return {}
        digest = await store.hash_file(session, self._temp, "md5", self._path)
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

    async def _remove(self, session: _Session) -> None:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            await session.sftp.remove(self._temp)


class SftpDestinationFactory:
    """Opens SFTP destinations, one connection pool per server, user,
    credentials secret, pinned keys and session limit."""

    def __init__(self, secrets: SecretStore, tuning: SftpTuning | None = None) -> None:
        self._secrets = secrets
        self._tuning = tuning or SftpTuning()
        self._pools: dict[tuple[Any, ...], SftpConnectionPool] = {}

    def _pool_for(self, spec: SftpDestination) -> SftpConnectionPool:
        key = (
            spec.host,
            spec.port,
            spec.username,
            spec.credentials.secret,
            tuple(spec.host_keys),
            spec.max_sessions,
        )
        if key not in self._pools:
            secret = spec.credentials.secret

            async def credentials() -> SftpCredentials:
                return await self._secrets.get(secret, SftpCredentials)

            self._pools[key] = SftpConnectionPool(
                SftpServer(spec.host, spec.port, spec.username, tuple(spec.host_keys)),
                credentials,
                spec.max_sessions,
                self._tuning,
                credentials_name=f"secret {secret!r}",
            )
        return self._pools[key]

    async def open(self, spec: Any) -> SftpStore:
        """A store for ``spec``; connects lazily, on the first file.

        Raises ``Misconfigured`` if ``spec`` is not an SFTP destination or a
        pinned host key cannot be parsed.
        """
        if not isinstance(spec, SftpDestination):
            raise Misconfigured(f"the SFTP transfer service cannot deliver to {spec.type}")
        return SftpStore(
            self._pool_for(spec),
            spec.directory,
            create_directory=spec.create_directory,
            verify_checksum=spec.verify_checksum,
        )

    async def forget_credentials(self) -> None:
        """Nothing to drop here: each new connection asks the secret store,
        which the caller has told to read again."""

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
