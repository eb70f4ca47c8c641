"""One bucket and folder in GCS: stat, and the start of an upload."""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from yarl import URL

from conveyor_shared.backends.folders import folder
from conveyor_shared.backends.gcs.client import (
    CHUNK_QUANTUM,
    GcsClient,
    MiB,
    info_from_resource,
)
from conveyor_shared.backends.gcs.errors import (
    BUCKET,
)
from conveyor_shared.backends.gcs.upload import GcsUpload
from conveyor_shared.errors import (
    Misconfigured,
    TransientError,
)
from conveyor_shared.transfer.protocols import Features, ObjectInfo


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
