"""Typed views of ledger items. Attribute names in DynamoDB are camelCase and
include the names operators already know: ``timestamp``, ``status``,
``filePath``, ``fileName``, ``sendAttempts``, ``active`` (D4)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from conveyor_shared.messaging.models import S3ObjectRef, TransferRequested


class FileStatus(StrEnum):
    PROCESSING = "processing"
    SUCCESS = "success"
    FAIL = "fail"


class JobStatus(StrEnum):
    #: Its batch is open or closing: files join it and are dispatched at once.
    FORMING = "forming"
    #: Its files are all recorded and its start mail is out; ``total`` is fixed.
    RUNNING = "running"
    #: Every file is ``success`` or ``fail``.
    FINISHED = "finished"


class _Item(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_attributes(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Attempt(_Item):
    """One try at delivering a file, kept in its entry's history."""

    at: str
    #: ``failed`` for an attempt to be retried, else the status it settled with.
    outcome: str
    error: str | None = None
    verified_by: str | None = None


class HeldDuplicate(_Item):
    """A pick-up upload of the same content, kept until this file settles."""

    key: str
    version: str


class FileEntry(_Item):
    """One file of one client, keyed by its content identity."""

    client_id: str
    content_id: str
    #: When the status last changed (ISO 8601, UTC).
    timestamp: str
    status: FileStatus
    file_path: str
    file_name: str
    send_attempts: int = 0
    active: bool = True
    job_id: str
    route_name: str
    size: int | None = None
    source_bucket: str
    source_key: str
    source_version: str | None = None
    source_etag: str | None = None
    #: Hashes S3 vouched for when the scanner read the upload (its MD5 ETag).
    source_hashes: dict[str, str] | None = None
    #: Present only while ``active``: feeds the sparse ``active`` index (D9).
    active_since: str | None = None
    lease_owner: str | None = None
    lease_expires: int | None = None
    last_error: str | None = None
    error_kind: str | None = None
    delivered_to: str | None = None
    delivered_at: str | None = None
    bytes_done: int | None = None
    progress_at: str | None = None
    #: How the delivered copy was checked: ``md5:destination``, ``sha256:stream``, ``size``.
    verified_by: str | None = None
    #: Every attempt, oldest first, across resends too.
    attempts: list[Attempt] | None = None
    #: Uploads of the same content that arrived while this one was in flight;
    #: the scanner decides each once this one settles.
    held_duplicates: list[HeldDuplicate] | None = None

    @property
    def settled(self) -> bool:
        return self.status in (FileStatus.SUCCESS, FileStatus.FAIL)

    def transfer_request(self) -> TransferRequested:
        """The ``transfer.requested`` command that sends this file."""
        return TransferRequested(
            client_id=self.client_id,
            content_id=self.content_id,
            job_id=self.job_id,
            file_name=self.file_name,
            source=S3ObjectRef(
                bucket=self.source_bucket,
                key=self.source_key,
                size=self.size,
                etag=self.source_etag,
                version=self.source_version,
            ),
        )


class Job(_Item):
    """Files picked up together for one client."""

    job_id: str
    client_id: str
    route_name: str
    status: JobStatus
    started_at: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    finished_at: str | None = None
    started_published_at: str | None = None
    finished_published_at: str | None = None
    #: Whether files joined the job through a client's open batch (arrivals),
    #: rather than being recorded in it together (a ``.done`` file, a scan).
    batched: bool = False
    #: Files reserved in the job's batch when it closed; of those, the ones
    #: recorded and sent, and the ones given back (not new after all).
    reserved: int | None = None
    dispatched: int = 0
    given_back: int = 0
    closed_at: str | None = None

    @property
    def settled_files(self) -> int:
        return self.succeeded + self.failed

    @property
    def complete(self) -> bool:
        return self.status is not JobStatus.FORMING and self.succeeded + self.failed >= self.total
