"""The files both tools copy: made once per run, in a source bucket in moto and
(for the raw limit) on local disk.

The large source is uploaded in 64 MiB parts and then copied once server-side,
so it is a single-part object with an MD5 ETag, in a bucket configured like the
pick-up: the same kind of object as the copy of it that each Conveyor leg puts
into the pick-up (``CopyObject``), so both tools read the same kind of object.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

MiB = 1024 * 1024
GiB = 1024 * MiB

#: The upload tool's own settings, not Conveyor's: they only shape the source.
_UPLOAD = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB)
#: Without SDK checksums on the source: moto's ``CopyObject`` keeps a multipart
#: upload's composite CRC32 but serves it as a full-object one, so every GET of
#: the copy fails botocore's checksum validation (real S3 recomputes it).
_NO_CHECKSUMS = Config(request_checksum_calculation="when_required")


@dataclass(frozen=True)
class Sources:
    bucket: str
    large_key: str
    large_size: int
    #: The same bytes on local disk (in the page cache), for OpenSSH's ``sftp``.
    large_local: Path
    small_prefix: str
    small_files: tuple[bytes, ...]


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for start in range(0, size, 8 * MiB):
            out.write(os.urandom(min(8 * MiB, size - start)))


def put_objects(s3: Any, bucket: str, keys_and_bodies: list[tuple[str, bytes]]) -> None:
    """Upload small objects 16 at a time, as a client's uploader would."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [
            pool.submit(s3.put_object, Bucket=bucket, Key=key, Body=body)
            for key, body in keys_and_bodies
        ]:
            future.result()


def small_keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}f{index:04d}.bin" for index in range(count)]


def create_sources(
    s3: Any, state: Path, *, large_size: int, small_count: int, small_size: int
) -> Sources:
    bucket = f"bench-source-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket)
    # Configured like the pick-up (deploy/conveyor.yaml): moto copies and serves
    # objects of versioned, SSE-S3 buckets more slowly than those of plain ones.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    local = state / "large.bin"
    large_key = f"{large_size // MiB}MiB.bin"
    if large_size:
        write_random_file(local, large_size)
        staging = f"upload/{large_key}"
        uploader = boto3.client("s3", config=_NO_CHECKSUMS)
        uploader.upload_file(str(local), bucket, staging, Config=_UPLOAD)
        s3.copy_object(Bucket=bucket, Key=large_key, CopySource={"Bucket": bucket, "Key": staging})
        s3.delete_object(Bucket=bucket, Key=staging)
    small = tuple(os.urandom(small_size) for _ in range(small_count))
    prefix = "small/"
    put_objects(s3, bucket, list(zip(small_keys(prefix, small_count), small, strict=True)))
    return Sources(bucket, large_key, large_size, local, prefix, small)


def copy_into(s3: Any, sources: Sources, bucket: str, key: str) -> None:
    """The large source into ``bucket``/``key``, server-side: how a leg's file
    arrives in the pick-up without the harness streaming it again."""
    s3.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": sources.bucket, "Key": sources.large_key}
    )


def assemble_into(s3: Any, sources: Sources, bucket: str, key: str, copies: int) -> int:
    """``copies`` times the large source as one multipart object (``UploadPartCopy``):
    a file larger than moto could take in comfortably as an upload. Returns its size."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number in range(1, copies + 1):
        part = s3.upload_part_copy(
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            PartNumber=number,
            CopySource={"Bucket": sources.bucket, "Key": sources.large_key},
        )
        parts.append({"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return copies * sources.large_size


def purge(s3: Any, bucket: str, key: str) -> None:
    """Every version of ``key``: the pick-up is versioned, so a delivered file's
    bytes would otherwise stay in moto's memory for the rest of the run."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    for version in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
        if version["Key"] == key:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
