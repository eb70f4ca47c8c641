"""Every message Conveyor sends or receives, as a versioned pydantic model.

``kind`` names the message and ``v`` its schema version. A consumer that meets
a version it does not know treats the message as malformed (it ends in the
dead-letter queue for an operator) rather than guessing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class S3ObjectRef(_Message):
    """One object in S3 as it was when Conveyor picked it up."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    #: The object's version: S3 VersionId, else its LastModified time. Tells a
    #: redelivered event for the same upload from a new upload of the same key.
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


# --- Commands: put on one service's queue -------------------------------------------------


class TransferRequested(_Message):
    """Deliver one recorded file to its route's destination."""

    kind: Literal["transfer.requested"] = "transfer.requested"
    v: Literal[1] = 1
    client_id: str
    content_id: str
    job_id: str
    file_name: str
    source: S3ObjectRef


class ScanRequested(_Message):
    """Run a scheduled scan of every pick-up (sent by the schedule)."""

    kind: Literal["scan.requested"] = "scan.requested"
    v: Literal[1] = 1
    reason: str = "schedule"


class BatchDue(_Message):
    """Look at a client's open batch: close it when its rules say so, then start
    its job once every file reserved in it is recorded (D8). Sent to the
    scanner queue, delayed by the batch's quiet period, when a batch opens."""

    kind: Literal["batch.due"] = "batch.due"
    v: Literal[1] = 1
    client_id: str
    job_id: str
    #: Set on the messages one handler sends on, so they keep its turn.
    turn: str | None = None
    #: Files of the job marked recorded at the last look, and since when.
    marked: int | None = None
    marked_at_ms: int = 0


class PickupRecheck(_Message):
    """Decide again one pick-up file that was held back as a duplicate of a
    file then in flight (sent once that file settled): remove it if the
    original was delivered, send it if the original failed."""

    kind: Literal["pickup.recheck"] = "pickup.recheck"
    v: Literal[1] = 1
    bucket: str
    key: str
    #: The held upload's S3 VersionId (or LastModified, unversioned); a newer
    #: upload of the same key is a file of its own and is left alone.
    version: str


# --- Events: published on the SNS topic ---------------------------------------------------


class JobStarted(_Message):
    kind: Literal["job.started"] = "job.started"
    v: Literal[1] = 1
    job_id: str
    client_id: str
    route_name: str
    files: int
    at: datetime = Field(default_factory=utcnow)


class JobFinished(_Message):
    kind: Literal["job.finished"] = "job.finished"
    v: Literal[1] = 1
    job_id: str
    client_id: str
    route_name: str
    succeeded: int
    failed: int
    at: datetime = Field(default_factory=utcnow)


class FileFailed(_Message):
    kind: Literal["file.failed"] = "file.failed"
    v: Literal[1] = 1
    job_id: str
    client_id: str
    content_id: str
    file_name: str
    attempts: int
    error: str
    at: datetime = Field(default_factory=utcnow)


class FileReceived(_Message):
    """A provider file copied into S3 (S6). ``audience`` says who it is for: an
    automated ``process`` (which consumes this event itself) or the
    ``care_team`` (who hear of it on Slack)."""

    kind: Literal["file.received"] = "file.received"
    v: Literal[1] = 1
    #: The provider source's name in the configuration.
    source: str
    #: The client or partner (health plan) the file came from.
    partner_id: str
    file_name: str
    s3_uri: str
    size: int
    #: The content's SHA-256, and the version's id under its remote path
    #: (``<first seen>--<sha256 prefix>``).
    sha256: str | None = None
    version: str | None = None
    audience: Literal["care_team", "process"]
    at: datetime = Field(default_factory=utcnow)


Event = Annotated[JobStarted | JobFinished | FileFailed | FileReceived, Field(discriminator="kind")]
Command = Annotated[
    TransferRequested | ScanRequested | PickupRecheck | BatchDue, Field(discriminator="kind")
]


# --- What S3 sends ------------------------------------------------------------------------


class S3ObjectCreated(_Message):
    """One ``ObjectCreated:*`` record of an S3 event notification, key decoded."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None
    event_name: str
    event_time: datetime | None = None


class S3Notification(_Message):
    records: list[S3ObjectCreated]


class S3TestEvent(_Message):
    """Sent once when a bucket's notification configuration is set; nothing to do."""

    bucket: str | None = None
