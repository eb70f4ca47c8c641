"""One FTP control connection (aioftp's client: replies, multi-line
parsing, login, ``AUTH TLS``), its data connections, and a pool of sessions
per server.

Data connections are opened here rather than by aioftp because aioftp
completes the TLS handshake before it sends the transfer command, and
vsftpd and proftpd only accept (and handshake) a data connection once that
command arrived. Here the command is sent first and the handshake runs
while its ``150`` reply is awaited, resuming the control session
(``tls.resuming_context``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aioftp

from conveyor_shared.backends.ftp.replies import Reply, expect, reply_error
from conveyor_shared.backends.ftp.settings import FtpCredentials, FtpSettings
from conveyor_shared.backends.ftp.tls import check_fingerprint, client_context, resuming_context
from conveyor_shared.backends.pool import SessionPool
from conveyor_shared.errors import ConveyorError, PermanentError, TransientError
from conveyor_shared.logging import get_logger

log = get_logger("conveyor.ftp")

_ANY = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")
_EPSV = re.compile(r"\(([^\d\s])\1\1(\d+)\1\)")
_PASV = re.compile(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")
#: Replies to EPSV from servers that do not know it; PASV is then used.
_UNKNOWN_COMMAND = {500, 501, 502, 504}

CredentialsSource = Callable[[], Awaitable[FtpCredentials]]


def address(settings: FtpSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.effective_port}"


@contextlib.contextmanager
def translated(what: str, where: str, *, path_lookup: bool = False) -> Iterator[None]:
    """aioftp's, asyncio's and ssl's exceptions as Conveyor's errors."""
    try:
        yield
    except aioftp.StatusCodeError as exc:
        code = exc.received_codes[-1] if exc.received_codes else "000"
        reply = Reply(int(str(code)) if str(code).isdigit() else 0, tuple(exc.info or ()))
        raise reply_error(reply, what, path_lookup=path_lookup) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"{what}: the TLS certificate of {where} is not trusted ({exc.verify_message})"
        ) from None
    except (OSError, EOFError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        reason = str(exc) or type(exc).__name__
        raise TransientError(f"{what}: {type(exc).__name__}: {reason}") from exc


def _features(reply: Reply) -> dict[str, str]:
    """FEAT's lines as name -> parameters ("MLST" -> "type*;size*;...")."""
    found = {}
    for line in reply.lines[1:-1] if len(reply.lines) > 2 else reply.lines:
        name, _, params = line.strip().partition(" ")
        if name and not name.lower().startswith(("features", "extensions", "end")):
            found[name.upper()] = params.strip()
    return found


class DataConnection:
    """One transfer's data connection; ``finish`` reads the closing reply."""

    def __init__(
        self,
        session: FtpSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        what: str,
    ) -> None:
        self.session = session
        self._reader = reader
        self._writer = writer
        self._what = what

    async def read(self, size: int) -> bytes:
        with self.session.errors(self._what):
            return await asyncio.wait_for(self._reader.read(size), self.session.settings.io_timeout)

    async def write(self, chunk: bytes) -> None:
        with self.session.errors(self._what):
            self._writer.write(chunk)
            await asyncio.wait_for(self._writer.drain(), self.session.settings.io_timeout)

    async def finish(self) -> Reply:
        """Close the data connection and return the server's 2xx for the transfer."""
        with self.session.errors(self._what):
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                # A server may skip TLS's close_notify; its reply says whether all arrived.
                await asyncio.wait_for(self._writer.wait_closed(), self.session.settings.io_timeout)
        return expect(await self.session.reply(self._what), self._what)

    def abort(self) -> None:
        """Drop the connection; the session's state is then unknown, so it is closed too."""
        self._writer.transport.abort()
        self.session.close()


