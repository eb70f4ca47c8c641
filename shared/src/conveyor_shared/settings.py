"""Settings shared by every service, read from the environment.

The same code runs against moto locally and AWS in production: boto3 honours
the standard ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``)
variables, so no endpoint is wired through Conveyor's own settings.
Settings objects are created in ``main``, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class ResourceNames:
    """Names of the AWS resources of one deployment, derived from its stack name.

    ``deploy/conveyor.yaml`` names every resource ``${AWS::StackName}-<suffix>``;
    this is the one place in Python that knows those suffixes.
    """

    stack: str

    def _name(self, suffix: str) -> str:
        return f"{self.stack}-{suffix}"

    @property
    def files_table(self) -> str:
        return self._name("files")

    @property
    def jobs_table(self) -> str:
        return self._name("jobs")

    @property
    def locks_table(self) -> str:
        return self._name("locks")

    @property
    def notifications_table(self) -> str:
        return self._name("notifications")

    @property
    def received_table(self) -> str:
        return self._name("received")

    @property
    def sync_poll_queue(self) -> str:
        return self._name("sync-poll")

    @property
    def sync_fetch_queue(self) -> str:
        return self._name("sync-fetch")

    @property
    def events_topic(self) -> str:
        return self._name("events")

    @property
    def scanner_queue(self) -> str:
        return self._name("scanner")

    @property
    def notifier_queue(self) -> str:
        return self._name("notifier")

    def transfer_queue(self, destination_type: str) -> str:
        return self._name(f"transfer-{destination_type}")

    def dead_letter_queue(self, queue_name: str) -> str:
        return f"{queue_name}-dlq"


class ConveyorSettings(BaseSettings):
    """Settings every Conveyor service needs.

    Each service subclasses this with its own knobs.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    environment: Literal["local", "test", "production"] = "production"
    stack: str = Field(default="conveyor", pattern=r"^[a-zA-Z][a-zA-Z0-9-]{0,40}$")
    routes_uri: str = Field(description="Path or s3:// URI of the routes file")
    region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("CONVEYOR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    log_level: str = "INFO"
    log_json: bool | None = None
    #: Consumer concurrency: messages handled at once by one process.
    concurrency: int = Field(default=8, ge=1, le=256)
    #: SQS visibility timeout used while a message is being handled; extended
    #: in the background for as long as the handler runs.
    visibility_timeout: int = Field(default=60, ge=5, le=43200)
    #: Long-poll wait; tests and the local stack may shorten it.
    receive_wait_seconds: int = Field(default=20, ge=0, le=20)
    #: After a receive that found only a few messages, wait this long before
    #: the next, so receives take several at once (one request for many files).
    receive_gather_seconds: float = Field(default=0.3, ge=0.0, le=5.0)
    #: Message deletes and visibility changes, job counts and pick-up deletes
    #: wait up to this long to go out many to a request.
    ack_linger_seconds: float = Field(default=0.5, ge=0.0, le=5.0)
    #: How long a finished job stays in the jobs table (its TTL).
    job_retention_days: int = Field(default=90, ge=1, le=3650)

    @model_validator(mode="after")
    def _refuse_local_routes_in_production(self) -> ConveyorSettings:
        if self.environment == "production" and self.routes_uri.startswith(("./", "../")):
            raise ValueError(
                "CONVEYOR_ROUTES_URI must be an absolute path or s3:// URI in production"
            )
        return self

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.stack)
