"""A picked-up file's content identity: the ledger's sort key (D4).

In order of preference:

1. ``<md5>``: the ETag of a single-part upload, which is the MD5 of the
   content (not for SSE-KMS objects, whose ETag is not an MD5).
2. ``sha256:<hex>`` / ``sha1:<hex>`` / ``crc64nvme:<b64>:<size>``: a
   full-object checksum S3 stored with the object (current AWS SDKs add a
   CRC-64/NVME one to every upload by default). CRC-32 variants are too short
   to tell a client's files apart and are not used.
3. ``mpu:<etag>:<size>`` (fallback): a multipart ETag is the MD5 of the part
   MD5s, so it is the same for the same bytes uploaded with the same part size
   (the same tool, the same settings) but differs otherwise. The same content
   uploaded differently is then treated as new and sent again; it is never
   mistaken for a different file, so nothing is wrongly skipped.
4. ``empty:<key>``: a zero-byte file has no content to tell it apart, so its
   name is its identity: each empty file is delivered once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from typing import Any


def etag_of(obj: Mapping[str, Any]) -> str:
    """An S3 response's ETag without its quotes ("" when absent)."""
    return str(obj.get("ETag", "")).strip('"')


def b64_to_hex(value: str) -> str | None:
    with contextlib.suppress(binascii.Error, ValueError):
        return base64.b64decode(value, validate=True).hex()
    return None


def _full_object_checksum(head: Mapping[str, Any], field: str) -> str | None:
    """A checksum S3 stored for the whole object, as hex; None for a composite one."""
    value = head.get(field)
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
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


def content_id(head: Mapping[str, Any], key: str) -> str:
    """Identity of the object described by a ``HeadObject`` response
    (requested with ``ChecksumMode=ENABLED``)."""
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