class FtpSession:
    """A logged-in control connection; one command at a time."""

    def __init__(self, settings: FtpSettings, client: aioftp.Client) -> None:
        self.settings = settings
        self.client = client
        self.where = address(settings)
        self.features: dict[str, str] = {}
        #: The directory the server started the session in.
        self.home = "/"
        self.idle_since = time.monotonic()
        self._epsv = settings.passive != "pasv"
        self._closed = False

    @classmethod
    async def open(cls, settings: FtpSettings, credentials: FtpCredentials) -> FtpSession:
        """Connect, secure, log in, read FEAT, switch to UTF-8 and binary.

        Raises ``CredentialsRefused`` on a refused login, ``PermanentError``
        for an untrusted certificate, ``TransientError`` when the server
        cannot be reached or drops the connection.
        """
        context = client_context(settings, credentials) if settings.tls != "none" else None
        client = aioftp.Client(
            socket_timeout=settings.io_timeout,
            connection_timeout=settings.connect_timeout,
            ssl=context if settings.tls == "implicit" else None,
            encoding="utf-8",
        )
        session = cls(settings, client)
        try:
            await session._start(credentials, context)
        except BaseException:
            session.close()
            raise
        return session

    async def _start(self, credentials: FtpCredentials, context: ssl.SSLContext | None) -> None:
        settings = self.settings
        with self.errors(f"connect to {self.where}"):
            await self.client.connect(settings.host, settings.effective_port)
            if settings.tls == "explicit":
                assert context is not None
                await self.client.upgrade_to_tls(context)  # AUTH TLS, PBSZ 0, PROT P
            if settings.fingerprint:
                check_fingerprint(self.ssl_object, settings.fingerprint, self.where)
            if settings.tls == "implicit":
                await self.client.command("PBSZ 0", "200")
                await self.client.command("PROT P", "200")
        with self.errors(f"log in to {self.where} as {credentials.username!r}"):
            await self.client.login(credentials.username, credentials.password.get_secret_value())
        self.features = _features(await self.command("FEAT", "FEAT", required=False))
        if "UTF8" in self.features:
            await self.command("OPTS UTF8 ON", "OPTS UTF8 ON", required=False)
        await self.command("TYPE I", "TYPE I")
        pwd = await self.command("PWD", "PWD")
        quoted = re.search(r'"((?:[^"]|"")*)"', pwd.text)
        self.home = quoted[1].replace('""', '"') if quoted else "/"

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        stream = self.client._stream
        if stream is None:
            return None
        found: Any = stream.writer.transport.get_extra_info("ssl_object")
        return found if isinstance(found, ssl.SSLObject) else None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self.client.close()

    def errors(
        self, what: str, *, path_lookup: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return self._closing(translated(what, self.where, path_lookup=path_lookup))

    @contextlib.contextmanager
    def _closing(self, inner: contextlib.AbstractContextManager[None]) -> Iterator[None]:
        """A connection-level failure leaves the session unusable: close it."""
        try:
            with inner:
                yield
        except TransientError:
            self.close()
            raise

    async def reply(self, what: str) -> Reply:
        with self.errors(what):
            code, info = await self.client.command(None, _ANY)
        return Reply(int(str(code)), tuple(info))

    async def command(
        self, line: str, what: str, *, required: bool = True, path_lookup: bool = False
    ) -> Reply:
        """Send ``line`` and return the reply; unless ``required`` is False, a
        4xx or 5xx is raised as its error."""
        with self.errors(what):
            code, info = await self.client.command(line, _ANY)
        reply = Reply(int(str(code)), tuple(info))
        if required:
            expect(reply, what, path_lookup=path_lookup)
        elif reply.code == 421:
            self.close()
            raise reply_error(reply, what)
        return reply

    async def _passive(self, what: str) -> tuple[str, int]:
        if self._epsv:
            reply = await self.command("EPSV", what, required=False)
            match = _EPSV.search(reply.text)
            if reply.code == 229 and match:
                return self.settings.host, int(match[2])
            if reply.code not in _UNKNOWN_COMMAND or self.settings.passive == "epsv":
                raise reply_error(reply, what)
            self._epsv = False  # not known here: PASV from now on
        reply = await self.command("PASV", what)
        found = _PASV.search(reply.text)
        if reply.code != 227 or not found:
            raise TransientError(f"{what}: unreadable PASV reply {reply}")
        numbers = [int(n) for n in found.groups()]
        host = ".".join(map(str, numbers[:4])) if self.settings.trust_pasv_address else None
        return host or self.settings.host, numbers[4] * 256 + numbers[5]

    async def transfer(self, line: str, what: str, *, path_lookup: bool = False) -> DataConnection:
        """Open a data connection for ``line`` (RETR, STOR, MLSD, LIST).

        Raises ``NotFound`` for a 550 where ``path_lookup``, else the reply's error.
        """
        host, port = await self._passive(what)
        with self.errors(what):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.settings.connect_timeout
            )
        handshake: asyncio.Task[None] | None = None
        try:
            with self.errors(what):
                await self.client.stream.write((line + "\r\n").encode("utf-8"))
            control = self.ssl_object
            if control is not None:
                hostname = self.settings.host if control.context.check_hostname else None
                handshake = asyncio.ensure_future(
                    writer.start_tls(resuming_context(control), server_hostname=hostname)
                )
            reply = await self.reply(what)
            if not reply.preliminary:
                raise reply_error(reply, what, path_lookup=path_lookup)
            if handshake is not None:
                with self.errors(f"{what} (TLS on the data connection)"):
                    await asyncio.wait_for(handshake, self.settings.io_timeout)
        except BaseException:
            if handshake is not None:
                handshake.cancel()
                with contextlib.suppress(BaseException):
                    await handshake
            writer.transport.abort()
            raise
        return DataConnection(self, reader, writer, what)

    async def quit(self) -> None:
        if not self._closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.quit(), 5)
        self.close()


class FtpSessionPool:
    """At most ``max_sessions`` sessions to one server, listing and transfers
    together, reused across files; a session that failed is closed, not reused."""

    def __init__(self, settings: FtpSettings, credentials: CredentialsSource) -> None:
        self.settings = settings
        self.where = address(settings)
        self._credentials = credentials
        self._pool = SessionPool(self._connect, settings.max_sessions, settings.idle_seconds)
        #: What the last session's FEAT offered (empty before the first connects).
        self.features: dict[str, str] = {}
        #: When each directory was last swept of orphaned temporary files (monotonic).
        self.swept: dict[str, float] = {}
        self.log = log.bind(server=self.where)

    @property
    def idle(self) -> int:
        return self._pool.idle

    async def _connect(self) -> FtpSession:
        session = await FtpSession.open(self.settings, await self._credentials())
        self.features = session.features
        mlsd = "MLST" in session.features or "MLSD" in session.features
        self.log.info("ftp.connected", tls=self.settings.tls, mlsd=mlsd)
        return session

    async def acquire(self) -> FtpSession:
        return await self._pool.acquire()

    def release(self, session: FtpSession) -> None:
        self._pool.release(session)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[FtpSession]:
        async with self._pool.session() as session:
            try:
                yield session
            except ConveyorError:
                raise
            except BaseException:
                session.close()  # cancelled mid-command: its reply would be misread later
                raise

    async def close(self) -> None:
        await asyncio.gather(*(session.quit() for session in self._pool.drain()))
