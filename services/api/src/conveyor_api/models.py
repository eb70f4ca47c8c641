"""The API's response and request bodies (camelCase on the wire, like the ledger)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from conveyor_shared.ledger.models import Attempt, FileEntry, FileStatus, Job
from conveyor_shared.ledger.received import ReceivedVersion


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FileSummary(_Body):
    client_id: str
    content_id: str
    file_name: str
    status: FileStatus
    #: When the status last changed (ISO 8601, UTC).
    timestamp: str
    job_id: str
    route_name: str
    size: int | None = None
    send_attempts: int
    last_error: str | None = None
    delivered_to: str | None = None

    @classmethod
    def of(cls, entry: FileEntry) -> FileSummary:
        return cls.model_validate(entry.model_dump())


class FilePage(_Body):
    items: list[FileSummary]
    #: Pass as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class Progress(_Body):
    bytes_done: int
    size: int | None = None
    percent: float | None = None
    at: str | None = None


class ActionRecord(_Body):
    """One operator action: who asked, when, why, and what came of it."""

    action_id: str
    kind: str
    subject: str
    at: str
    by: str
    role: str
    reason: str | None = None
    outcome: str


class FileDetail(FileSummary):
    source_uri: str
    source_version: str | None = None
    source_etag: str | None = None
    destination_uri: str | None = None
    delivered_at: str | None = None
    verified_by: str | None = None
    error_kind: str | None = None
    active: bool
    #: Hashes S3 vouched for when the upload was read (e.g. its MD5 ETag).
    source_hashes: dict[str, str] | None = None
    #: Only while a transfer is in flight.
    progress: Progress | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)


class JobSummary(_Body):
    job_id: str
    client_id: str
    route_name: str
    status: str
    started_at: str
    finished_at: str | None = None
    total: int
    succeeded: int
    failed: int

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls.model_validate(job.model_dump())


class JobDetail(JobSummary):
    files: list[FileSummary]


class QueueDepth(_Body):
    name: str
    visible: int
    in_flight: int
    delayed: int
    dead_letter_queue: str | None = None
    dead_letters: int | None = None


class RouteHealth(_Body):
    client_id: str
    route_name: str
    destination_type: str
    last_delivery_at: str | None = None
    #: Age in seconds of the oldest file still on its way, if any.
    oldest_unprocessed_seconds: float | None = None
    failed_last_24h: int
    dead_letters: int | None = None


class ResendRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)


class ResendByFilter(_Body):
    client: str | None = Field(default=None, min_length=1, max_length=100)
    status: FileStatus | None = None
    since: str | None = None
    until: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str | None = Field(default=None, max_length=500)
    #: Only count what would be resent.
    dry_run: bool = True


class ResendResult(_Body):
    action_id: str | None = None
    dry_run: bool = False
    #: Files that matched.
    matched: int
    #: Files made ``processing`` again and dispatched, each in a new job.
    resent: int
    jobs: list[str] = Field(default_factory=list)
    #: Why the others were left alone, one line per file.
    skipped: list[str] = Field(default_factory=list)


class RedriveRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)
    #: A transfer queue's dead letters are failed by its dead-letter consumer at
    #: once; files it failed this many hours back are resent too.
    since_hours: int = Field(default=24, ge=1, le=14 * 24)


class ScanRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)


class ActionAccepted(_Body):
    action_id: str
    outcome: str


class DeadLetter(_Body):
    message_id: str
    kind: str | None = None
    receive_count: int | None = None
    sent_at: str | None = None
    #: The first 1000 characters of the body.
    body: str


class DeadLetters(_Body):
    queue: str
    dead_letter_queue: str
    depth: int
    messages: list[DeadLetter]


class RedriveResult(_Body):
    action_id: str
    #: Messages sent back to the queue as they were.
    moved: int
    #: Files resent as new jobs: their transfer dead-lettered and they were failed.
    resent: int
    unreadable_moved: int
    jobs: list[str] = Field(default_factory=list)


class ConnectionCheck(_Body):
    ok: bool
    status: str
    message: str
    hint: str | None = None


class Health(_Body):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ReceivedFile(_Body):
    """One version of one partner's file, as provider sync stored it (S3)."""

    source: str
    source_name: str | None = None
    #: The remote path below the source's directory.
    path: str
    file_name: str
    sha256: str
    size: int
    #: The server's time of the file (UTC).
    modified: str
    first_seen: str
    stored_at: str
    #: Where the version is kept: an immutable S3 key.
    uri: str
    times_seen: int
    last_seen_at: str | None = None
    handed_off_at: str | None = None

    @classmethod
    def of(cls, version: ReceivedVersion, source_name: str | None) -> ReceivedFile:
        return cls.model_validate(
            {
                **version.model_dump(),
                "source_name": source_name,
                "file_name": version.path.rsplit("/", 1)[-1],
            }
        )


class ReceivedPage(_Body):
    items: list[ReceivedFile]
    #: Pass as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class SourceHealth(_Body):
    source_id: str
    name: str
    protocol: str
    audience: str
    #: When a poll last listed the server and recorded what it saw.
    last_good_poll_at: str | None = None
    #: Age in seconds of the oldest file seen on the server and not copied yet.
    oldest_unprocessed_seconds: float | None = None
    #: Files whose copy was asked for in the last 24 h and is overdue (failing).
    failed_last_24h: int
    #: Fetches in the dead-letter queue (one queue for every source).
    dead_letters: int | None = None


class SourceRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)


class SourceCheck(_Body):
    """What ``source check`` found: the files listed, or exactly where it failed."""

    source_id: str
    ok: bool
    #: dns, refused, timeout, tls, host_key, login, permission, directory, listing.
    failed_at: str | None = None
    reason: str | None = None
    files: int = 0
    sample: list[str] = Field(default_factory=list)
    note: str | None = None
    action_id: str | None = None


class PlannedFile(_Body):
    path: str
    #: copy or skip.
    action: str
    verdict: str
    reason: str
    size: int
    modified: str


class SourcePlan(_Body):
    source_id: str
    listed: int
    files: list[PlannedFile]
    #: Known files no longer on the server: the next poll marks them ``source_deleted``.
    gone: list[str]
    #: Why the server could not be listed (then nothing else is known).
    error: str | None = None
