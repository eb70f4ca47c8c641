"""S3 as a Source and a Destination.

* Reads stream in 1 MiB chunks.
* Writes below one part size are a single ``PutObject`` with ``Content-MD5``;
  larger ones a multipart upload with up to four parts in flight, each with its
  ``Content-MD5``, numbered 1..n in the order they were cut from the stream
  and verified at the end against the multipart ETag S3 computes (unless the
  object is SSE-KMS encrypted, by the route's key or the bucket's default:
  its ETag is not an MD5). Either way the object appears only on completion:
  S3 writes are atomic.
* The part size grows with the declared size so that any object up to S3's
  5 TiB fits in its 10,000 parts (``part_size_for``).
* ``copy_from`` copies server-side (``CopyObject``, ``UploadPartCopy`` with up
  to eight parts in flight above 5 GiB) when the source is S3 reached with the
  same credentials, reporting progress as parts finish.
* ``head``, ``stat``, ``open``, ``delete`` and ``copy_from`` address one
  version of an object when given a version token that is an S3 VersionId
  (``version_id``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError as HttpClientError
from botocore.exceptions import BotoCoreError, ClientError

from conveyor_shared.aws import CLIENT_CONFIG, aws_session
from conveyor_shared.backends.folders import folder
from conveyor_shared.errors import (
    ConveyorError,
    CredentialsRefused,
    IntegrityError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.identity import etag_of, vouched_hashes
from conveyor_shared.transfer.protocols import Features, ObjectInfo, Source

if TYPE_CHECKING:
    from conveyor_shared.runtime import AwsClients
    from conveyor_shared.secrets import SecretStore
    from conveyor_shared.settings import ConveyorSettings

MiB = 1024 * 1024
_COPY_OBJECT_LIMIT = 5 * 1024 * MiB
_COPY_PART = 512 * MiB
_COPY_PARTS_IN_FLIGHT = 8
_MAX_PARTS = 10_000
_MAX_OBJECT = 5 * 1024 * 1024 * MiB  # 5 TiB, S3's largest object

_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_PERMANENT = {
    "AccessDenied",
    "403",
    "AllAccessDisabled",
    "AccountProblem",
    "KMS.DisabledException",
}

_REFUSED_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}

#: How ``object_version`` writes a LastModified time (``datetime.isoformat``).
#: S3 VersionIds never contain ``:``, so one cannot be mistaken for the other.
_LAST_MODIFIED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?")

Progress = Callable[[int], Awaitable[None]]


def translate(exc: BaseException, what: str) -> ConveyorError:
    """Map a botocore/aiohttp failure to Conveyor's error hierarchy."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return NotFound(f"{what}: not found")
        if code == "NoSuchBucket":
            return Misconfigured(f"{what}: bucket does not exist")
        if code in _REFUSED_CREDENTIALS:
            return CredentialsRefused(f"{what}: the credentials were refused ({code})")
        if code in _PERMANENT:
            return PermanentError(f"{what}: permission denied ({code})")
        return TransientError(f"{what}: {code or exc}")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _errors(what: str) -> Any:
    try:
        yield
    except (TimeoutError, ClientError, BotoCoreError, HttpClientError, OSError) as exc:
        raise translate(exc, what) from exc


def object_version(head: Mapping[str, Any]) -> str:
    """S3's VersionId where versioning is on, else the upload's LastModified time."""
    return str(head.get("VersionId") or head["LastModified"].isoformat())


def version_id(version: str | None) -> str | None:
    """The S3 VersionId in a version token from ``object_version``, or None
    when there is none to address: no token, or the LastModified time of an
    object in a bucket without versioning (S3 can only address the current
    object there)."""
    if not version or _LAST_MODIFIED.fullmatch(version):
        return None
    return version


def _version_args(version: str | None) -> dict[str, str]:
    vid = version_id(version)
    return {"VersionId": vid} if vid else {}


def is_kms_encrypted(response: Mapping[str, Any]) -> bool:
    """An S3 response (PutObject, CompleteMultipartUpload, CopyObject,
    HeadObject) says the object is SSE-KMS (or DSSE-KMS) encrypted: its ETag
    is then not an MD5 of anything."""
    return str(response.get("ServerSideEncryption", "")).startswith("aws:kms")


