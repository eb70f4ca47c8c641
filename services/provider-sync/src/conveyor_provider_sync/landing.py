"""Where copies land (S3, S4): staged under ``conveyor-incoming/`` until
complete and hashed, then copied server-side to an immutable key

    <landing>/<source id>/<remote path>/<first seen UTC>--<sha256 prefix>/<name>

that no later version can overwrite: a new version has a new first-seen time
and (being different content) a new hash."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.config.sources import STAGING_PREFIX, ProviderSource
from conveyor_shared.errors import TransientError
from conveyor_shared.ledger.dynamo import parse_iso
from conveyor_shared.transfer.protocols import ObjectInfo, Source

SHA_PREFIX = 16


def version_id(first_seen: str, sha256: str) -> str:
    return f"{parse_iso(first_seen):%Y%m%dT%H%M%SZ}--{sha256[:SHA_PREFIX]}"


def final_key(source: ProviderSource, path: str, first_seen: str, sha256: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"{source.landing.prefix}{source.id}/{path}/{version_id(first_seen, sha256)}/{name}"


@dataclass(frozen=True)
class Staged:
    key: str
    size: int
    sha256: str


async def stage(
    store: S3Store, source: ProviderSource, remote: Source, path: str, size: int | None
) -> Staged:
    """Stream ``path`` into a multipart upload under the staging prefix,
    hashing as it goes; no local disk, memory bounded by the store's parts
    in flight. On any failure the upload is aborted and nothing is left."""
    key = f"{STAGING_PREFIX}{source.id}/{uuid.uuid4().hex}"
    upload = await store.begin(key, size)
    digest = hashlib.sha256()
    copied = 0
    try:
        async with remote.open(path) as chunks:
            async for chunk in chunks:
                digest.update(chunk)
                copied += len(chunk)
                await upload.write(chunk)
        await upload.commit()
    except BaseException:
        await upload.abort()
        raise
    return Staged(key, copied, digest.hexdigest())


async def promote(store: S3Store, staged: Staged, key: str) -> None:
    """Copy the staged object to its final key, server-side."""
    copied = await store.copy_from(store, ObjectInfo(staged.key, staged.size), key)
    if copied is None or copied.size != staged.size:
        raise TransientError(f"copy of {store.describe(staged.key)} to {key} came out wrong")
