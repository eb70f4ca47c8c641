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


def _hex(b64: str) -> str | None:
    with contextlib.suppress(binascii.Error, ValueError):
        return base64.b64decode(b64, validate=True).hex()
    return None


def content_id(head: Mapping[str, Any], key: str) -> str:
    """Identity of the object described by a ``HeadObject`` response
    (requested with ``ChecksumMode=ENABLED``)."""
    size = int(head.get("ContentLength", 0))
    if size == 0:
        return f"empty:{key}"
    etag = str(head.get("ETag", "")).strip('"')
    kms = str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
    if etag and "-" not in etag and not kms:
        return etag
    if head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        for field, name in (("ChecksumSHA256", "sha256"), ("ChecksumSHA1", "sha1")):
            value = head.get(field)
            if value and (hexed := _hex(value)):
                return f"{name}:{hexed}"
        if crc := head.get("ChecksumCRC64NVME"):
            return f"crc64nvme:{crc}:{size}"
    return f"mpu:{etag}:{size}"