def part_size_for(size: int | None, preferred: int) -> int:
    """The part size for a multipart upload or copy of ``size`` bytes.

    ``preferred``, grown (to a whole MiB) until ``size`` fits in S3's 10,000
    parts: 525 MiB parts for 5 TiB. With an unknown size the parts stay at
    ``preferred``, so such an upload is limited to 10,000 parts of ``preferred``
    bytes (156 GiB at the default 16 MiB). Raises ``PermanentError`` above
    5 TiB, which S3 cannot store.
    """
    if size is None:
        return preferred
    if size > _MAX_OBJECT:
        raise PermanentError(f"{size} bytes is more than S3's largest object (5 TiB)")
    needed = -(-size // _MAX_PARTS)
    return max(preferred, -(-needed // MiB) * MiB)


def part_ranges(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number, first byte, last byte) of each part, numbered from 1."""
    return [
        (number, start, min(start + part_size, size) - 1)
        for number, start in enumerate(range(0, size, part_size), start=1)
    ]


def info_from_head(path: str, head: Mapping[str, Any]) -> ObjectInfo:
    """What a ``HeadObject`` response says, its version token included."""
    return ObjectInfo(
        path=path,
        size=int(head["ContentLength"]),
        modified=head.get("LastModified"),
        hashes=vouched_hashes(head),
        version=object_version(head),
    )


async def _all_or_none(jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` concurrently; when one fails, cancel the rest and raise its error."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class S3Store:
    """One bucket (and a folder in it, ``prefix``) in S3, reached through ``client``.

    ``account`` names the credentials behind ``client``; two stores with the
    same ``account`` can copy server-side. ``version`` arguments take the
    token ``object_version`` made (the ledger's ``sourceVersion``): an S3
    VersionId addresses exactly that version, a LastModified time (a bucket
    without versioning) the current object.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        account: str = "default",
        kms_key_id: str | None = None,
        bucket_owner_full_control: bool = False,
        part_size: int = 16 * MiB,
        parts_in_flight: int = 4,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = folder(prefix)
        self.account = account
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self._put_args: dict[str, Any] = {}
        if kms_key_id:
            self._put_args |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        if bucket_owner_full_control:
            self._put_args["ACL"] = "bucket-owner-full-control"
        self.kms = bool(kms_key_id)
        self._pins: dict[str, str] = {}
        self.features = Features(
            server_side_copy=True, native_hashes=frozenset() if self.kms else frozenset({"md5"})
        )

    def key(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}"

    def pinned(self, path: str, version: str | None) -> S3Store:
        """This store, with ``path`` read (``head``, ``stat``, ``open``) at
        ``version`` unless a call names another: ``copy()`` streams through
        ``open(path)``, which takes no version. ``delete`` is never pinned."""
        store = copy.copy(self)
        store._pins = {**self._pins, **({path: version} if version else {})}
        return store

    def _read_version(self, path: str, version: str | None) -> dict[str, str]:
        return _version_args(version or self._pins.get(path))

    async def head(self, path: str, version: str | None = None) -> dict[str, Any]:
        """The raw ``HeadObject`` response, checksums included. Raises
        ``NotFound`` if the object (or that version of it) does not exist."""
        with _errors(f"stat {self.describe(path)}"):
            head: dict[str, Any] = await self.client.head_object(
                Bucket=self.bucket,
                Key=self.key(path),
                ChecksumMode="ENABLED",
                **self._read_version(path, version),
            )
        return head

    async def stat(self, path: str, version: str | None = None) -> ObjectInfo:
        return info_from_head(path, await self.head(path, version))

    @contextlib.asynccontextmanager
    async def read(
        self, path: str, version: str | None = None
    ) -> AsyncIterator[tuple[dict[str, Any], AsyncIterator[bytes]]]:
        """One ``GetObject``: what a ``HeadObject`` would say (checksums
        included) and the bytes, to read or leave. One request where a HEAD
        and a GET would be two. Raises ``NotFound`` on entering."""
        what = f"read {self.describe(path)}"
        with _errors(what):
            response = await self.client.get_object(
                Bucket=self.bucket,
                Key=self.key(path),
                ChecksumMode="ENABLED",
                **self._read_version(path, version),
            )
        body = response.pop("Body")

        async def chunks() -> AsyncIterator[bytes]:
            with _errors(what):
                async for chunk in body.iter_chunks(MiB):
                    yield chunk

        try:
            yield response, chunks()
        finally:
            body.close()

    @contextlib.asynccontextmanager
    async def open(
        self, path: str, version: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        what = f"read {self.describe(path)}"
        with _errors(what):
            response = await self.client.get_object(
                Bucket=self.bucket, Key=self.key(path), **self._read_version(path, version)
            )
        body = response["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            with _errors(what):
                async for chunk in body.iter_chunks(MiB):
                    yield chunk

        try:
            yield chunks()
        finally:
            body.close()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Current objects under ``prefix``. Their ``md5`` is the ETag of a
        single-part upload; a listing cannot tell an SSE-KMS object, whose ETag
        is no MD5, so ``stat`` before relying on it."""
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors(f"list {self.describe(prefix)}"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        path=item["Key"][len(self.prefix) :],
                        size=int(item["Size"]),
                        modified=item.get("LastModified"),
                        hashes=vouched_hashes(item),
                    )

    async def delete(self, path: str, version: str | None = None) -> None:
        """Remove ``path``; a missing object is not an error.

        With a VersionId, that version is deleted permanently and nothing else
        changes: a newer upload of the same key stays current and no delete
        marker is written. Without one, S3 hides the object behind a delete
        marker in a versioned bucket.
        """
        with contextlib.suppress(NotFound), _errors(f"delete {self.describe(path)}"):
            await self.client.delete_object(
                Bucket=self.bucket, Key=self.key(path), **_version_args(version)
            )

    async def begin(self, path: str, size: int | None) -> _S3Upload:
        return _S3Upload(self, path, size)

    async def copy_from(
        self,
        source: Source,
        info: ObjectInfo,
        path: str,
        *,
        progress: Progress | None = None,
    ) -> ObjectInfo | None:
        """Copy ``info`` (exactly ``info.version`` when that is a VersionId)
        server-side. ``progress`` gets the bytes copied after each part, or
        once at the end of a single ``CopyObject``; if it raises, the
        remaining parts are cancelled, the multipart copy aborted (a single
        ``CopyObject`` is already in place by then) and its error re-raised."""
        if not isinstance(source, S3Store) or source.account != self.account:
            return None
        copy_source = {
            "Bucket": source.bucket,
            "Key": source.key(info.path),
            **_version_args(info.version),
        }
        what = f"copy {source.describe(info.path)} to {self.describe(path)}"
        size = info.size
        if size is None:
            size = (await source.stat(info.path, info.version)).size or 0
        if size <= _COPY_OBJECT_LIMIT:
            with _errors(what):
                await self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self.key(path),
                    CopySource=copy_source,
                    **self._put_args,
                )
            if progress:
                await progress(size)
        else:
            await self._multipart_copy(copy_source, size, path, what, progress)
        return await self.stat(path)

    async def _multipart_copy(
        self,
        copy_source: dict[str, str],
        size: int,
        path: str,
        what: str,
        progress: Progress | None,
    ) -> None:
        key = self.key(path)
        with _errors(what):
            created = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self._put_args
            )
        upload_id = created["UploadId"]
        etags: dict[int, str] = {}
        ranges = iter(part_ranges(size, part_size_for(size, _COPY_PART)))
        copied = 0
        reporting = asyncio.Lock()

        async def copy_parts() -> None:
            nonlocal copied
            # Each of the workers takes the next range until none is left.
            for number, first, last in ranges:
                with _errors(what):
                    part = await self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                etags[number] = part["CopyPartResult"]["ETag"]
                async with reporting:  # one report at a time, always growing
                    copied += last - first + 1
                    if progress:
                        await progress(copied)

        try:
            await _all_or_none(copy_parts() for _ in range(_COPY_PARTS_IN_FLIGHT))
            with _errors(what):
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
                    },
                )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            raise


class _S3Upload:
    """Buffers up to one part; a single PutObject if the file fits in it."""

    def __init__(self, store: S3Store, path: str, size: int | None) -> None:
        self._store = store
        self._key = store.key(path)
        self._path = path
        self._what = f"upload {store.describe(path)}"
        self._part_size = part_size_for(size, store.part_size)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        #: The number of the last part started: parts are 1..n with no gaps,
        #: whatever order they finish in.
        self._numbered = 0
        self._parts: dict[int, tuple[str, bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(store.parts_in_flight)

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        while self._buffered >= self._part_size:
            joined = b"".join(self._buffer)
            part, rest = joined[: self._part_size], joined[self._part_size :]
            self._buffer, self._buffered = ([rest] if rest else []), len(rest)
            await self._start_part(part)

    async def _start_part(self, data: bytes) -> None:
        if self._numbered == _MAX_PARTS:
            raise PermanentError(
                f"{self._what}: more than {_MAX_PARTS} parts of {self._part_size} bytes; "
                "a file of unknown size must fit in that"
            )
        if self._upload_id is None:
            with _errors(self._what):
                created = await self._store.client.create_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, **self._store._put_args
                )
            self._upload_id = created["UploadId"]
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            task.result()  # surface a failed part now rather than at commit
        await self._slots.acquire()
        self._numbered += 1
        task = asyncio.create_task(self._upload_part(self._numbered, data))
        self._tasks.add(task)

    async def _upload_part(self, number: int, data: bytes) -> None:
        try:
            digest = await asyncio.to_thread(lambda: hashlib.md5(data).digest())  # noqa: S324
            with _errors(self._what):
                response = await self._store.client.upload_part(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=base64.b64encode(digest).decode(),
                )
            self._parts[number] = (response["ETag"], digest)
        finally:
            self._slots.release()

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Complete the upload. ``expected["md5"]`` is checked before a single
        ``PutObject`` (whose bytes are all in memory); a multipart upload's
        parts were each checked by S3 against their ``Content-MD5``."""
        if self._upload_id is None:
            return await self._put_single((expected or {}).get("md5"))
        if self._buffered:
            await self._start_part(b"".join(self._buffer))
            self._buffer, self._buffered = [], 0
        await asyncio.gather(*self._tasks)
        numbers = sorted(self._parts)
        with _errors(self._what):
            done = await self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": self._parts[n][0]} for n in numbers]
                },
            )
        self._check_etag(done, [self._parts[n][1] for n in numbers])
        info = await self._store.stat(self._path)
        return ObjectInfo(info.path, info.size, info.modified, {}, info.version)

    def _check_etag(self, done: Mapping[str, Any], digests: list[bytes]) -> None:
        """A multipart ETag is the MD5 of the parts' MD5s and their count, except
        under SSE-KMS (the route's key, or the bucket's default encryption,
        which only the response reveals): then there is nothing to compare."""
        if self._store.kms or is_kms_encrypted(done):
            return
        expected = (
            hashlib.md5(b"".join(digests)).hexdigest()  # noqa: S324 - S3's ETag, not security
            + f"-{len(digests)}"
        )
        if etag_of(done) != expected:
            raise IntegrityError(
                f"{self._what}: multipart ETag {etag_of(done)} != expected {expected}"
            )

    async def _put_single(self, expected_md5: str | None) -> ObjectInfo:
        data = b"".join(self._buffer)
        digest = hashlib.md5(data).digest()  # noqa: S324
        if expected_md5 and expected_md5.lower() != digest.hex():
            raise IntegrityError(f"{self._what}: md5 {digest.hex()} != expected {expected_md5}")
        with _errors(self._what):
            await self._store.client.put_object(
                Bucket=self._store.bucket,
                Key=self._key,
                Body=data,
                ContentMD5=base64.b64encode(digest).decode(),
                **self._store._put_args,
            )
        return await self._store.stat(self._path)

    async def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                await self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id
                )


class S3DestinationFactory:
    """Opens S3 destinations: the service's own client, or one per credentials secret."""

    def __init__(
        self,
        default_client: Any,
        secrets: Any,
        session: Any,
        stack: contextlib.AsyncExitStack,
        client_config: Any = None,
    ) -> None:
        self._default = default_client
        self._secrets = secrets
        self._session = session
        self._stack = stack
        self._config = client_config
        self._clients: dict[tuple[str, str | None], Any] = {}

    async def _client_for(self, secret: str, region: str | None) -> Any:
        from conveyor_shared.secrets import S3Credentials

        key = (secret, region)
        if key not in self._clients:
            creds = await self._secrets.get(secret, S3Credentials)
            self._clients[key] = await self._stack.enter_async_context(
                self._session.client(
                    "s3",
                    region_name=region,
                    aws_access_key_id=creds.access_key_id,
                    aws_secret_access_key=creds.secret_access_key.get_secret_value(),
                    aws_session_token=(
                        creds.session_token.get_secret_value() if creds.session_token else None
                    ),
                    config=self._config,
                )
            )
        return self._clients[key]

    async def open(self, spec: Any) -> S3Store:
        from conveyor_shared.config.models import S3Destination

        if not isinstance(spec, S3Destination):
            raise Misconfigured(f"the S3 transfer service cannot deliver to {spec.type}")
        if spec.credentials is None:
            client, account = self._default, "default"
        else:
            client = await self._client_for(spec.credentials.secret, spec.region)
            account = f"secret:{spec.credentials.secret}"
        return S3Store(
            client,
            spec.bucket,
            spec.prefix,
            account=account,
            kms_key_id=spec.kms_key_id,
            bucket_owner_full_control=spec.bucket_owner_full_control,
        )

    async def forget_credentials(self) -> None:
        """Drop the clients made from secrets; the next ``open`` makes new ones."""
        self._clients.clear()

    async def close(self) -> None:
        """Clients are closed with the service's exit stack."""


async def open_factory(
    settings: ConveyorSettings,
    aws: AwsClients,
    secrets: SecretStore,
    stack: contextlib.AsyncExitStack,
) -> S3DestinationFactory:
    """The S3 transfer service's destinations (``backends/registry.py``): the
    service's own client, and clients made from route secrets closed with ``stack``."""
    return S3DestinationFactory(aws.s3, secrets, aws_session(settings.region), stack, CLIENT_CONFIG)
