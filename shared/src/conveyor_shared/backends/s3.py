"""S3 as a Source and a Destination.

* Reads stream in 1 MiB chunks.
* Writes below one part size are a single ``PutObject`` with ``Content-MD5``;
  larger ones a multipart upload with up to four parts in flight, each with its
  ``Content-MD5``, verified at the end against the multipart ETag S3 computes.
  Either way the object appears only on completion: S3 writes are atomic.
* ``copy_from`` copies server-side (``CopyObject``, ``UploadPartCopy`` above
  5 GiB) when the source is S3 reached with the same credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientError as HttpClientError
from botocore.exceptions import BotoCoreError, ClientError

from conveyor_shared.errors import (
    ConveyorError,
    IntegrityError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.identity import etag_of, vouched_hashes
from conveyor_shared.transfer.protocols import Features, ObjectInfo, Source

MiB = 1024 * 1024
_COPY_OBJECT_LIMIT = 5 * 1024 * MiB
_COPY_PART = 512 * MiB
_MAX_PARTS = 10_000

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PERMANENT = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
    "KMS.DisabledException",
}


def translate(exc: BaseException, what: str) -> ConveyorError:
    """Map a botocore/aiohttp failure to Conveyor's error hierarchy."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return NotFound(f"{what}: not found")
        if code == "NoSuchBucket":
            return Misconfigured(f"{what}: bucket does not exist")
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


def object_version(head: dict[str, Any]) -> str:
    """S3's VersionId where versioning is on, else the upload's LastModified time."""
    return str(head.get("VersionId") or head["LastModified"].isoformat())


def info_from_head(path: str, head: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        path=path,
        size=int(head["ContentLength"]),
        modified=head.get("LastModified"),
        hashes=vouched_hashes(head),
        version=object_version(head),
    )


class S3Store:
    """One bucket (and key prefix) in S3, reached through ``client``.

    ``account`` names the credentials behind ``client``; two stores with the
    same ``account`` can copy server-side.
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
        self.prefix = prefix
        self.account = account
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self._put_args: dict[str, Any] = {}
        if kms_key_id:
            self._put_args |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        if bucket_owner_full_control:
            self._put_args["ACL"] = "bucket-owner-full-control"
        kms = bool(kms_key_id)
        self.features = Features(
            server_side_copy=True, native_hashes=frozenset() if kms else frozenset({"md5"})
        )

    def key(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}"

    async def head(self, path: str) -> dict[str, Any]:
        """The raw ``HeadObject`` response, checksums included."""
        with _errors(f"stat {self.describe(path)}"):
            head: dict[str, Any] = await self.client.head_object(
                Bucket=self.bucket, Key=self.key(path), ChecksumMode="ENABLED"
            )
        return head

    async def stat(self, path: str) -> ObjectInfo:
        return info_from_head(path, await self.head(path))

    @contextlib.asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        what = f"read {self.describe(path)}"
        with _errors(what):
            response = await self.client.get_object(Bucket=self.bucket, Key=self.key(path))
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
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors(f"list {self.describe(prefix)}"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for item in page.get("Contents", []):
                    etag = etag_of(item)
                    yield ObjectInfo(
                        path=item["Key"][len(self.prefix) :],
                        size=int(item["Size"]),
                        modified=item.get("LastModified"),
                        hashes={"md5": etag} if etag and "-" not in etag else {},
                    )

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing object is not an error."""
        with _errors(f"delete {self.describe(path)}"):
            await self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    async def begin(self, path: str, size: int | None) -> _S3Upload:
        return _S3Upload(self, path, size)

    async def copy_from(self, source: Source, info: ObjectInfo, path: str) -> ObjectInfo | None:
        if not isinstance(source, S3Store) or source.account != self.account:
            return None
        copy_source = {"Bucket": source.bucket, "Key": source.key(info.path)}
        what = f"copy {source.describe(info.path)} to {self.describe(path)}"
        with _errors(what):
            if info.size is not None and info.size <= _COPY_OBJECT_LIMIT:
                await self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self.key(path),
                    CopySource=copy_source,
                    **self._put_args,
                )
            else:
                await self._multipart_copy(copy_source, info, path)
        return await self.stat(path)

    async def _multipart_copy(
        self, copy_source: dict[str, str], info: ObjectInfo, path: str
    ) -> None:
        size = info.size if info.size is not None else (await self.stat(info.path)).size or 0
        created = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key(path), **self._put_args
        )
        upload_id = created["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, _COPY_PART), start=1):
                end = min(start + _COPY_PART, size) - 1
                part = await self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self.key(path),
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]})
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key(path),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key(path), UploadId=upload_id
                )
            raise


class _S3Upload:
    """Buffers up to one part; a single PutObject if the file fits in it."""

    def __init__(self, store: S3Store, path: str, size: int | None) -> None:
        self._store = store
        self._key = store.key(path)
        self._path = path
        self._what = f"upload {store.describe(path)}"
        self._part_size = store.part_size
        if size is not None:
            # S3 allows 10,000 parts: grow the part for very large files.
            self._part_size = max(self._part_size, -(-size // _MAX_PARTS))
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
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
        if self._upload_id is None:
            with _errors(self._what):
                created = await self._store.client.create_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, **self._store._put_args
                )
            self._upload_id = created["UploadId"]
        for task in [t for t in self._tasks if t.done()]:
            task.result()  # surface a failed part now rather than at commit
        await self._slots.acquire()
        number = len(self._parts) + len(self._tasks) + 1
        task = asyncio.create_task(self._upload_part(number, data))
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

    async def commit(self) -> ObjectInfo:
        if self._upload_id is None:
            return await self._put_single()
        if self._buffered:
            await self._start_part(b"".join(self._buffer))
            self._buffer, self._buffered = [], 0
        await asyncio.gather(*self._tasks)
        numbers = sorted(self._parts)
        expected = (
            hashlib.md5(  # noqa: S324 - S3's multipart ETag, not security
                b"".join(self._parts[n][1] for n in numbers)
            ).hexdigest()
            + f"-{len(numbers)}"
        )
        with _errors(self._what):
            done = await self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": self._parts[n][0]} for n in numbers]
                },
            )
        etag = etag_of(done)
        if "kms" not in self._store._put_args.get("ServerSideEncryption", "") and etag != expected:
            raise IntegrityError(f"{self._what}: multipart ETag {etag} != expected {expected}")
        info = await self._store.stat(self._path)
        return ObjectInfo(info.path, info.size, info.modified, {}, info.version)

    async def _put_single(self) -> ObjectInfo:
        data = b"".join(self._buffer)
        digest = hashlib.md5(data).digest()  # noqa: S324
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

    async def close(self) -> None:
        """Clients are closed with the service's exit stack."""
