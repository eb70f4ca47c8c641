from __future__ import annotations

from pydantic import Field

from conveyor_shared.settings import ConveyorSettings


class ProviderSyncSettings(ConveyorSettings):
    #: Fetches handled at once by one process (each also bounded per source
    #: by the source's ``max_sessions``, across every replica).
    concurrency: int = Field(default=8, ge=1, le=256)
    #: Polls handled at once by one process; different sources poll in parallel.
    poll_concurrency: int = Field(default=4, ge=1, le=64)
    visibility_timeout: int = Field(default=120, ge=5, le=43200)
    #: How long a poll's lease on its source lasts; a crashed poller's source
    #: is polled again after it expires.
    poll_lease_seconds: int = Field(default=900, ge=10)
    #: How long a fetch holds its path and its connection slot (renewed while it runs).
    fetch_lease_seconds: int = Field(default=300, ge=10)
    #: S3 multipart part size in MiB; memory per fetch is about
    #: ``part_mib * (parts_in_flight + 1)``.
    part_mib: int = Field(default=16, ge=5, le=512)
    parts_in_flight: int = Field(default=2, ge=1, le=16)
    #: Seconds before a fetch waiting for a free connection slot is tried again.
    busy_retry_seconds: int = Field(default=15, ge=0, le=900)
