"""A picked-up file's content identity: the ledger's sort key (D4).

The identity depends on the bytes only, so the same content is one file
however it was uploaded (one ``PutObject``, a multipart upload of any part
size, with or without checksums):

* ``sha256:<hex>``: the SHA-256 of the whole object. Where S3 keeps a
  full-object SHA-256 (a single-part upload sent with
  ``ChecksumAlgorithm=SHA256``; AWS keeps full-object checksums of multipart
  uploads only for the CRCs, moto also for SHA-256 with
  ``ChecksumType=FULL_OBJECT``) it is read from ``HeadObject``; otherwise the
  scanner reads the object once, pinned to the version it stat'ed, as a
  stream of 1 MiB chunks (bounded memory), and hashes it.
* ``empty:<key>``: a zero-byte file has no content to tell it apart, so its
  name is its identity: each empty file is delivered once.

**What it costs:** where S3 keeps no full-object SHA-256, which is most
uploads (boto3 sends CRC-32 by default, a multipart upload has a composite
checksum or none), recording a file reads it once more: one ``GetObject``
and its size in bytes transferred inside the region, before it is
dispatched (≈ 1 s per 100-300 MB), once per upload (the scanner remembers
the identity per key and version). SHA-256 is used everywhere because it is
in the standard library and S3 can keep it; a CRC-64/NVME (which S3 keeps by
default for uploads that send no checksum) would need ``awscrt`` to compute.
A composite checksum (``...-N``, or any checksum of a multipart upload not
marked ``FULL_OBJECT``) is never used: it depends on the part size.

**Entries recorded before this rule** are keyed by the older identity
(``legacy_content_id``: the MD5 ETag, a stored checksum, or
``mpu:<etag>:<size>``). The scanner looks an arrival up under its legacy
identity too, so a file delivered before is still recognised.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any


def etag_of(obj: Mapping[str, Any]) -> str:
    """An S3 response's ETag without its quotes ("" when absent)."""
    return str(obj.get("ETag", "")).strip('"')


def b64_to_hex(value: str) -> str | None:
    with contextlib.suppress(binascii.Error, ValueError):
        return base64.b64decode(value, validate=True).hex()
    return None


def _full_object_checksum(head: Mapping[str, Any], field: str) -> str | None:
    """A checksum S3 stored for the whole object, as hex; None for a composite one.

    ``ChecksumType`` says which it is; where it is absent (older objects, and
    moto), only a single-part upload's checksum covers the whole object: moto
    returns a multipart upload's composite SHA-256 without ``-N`` or a type.
    """
    value = head.get(field)
    if not value or "-" in value:
        return None
    kind = head.get("ChecksumType")
    if kind is None and "-" in etag_of(head):
        return None
    if kind not in (None, "FULL_OBJECT"):
        return None
    return b64_to_hex(value)


def vouched_hashes(head: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes S3 vouches for, lower-case hex: the ETag is an MD5 only
    for a single-part upload not encrypted with SSE-KMS; a SHA-256 checksum
    only if it covers the whole object."""
    hashes: dict[str, str] = {}
    etag = etag_of(head)
    if (
        etag
        and "-" not in etag
        and not str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
    ):
        hashes["md5"] = etag
    if sha256 := _full_object_checksum(head, "ChecksumSHA256"):
        hashes["sha256"] = sha256
    return hashes


def stored_content_id(head: Mapping[str, Any], key: str) -> str | None:
    """The identity when ``HeadObject`` alone tells it (an empty object, or a
    full-object SHA-256 S3 kept); None when the object must be read."""
    if int(head.get("ContentLength", 0)) == 0:
        return f"empty:{key}"
    if sha256 := _full_object_checksum(head, "ChecksumSHA256"):
        return f"sha256:{sha256}"
    return None


async def content_id(
    head: Mapping[str, Any],
    key: str,
    read: Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]],
) -> str:
    """Identity of the object that ``head`` (a ``HeadObject`` response
    requested with ``ChecksumMode=ENABLED``) describes. When S3 keeps no
    full-object SHA-256, ``read()`` must stream exactly that version (so a
    newer upload of the same key cannot mix in); its errors propagate."""
    if known := stored_content_id(head, key):
        return known
    async with read() as chunks:
        return await sha256_of(chunks)


async def sha256_of(chunks: AsyncIterator[bytes]) -> str:
    """The identity of the bytes ``chunks`` yields: ``sha256:<hex>``."""
    digest = hashlib.sha256()
    async for chunk in chunks:
        if len(chunk) > 256 * 1024:
            # hashlib releases the GIL on large chunks: a thread keeps the loop free.
            await asyncio.to_thread(digest.update, chunk)
        else:
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def legacy_content_id(head: Mapping[str, Any], key: str) -> str:
    """The identity entries were keyed by before ``content_id``: the MD5 ETag of
    a single-part upload, else a full-object checksum S3 stored, else the
    multipart ETag with the size. Only for finding those older entries."""
    size = int(head.get("ContentLength", 0))
    if size == 0:
        return f"empty:{key}"
    hashes = vouched_hashes(head)
    if "md5" in hashes:
        return hashes["md5"]
    if "sha256" in hashes:
        return f"sha256:{hashes['sha256']}"
    if sha1 := _full_object_checksum(head, "ChecksumSHA1"):
        return f"sha1:{sha1}"
    crc = head.get("ChecksumCRC64NVME")
    if crc and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        return f"crc64nvme:{crc}:{size}"
    return f"mpu:{etag_of(head)}:{size}"
