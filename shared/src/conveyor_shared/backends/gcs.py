"""Google Cloud Storage as a Destination, written with GCS's resumable-upload
protocol by a chunk loop of our own.

* ``begin`` starts an upload session (``POST ...?uploadType=resumable``); a
  404 there means the bucket does not exist.
* ``write`` cuts the stream into chunks of ``chunk_size`` bytes (a multiple of
  256 KiB) and sends each with ``PUT`` and ``Content-Range: bytes a-b/*``.
  GCS answers 308 and its ``Range`` header says how much it has committed.
  When the size was declared, a chunk that cannot be the last is streamed to
  GCS while ``copy()`` is still reading it, so reading and uploading overlap;
  otherwise a chunk is sent once the next byte proves it is not the last.
  Either way only the current chunk is held in memory, as the caller's own
  buffers, until GCS acknowledges it.
* ``commit`` sends the rest with the total (``bytes a-b/total``); only then
  does GCS create the object, atomically, and return its metadata with
  ``md5Hash`` and ``crc32c``.
* A dropped connection, a timeout, 408, 429 or 5xx: ask the session how much
  it committed (``Content-Range: bytes */*``) and resend the rest of the chunk
  from memory, with back-off; never from zero.
* ``abort`` cancels the session (``DELETE``) and never raises.

Against the emulator (``STORAGE_EMULATOR_HOST``) no token is sent. The session
URI is itself a credential (whoever holds it may upload), so it never reaches
a log line or an error message, and neither does the access token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import mimetypes
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import stamina
import structlog
from gcloud.aio.auth import Token
from gcloud.aio.storage.storage import init_api_root
from multidict import CIMultiDictProxy
from yarl import URL

from conveyor_shared.backends.folders import folder
from conveyor_shared.config.models import Destination as DestinationSpec
from conveyor_shared.config.models import GcsDestination
from conveyor_shared.errors import (
    ConveyorError,
    CredentialsRefused,
    IntegrityError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.secrets import GcsCredentials, SecretStore
from conveyor_shared.transfer.protocols import Features, ObjectInfo

log = structlog.get_logger("conveyor.gcs")

KiB = 1024
MiB = 1024 * KiB
#: GCS accepts non-final chunks only in multiples of this.
CHUNK_QUANTUM = 256 * KiB
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
#: No overall limit (a chunk takes as long as the source needs to supply it);
#: a silent server is a failure after ``sock_read`` seconds.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=180)
#: Cancelling a session is a courtesy; it must not hold up a failing copy for long.
_ABORT_TIMEOUT = aiohttp.ClientTimeout(total=30)
_URL = re.compile(r"https?://\S+")


class _SessionLost(TransientError):
    """The upload session expired, or it and we disagree on how much it holds:
    only a new upload can help (``copy()``'s caller retries it)."""


# -- the HTTP edge --------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def resource(self, what: str) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise TransientError(f"{what}: GCS answered {self.status} without a JSON resource")
        return value

    @property
    def message(self) -> str:
        """GCS's own error message, if the body carries one."""
        with contextlib.suppress(ValueError, LookupError, TypeError):
            return str(json.loads(self.body)["error"]["message"])[:300]
        return ""


def _bucket_missing(what: str, detail: str) -> ConveyorError:
    return Misconfigured(f"{what}: the bucket does not exist ({detail})")


def _session_expired(what: str, detail: str) -> ConveyorError:
    return _SessionLost(f"{what}: the upload session expired ({detail})")


def _session_out_of_step(what: str, detail: str) -> ConveyorError:
    return _SessionLost(f"{what}: GCS refused the chunk's offset or size ({detail})")


#: What a status means for one kind of request, where that differs from the default.
Meanings = Mapping[int, Callable[[str, str], ConveyorError]]
OBJECT: Meanings = {404: lambda what, detail: NotFound(f"{what}: no such object ({detail})")}
BUCKET: Meanings = {404: _bucket_missing}
SESSION: Meanings = {400: _session_out_of_step, 404: _session_expired, 410: _session_expired}


def status_error(status: int, message: str, what: str, meanings: Meanings) -> ConveyorError:
    """Map an HTTP status from GCS to Conveyor's errors: 401/403 permanent;
    408, 429, 5xx transient; a 404 naming the bucket, misconfigured; what
    ``meanings`` says for this request; anything else permanent."""
    detail = f"HTTP {status}" + (f": {message}" if message else "")
    if status == 401:
        return CredentialsRefused(f"{what}: the credentials were refused ({detail})")
    if status == 403:
        return PermanentError(f"{what}: permission denied ({detail})")
    if status == 404 and "bucket does not exist" in message.lower():
        return _bucket_missing(what, detail)
    if status in meanings:
        return meanings[status](what, detail)
    if status in (408, 429) or status >= 500:
        return TransientError(f"{what}: {detail}")
    return PermanentError(f"{what}: GCS refused the request ({detail})")


def _safe(exc: BaseException) -> str:
    """An exception's text without URLs (aiohttp puts the session URI in some)."""
    text = _URL.sub("<url>", str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class GcsClient:
    """One shared aiohttp session plus the credentials for one identity.

    Every failure leaves here as a ``conveyor_shared.errors`` exception: callers
    never see aiohttp's, and no message carries a token or a session URI.
    """

    def __init__(self, session: aiohttp.ClientSession, api_root: str, token: Token | None) -> None:
        self.session = session
        self.api_root = api_root.rstrip("/")
        self._token = token

    async def _auth(self, what: str) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            token = await self._token.get()
        except aiohttp.ClientResponseError as exc:
            if exc.status in (400, 401, 403):
                raise PermanentError(
                    f"{what}: Google refused the service-account credentials (HTTP {exc.status})"
                ) from None
            raise TransientError(f"{what}: no access token (HTTP {exc.status})") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{what}: no access token ({_safe(exc)})") from None
        except Exception as exc:  # the key cannot sign: jwt and cryptography errors
            raise Misconfigured(
                f"{what}: the service-account key cannot be used ({type(exc).__name__})"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        url: URL,
        what: str,
        *,
        ok: Collection[int] = (200,),
        meanings: Meanings = OBJECT,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> _Reply:
        """Send one request and read the (small) answer; raise unless its status is ``ok``."""
        sent = {**await self._auth(what), **(headers or {})}
        try:
            async with self.session.request(
                method, url, headers=sent, allow_redirects=False, **kwargs
            ) as response:
                reply = _Reply(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{what}: {_safe(exc)}") from None
        if reply.status not in ok:
            raise status_error(reply.status, reply.message, what, meanings)
        return reply


# -- the store ----------------------------------------------------------------------


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value, validate=True).hex()


def info_from_resource(path: str, resource: dict[str, Any], what: str) -> ObjectInfo:
    """An ``ObjectInfo`` from a GCS object resource; hashes as lower-case hex
    (``crc32c``: 8 digits, big-endian, as GCS encodes it)."""
    try:
        hashes = {
            name: _b64_to_hex(resource[field])
            for name, field in (("md5", "md5Hash"), ("crc32c", "crc32c"))
            if resource.get(field)
        }
        updated = resource.get("updated")
        return ObjectInfo(
            path=path,
            size=int(resource["size"]),
            modified=datetime.fromisoformat(updated) if updated else None,
            hashes=hashes,
            version=str(resource["generation"]) if resource.get("generation") else None,
        )
    except (KeyError, ValueError, binascii.Error) as exc:
        raise TransientError(f"{what}: unexpected object resource ({_safe(exc)})") from None


class GcsStore:
    """One bucket, and a folder in it (``prefix``), in Google Cloud Storage."""

    def __init__(
        self,
        client: GcsClient,
        bucket: str,
        prefix: str = "",
        *,
        chunk_size: int = 32 * MiB,
        resume_attempts: int = 5,
    ) -> None:
        if chunk_size <= 0 or chunk_size % CHUNK_QUANTUM:
            raise Misconfigured(f"GCS chunk size {chunk_size} is not a multiple of 256 KiB")
        self.client = client
        self.bucket = bucket
        self.prefix = folder(prefix)
        self.chunk_size = chunk_size
        self.resume_attempts = resume_attempts
        # GCS computes md5Hash for every object a single upload creates.
        self.features = Features(
            native_hashes=frozenset({"md5"}), assured_hashes=frozenset({"md5"})
        )

    def key(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def describe(self, path: str) -> str:
        return f"gs://{self.bucket}/{self.key(path)}"

    def object_url(self, path: str) -> URL:
        bucket, name = quote(self.bucket, safe=""), quote(self.key(path), safe="")
        return URL(f"{self.client.api_root}/storage/v1/b/{bucket}/o/{name}", encoded=True)

    async def stat(self, path: str) -> ObjectInfo:
        """Describe ``path``. Raises ``NotFound`` if there is no such object,
        ``Misconfigured`` if GCS says the bucket itself is missing."""
        what = f"stat {self.describe(path)}"
        reply = await self.client.call("GET", self.object_url(path), what)
        return info_from_resource(path, reply.resource(what), what)

    async def begin(self, path: str, size: int | None) -> GcsUpload:
        """Open an upload session for ``path``; nothing is visible until ``commit``.

        Raises ``Misconfigured`` if the bucket does not exist, ``PermanentError``
        if the credentials may not write to it, ``TransientError`` if GCS cannot
        be reached.
        """
        what = f"upload {self.describe(path)}"
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        headers = {"X-Upload-Content-Type": content_type}
        if size is not None:
            headers["X-Upload-Content-Length"] = str(size)
        bucket = quote(self.bucket, safe="")
        reply = await self.client.call(
            "POST",
            URL(f"{self.client.api_root}/upload/storage/v1/b/{bucket}/o", encoded=True),
            what,
            meanings=BUCKET,
            headers=headers,
            params={"uploadType": "resumable", "name": self.key(path)},
            json={"name": self.key(path), "contentType": content_type},
        )
        location = reply.headers.get("Location")
        if not location:
            raise TransientError(f"{what}: GCS started no upload session")
        return GcsUpload(self, path, URL(location, encoded=True), size)


# -- one upload -----------------------------------------------------------------------


class _Window:
    """Bytes written but not yet committed by GCS, kept as views of the
    caller's own buffers (no copies), with their offsets in the object."""

    def __init__(self) -> None:
        self._pieces: deque[memoryview] = deque()
        #: Offset of the first byte held; GCS has committed everything before it.
        self.start = 0
        #: Offset just past the last byte written.
        self.end = 0
        self._grew = asyncio.Event()

    def append(self, piece: memoryview) -> None:
        if piece:
            self._pieces.append(piece)
            self.end += len(piece)
            self._grew.set()

    def release(self, offset: int) -> None:
        """Forget the bytes before ``offset``: GCS holds them."""
        while self._pieces and self.start < offset:
            head = self._pieces[0]
            if len(head) <= offset - self.start:
                self._pieces.popleft()
                self.start += len(head)
            else:
                self._pieces[0] = head[offset - self.start :]
                self.start = offset

    def views(self, start: int, end: int) -> Iterator[memoryview]:
        """The held bytes in ``[start, end)``, which must lie within the window."""
        position = self.start
        for piece in list(self._pieces):
            low, high = max(start - position, 0), min(end - position, len(piece))
            if low < high:
                yield piece[low:high]
            position += len(piece)
            if position >= end:
                return

    async def stream(self, start: int, end: int) -> AsyncIterator[memoryview]:
        """``[start, end)`` as it is written, waiting for bytes not written yet."""
        offset = start
        while offset < end:
            if self.end <= offset:
                self._grew.clear()
                await self._grew.wait()
                continue
            for view in self.views(offset, min(end, self.end)):
                yield view
                offset += len(view)


async def _iterate(views: Iterable[memoryview]) -> AsyncIterator[memoryview]:
    for view in views:
        yield view


def _committed(reply: _Reply) -> int:
    """How many bytes a 308 says GCS holds (``Range: bytes=0-N``; none without it)."""
    match = re.fullmatch(r"bytes=0-(\d+)", reply.headers.get("Range", "").strip())
    return int(match[1]) + 1 if match else 0


def _worth_resuming(exc: Exception) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, _SessionLost | IntegrityError)


class GcsUpload:
    """One resumable upload session; see the module's docstring for the protocol."""

    def __init__(self, store: GcsStore, path: str, session: URL, size: int | None) -> None:
        self._store = store
        self._path = path
        self._session = session
        self._size = size
        self._what = f"upload {store.describe(path)}"
        self._window = _Window()
        #: End of the chunk now being written.
        self._chunk_end = store.chunk_size
        #: The current chunk's PUT, while it streams.
        self._streaming: asyncio.Task[_Reply] | None = None
        #: A request failed: ask GCS how much it holds before sending more.
        self._lost = False
        self._finished = False

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``. Waits only when a chunk is complete and GCS has not yet
        acknowledged it; raises ``TransientError`` if GCS stays unreachable through
        every resume attempt, ``PermanentError`` if it refuses the upload."""
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk)).cast("B")
        while view:
            if self._window.end == self._chunk_end:
                # A byte beyond the chunk: it was not the last, so GCS must hold it all.
                await self._deliver(self._chunk_end, None)
                self._chunk_end += self._store.chunk_size
            room = self._chunk_end - self._window.end
            self._window.append(view[:room])
            view = view[room:]
            self._stream_if_not_last()

    def _stream_if_not_last(self) -> None:
        """Start sending the current chunk while it is written, unless it may be
        the object's last (a last chunk goes with the total, in ``commit``)."""
        if self._streaming is not None or self._size is None or self._chunk_end >= self._size:
            return
        start = self._window.start
        body = self._window.stream(start, self._chunk_end)
        self._streaming = asyncio.create_task(self._put(start, self._chunk_end, None, body))

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Send the last chunk with the total; GCS creates the object atomically,
        replacing any object of that name, and returns its metadata.

        Raises ``IntegrityError`` if fewer or more bytes were written than ``begin``
        was told; the upload is then left for ``abort``. ``expected`` is not
        checked here: the object's ``md5Hash`` is returned for ``copy()`` to compare.
        """
        total = self._window.end
        if self._size is not None and total != self._size:
            raise IntegrityError(f"{self._what}: {total} bytes written, {self._size} declared")
        resource = await self._deliver(total, total)
        if resource is None:
            raise TransientError(f"{self._what}: GCS did not finish the object")
        self._finished = True
        return info_from_resource(self._path, resource, self._what)

    async def abort(self) -> None:
        """Cancel the session; whatever GCS held of it is discarded. Never raises."""
        if self._finished:
            return
        self._finished = True
        if self._streaming is not None:
            self._streaming.cancel()
            await asyncio.gather(self._streaming, return_exceptions=True)
        with contextlib.suppress(Exception):
            # GCS answers 499 to a cancelled session; the emulator, 501.
            await self._store.client.call(
                "DELETE", self._session, self._what, ok=range(100, 600), timeout=_ABORT_TIMEOUT
            )
        log.info("gcs.upload_aborted", to=self._store.describe(self._path))

    async def _deliver(self, end: int, total: int | None) -> dict[str, Any] | None:
        """Return once GCS holds every byte before ``end`` (with ``total``: once it
        has created the object, whose resource is returned).

        A transient failure makes the next attempt ask GCS what it holds and
        resend the rest from the window, after a back-off. Raises the last
        error when every attempt failed.
        """
        pending, self._streaming = self._streaming, None
        async for attempt in stamina.retry_context(
            on=_worth_resuming,
            attempts=self._store.resume_attempts,
            timeout=None,
            wait_initial=0.5,
            wait_max=30.0,
        ):
            with attempt:
                try:
                    if pending is not None:
                        task, pending = pending, None
                        first = await task
                    elif self._lost:
                        first = await self._resume(end, total)
                    else:
                        first = await self._send(end, total)
                    return await self._until_held(first, end, total)
                except TransientError:
                    self._lost = True
                    raise
        raise AssertionError("stamina re-raises the last failure")

    async def _until_held(
        self, reply: _Reply, end: int, total: int | None
    ) -> dict[str, Any] | None:
        """Resend what GCS did not keep (it may commit less than a PUT carried)."""
        resource = self._acknowledge(reply, end, total)
        while resource is None and (total is not None or self._window.start < end):
            offset = self._window.start
            resource = self._acknowledge(await self._send(end, total), end, total)
            if resource is None and self._window.start == offset:
                raise TransientError(f"{self._what}: GCS kept none of bytes {offset}-{end - 1}")
        return resource

    async def _resume(self, end: int, total: int | None) -> _Reply:
        """Ask the session what it holds (``bytes */*``; ``*/total`` once the total
        is known, which also finishes an upload whose last answer was lost)."""
        reply = await self._put(0, 0, total, None)
        self._lost = False
        held = _committed(reply) if reply.status == 308 else end
        log.warning(
            "gcs.upload_resumed",
            to=self._store.describe(self._path),
            committed=held,
            resending=max(end - held, 0),
        )
        return reply

    async def _send(self, end: int, total: int | None) -> _Reply:
        start = self._window.start
        body = _iterate(self._window.views(start, end)) if end > start else None
        return await self._put(start, end, total, body)

    async def _put(
        self, start: int, end: int, total: int | None, body: AsyncIterator[memoryview] | None
    ) -> _Reply:
        """PUT ``[start, end)`` of the object into the session; ``body`` None
        means no bytes: a status query, or the end of an object already sent."""
        size = "*" if total is None else str(total)
        span = f"{start}-{end - 1}" if body is not None else "*"
        return await self._store.client.call(
            "PUT",
            self._session,
            self._what,
            ok=(200, 201, 308),
            meanings=SESSION,
            headers={"Content-Range": f"bytes {span}/{size}", "Content-Length": str(end - start)},
            data=body,
        )

    def _acknowledge(self, reply: _Reply, end: int, total: int | None) -> dict[str, Any] | None:
        """Drop what GCS now holds from the window; the object's resource once it exists."""
        if reply.status in (200, 201):
            if total is None:
                raise IntegrityError(f"{self._what}: GCS finished the object before its end")
            return reply.resource(self._what)
        held = _committed(reply)
        if not self._window.start <= held <= self._window.end:
            raise _SessionLost(
                f"{self._what}: GCS holds {held} bytes, but bytes "
                f"{self._window.start}-{self._window.end} are all that can be resent"
            )
        self._window.release(held)
        return None


# -- the factory ---------------------------------------------------------------------


class GcsDestinationFactory:
    """Opens GCS destinations over one shared HTTP session, with one access
    token per credentials secret (the service's own identity, from the
    environment, when a route names none).

    ``api_root`` points at an emulator; by default ``STORAGE_EMULATOR_HOST``
    does, and against an emulator no token is ever fetched.
    """

    def __init__(
        self, secrets: SecretStore, *, api_root: str | None = None, resume_attempts: int = 5
    ) -> None:
        self._secrets = secrets
        self._emulated, self._api_root = init_api_root(api_root)
        self._resume_attempts = resume_attempts
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str | None, GcsClient] = {}

    async def open(self, spec: DestinationSpec) -> GcsStore:
        """A ``GcsStore`` for ``spec``. Raises ``Misconfigured`` if ``spec`` is not a
        GCS destination, or its secret is missing or not a service-account key."""
        if not isinstance(spec, GcsDestination):
            raise Misconfigured(f"the GCS transfer service cannot deliver to {spec.type}")
        secret = spec.credentials.secret if spec.credentials else None
        return GcsStore(
            await self._client_for(secret),
            spec.bucket,
            spec.prefix,
            chunk_size=spec.chunk_mib * MiB,
            resume_attempts=self._resume_attempts,
        )

    async def _client_for(self, secret: str | None) -> GcsClient:
        if secret not in self._clients:
            # Read even against the emulator, so a bad secret shows up locally too.
            key = await self._key(secret) if secret else None
            session = self._http()
            token = None if self._emulated else _token(key, session, secret)
            self._clients[secret] = GcsClient(session, self._api_root, token)
        return self._clients[secret]

    async def _key(self, secret: str) -> dict[str, Any]:
        try:
            credentials = await self._secrets.get(secret, GcsCredentials)
        except NotFound:
            raise Misconfigured(f"GCS credentials secret {secret!r} does not exist") from None
        return {
            **credentials.model_dump(exclude={"private_key"}),
            "private_key": credentials.private_key.get_secret_value(),
        }

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def forget_credentials(self) -> None:
        """Drop the clients (and tokens) made from secrets."""
        self._clients.clear()

    async def close(self) -> None:
        """Close the shared HTTP session; stores opened from here stop working."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._clients.clear()


def _token(key: dict[str, Any] | None, session: aiohttp.ClientSession, secret: str | None) -> Token:
    """gcloud-aio-auth's token for a service-account key, or, without one, for the
    environment's identity (GOOGLE_APPLICATION_CREDENTIALS, the metadata server)."""
    try:
        service_file = io.StringIO(json.dumps(key)) if key is not None else None
        # gcloud-aio-auth types ``session`` as requests' Session (its sync twin's).
        return Token(service_file=service_file, session=session, scopes=SCOPES)  # type: ignore[arg-type]
    except Exception as exc:
        raise Misconfigured(
            f"GCS credentials secret {secret!r} is not a usable key ({type(exc).__name__})"
        ) from None
