"""S3 (moto in server mode) passes the destination and the source contracts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioboto3
import pytest

from conveyor_cli.localstack import servers
from conveyor_shared.aws import CLIENT_CONFIG
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.errors import NotFound
from tests.contract.source_suite import DroppingProxy, SourceContract
from tests.contract.suite import DestinationContract


class S3Peer:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client, self._bucket, self._prefix = client, bucket, prefix

    async def read(self, path: str) -> bytes:
        try:
            response = await self._client.get_object(Bucket=self._bucket, Key=self._prefix + path)
        except self._client.exceptions.NoSuchKey:
            raise NotFound(path) from None
        async with response["Body"] as body:
            return bytes(await body.read())

    async def names(self) -> list[str]:
        listed = await self._client.list_objects_v2(Bucket=self._bucket, Prefix=self._prefix)
        uploads = await self._client.list_multipart_uploads(Bucket=self._bucket)
        pending = [u["Key"] for u in uploads.get("Uploads", [])]
        keys = [o["Key"] for o in listed.get("Contents", [])] + pending
        return sorted(k[len(self._prefix) :] for k in keys)


class TestS3Contract(DestinationContract):
    @pytest.fixture
    async def destination(self, aws: dict[str, Any], unique: str) -> S3Store:
        await aws["s3"].create_bucket(Bucket=f"dst-{unique}")
        # The smallest part S3 allows, so the contract's 6 MiB file takes the multipart path.
        # "/client" is the folder "client/", as a route may write it.
        return S3Store(aws["s3"], f"dst-{unique}", "/client", part_size=1024 * 1024 * 5)

    @pytest.fixture
    def peer(self, aws: dict[str, Any], unique: str) -> S3Peer:
        return S3Peer(aws["s3"], f"dst-{unique}", "client/")


@dataclass
class S3SourceUnderTest:
    source: S3Store
    client: Any
    cut: Callable[[], Awaitable[None]] | None
    #: A single-part upload's ETag is its MD5, which ``stat`` reports.
    hashes: frozenset[str] = frozenset({"md5"})

    async def put(self, path: str, data: bytes) -> None:
        await self.client.put_object(
            Bucket=self.source.bucket, Key=self.source.key(path), Body=data
        )


class TestS3Source(SourceContract):
    @pytest.fixture
    async def source_under_test(
        self, aws: dict[str, Any], moto: servers.Moto, unique: str
    ) -> AsyncIterator[S3SourceUnderTest]:
        """A store in a folder of a fresh bucket, reached through a proxy to moto."""
        await aws["s3"].create_bucket(Bucket=f"src-{unique}")
        proxy = DroppingProxy(moto.port)
        async with proxy:
            session = aioboto3.Session(region_name="us-east-1")
            async with session.client(
                "s3", endpoint_url=f"http://127.0.0.1:{proxy.port}", config=CLIENT_CONFIG
            ) as client:
                yield S3SourceUnderTest(
                    S3Store(client, f"src-{unique}", "pickup/"), aws["s3"], proxy.drop
                )
