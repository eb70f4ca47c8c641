from __future__ import annotations

from pydantic import Field

from conveyor_shared.settings import ConveyorSettings


class ScannerSettings(ConveyorSettings):
    #: Arrival events are mostly waiting for their batch, so many are held at once.
    concurrency: int = Field(default=1000, ge=1, le=10000)
    #: Parallel long polls, so a burst of events is taken in quickly.
    receivers: int = Field(default=4, ge=1, le=32)
    visibility_timeout: int = Field(default=120, ge=5, le=43200)
    #: A client's batch (the job its arrivals are grouped in for the e-mails;
    #: each file is dispatched on arrival) closes once its arrivals have been
    #: quiet this long...
    batch_window_seconds: float = Field(default=2.0, ge=0.0, le=300.0)
    #: ...or this long after its first file, whichever comes first.
    batch_max_wait_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    #: A job never holds more files than this; a larger burst forms several.
    batch_max_files: int = Field(default=1000, ge=1, le=100_000)
    #: Arrivals of one client taken in within this long share one reservation
    #: in its batch (one DynamoDB write for many files under load).
    arrival_coalesce_seconds: float = Field(default=0.1, ge=0.0, le=5.0)
    #: Look files up under the identity entries had before SHA-256 (an MD5
    #: ETag): one read per file, for a ledger that holds such entries.
    legacy_identities: bool = False
    #: How long the scheduled scan's lease lasts (another scanner may scan after it expires).
    scan_lease_seconds: int = Field(default=900, ge=10)
    #: Entries still active after this long are reported and repaired by the health check (D9).
    stale_after_seconds: int = Field(default=3600, ge=1)
    #: A recorder may still be working on entries younger than this; repairs wait for it.
    repair_grace_seconds: float = Field(default=120.0, ge=0.0)
    #: Attempts after which the health check gives up on a stale file.
    max_attempts: int = Field(default=3, ge=1)
