"""S3 (moto in server mode) passes the destination contract."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.errors import NotFound
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
