"""GCS (gcp-storage-emulator) passes the destination contract.

The peer reads through the emulator's own JSON API with httpx, not through
``GcsStore``. GCS has no temporary objects: an unfinished resumable upload is
a session, never an object, so ``names()`` lists finished objects only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import httpx
import pytest

from conveyor_cli.localstack import servers
from conveyor_shared.backends.gcs import CHUNK_QUANTUM, GcsClient, GcsStore
from conveyor_shared.errors import NotFound
from tests.contract.suite import DestinationContract


class GcsPeer:
    def __init__(self, http: httpx.AsyncClient, bucket: str, prefix: str) -> None:
        self._http, self._bucket, self._prefix = http, bucket, prefix

    async def read(self, path: str) -> bytes:
        name = quote(self._prefix + path, safe="")
        response = await self._http.get(
            f"/storage/v1/b/{self._bucket}/o/{name}", params={"alt": "media"}
        )
        if response.status_code == 404:
            raise NotFound(path)
        response.raise_for_status()
        return response.content

    async def names(self) -> list[str]:
        response = await self._http.get(
            f"/storage/v1/b/{self._bucket}/o", params={"prefix": self._prefix}
        )
        response.raise_for_status()
        items = response.json().get("items") or []
        return sorted(item["name"][len(self._prefix) :] for item in items)


@pytest.fixture
async def emulator_http(gcs: servers.GcsEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gcs.host, timeout=60) as http:
        yield http


@pytest.fixture
async def gcs_bucket(emulator_http: httpx.AsyncClient, unique: str) -> str:
    bucket = f"dst-{unique}"
    created = await emulator_http.post(
        "/storage/v1/b", params={"project": "conveyor"}, json={"name": bucket}
    )
    created.raise_for_status()
    return bucket


class TestGcsContract(DestinationContract):
    @pytest.fixture
    async def destination(
        self, gcs: servers.GcsEmulator, gcs_bucket: str
    ) -> AsyncIterator[GcsStore]:
        async with aiohttp.ClientSession() as session:
            # The smallest chunk GCS allows, so every multi-chunk path runs. It also puts
            # the suite's mid-upload stat on a chunk boundary: while a chunk streams, the
            # single-threaded emulator serves no one else (docs/transfer-gcs.md).
            yield GcsStore(
                GcsClient(session, gcs.host, None), gcs_bucket, "client/", chunk_size=CHUNK_QUANTUM
            )

    @pytest.fixture
    def peer(self, emulator_http: httpx.AsyncClient, gcs_bucket: str) -> GcsPeer:
        return GcsPeer(emulator_http, gcs_bucket, "client/")
