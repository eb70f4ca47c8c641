"""The notifier's settings, read from ``CONVEYOR_*`` environment variables.

Credentials never appear here: the SMTP password is the *name* of a Secrets
Manager secret (``{"password": "..."}``), read when a mail is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import EmailStr, Field, model_validator
from pydantic_settings import SettingsConfigDict

from conveyor_shared.settings import ConveyorSettings


class NotifierSettings(ConveyorSettings):
    model_config = SettingsConfigDict(populate_by_name=True)

    #: Most messages wait in a batch window for a few seconds, so many are held at once.
    concurrency: int = Field(default=200, ge=1, le=10000)

    # --- e-mail ---------------------------------------------------------------------------
    #: ``ses`` (Amazon SES, v2 API) in production; ``smtp`` for any SMTP relay, and
    #: for the local stack's own SMTP server. Named for the service in the
    #: environment, which the local stack shares between services.
    transport: Literal["ses", "smtp"] = Field(
        default="ses", validation_alias="CONVEYOR_NOTIFIER_TRANSPORT"
    )
    #: Overrides the routes file's ``mail_from``.
    mail_from: EmailStr | None = None
    #: An SES configuration set (event publishing, dedicated IPs); optional.
    ses_configuration_set: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    #: Upgrade the connection with STARTTLS (required; refused servers fail the send).
    smtp_starttls: bool = True
    smtp_username: str | None = None
    #: Name of the Secrets Manager secret holding ``{"password": "..."}``.
    smtp_password_secret: str | None = None
    #: CA bundle that signs the SMTP server's certificate, when not a public CA.
    smtp_ca_file: Path | None = None
    smtp_timeout: float = Field(default=30.0, gt=0)

    #: A job mail lists up to this many files (and failures); a larger job's mail
    #: gives the counts by status and attaches the full list as CSV.
    mail_list_limit: int = Field(default=200, ge=1, le=5000)

    # --- retries and the idempotency record ------------------------------------------------
    #: A send is retried within one message for at most this long (back-off with
    #: jitter), then the message goes back to SQS for its next receive.
    send_retry_seconds: float = Field(default=300.0, gt=0)
    send_attempts: int = Field(default=10, ge=1)
    #: How long a claimed notification stays ours: longer than any send with its retries.
    #: (At most SQS's longest visibility timeout: a duplicate may wait that long.)
    claim_lease_seconds: int = Field(default=900, ge=5, le=43200)
    #: A duplicate event whose notification another worker is sending right now
    #: comes back after this long (later ones wait for that worker's lease).
    held_retry_seconds: int = Field(default=10, ge=1, le=900)
    #: Sent-notification records are kept this long (longer than any redelivery).
    record_retention_days: int = Field(default=90, ge=1)

    # --- Slack and operators ---------------------------------------------------------------
    #: ``file.received`` events for one source arriving within this window form one message.
    slack_batch_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    #: ``file.failed`` events of one job arriving within this window form one ops alert.
    ops_batch_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    #: A batch never lists more items than this; a larger burst forms several.
    batch_max_items: int = Field(default=50, ge=1, le=500)
    #: A Slack ``Retry-After`` up to this long is waited out in-process; a longer
    #: one hands the messages back to SQS for that long.
    slack_max_retry_after: float = Field(default=60.0, ge=0.0)
    slack_timeout: float = Field(default=15.0, gt=0)
    #: How often the dead-letter queues are looked at (0 turns the watch off).
    dead_letter_poll_seconds: float = Field(default=60.0, ge=0.0)
    #: Dead-letter queues to watch; by default the scanner's and the notifier's,
    #: whose dead letters nothing else reports (a transfer's dead letter becomes
    #: a ``file.failed`` event, which operators already hear of).
    dead_letter_queues: list[str] | None = None

    @model_validator(mode="after")
    def _refuse_unsafe_mail_settings(self) -> NotifierSettings:
        if (self.smtp_username is None) != (self.smtp_password_secret is None):
            raise ValueError("CONVEYOR_SMTP_USERNAME and CONVEYOR_SMTP_PASSWORD_SECRET go together")
        if self.environment == "production" and self.transport == "smtp" and not self.smtp_starttls:
            raise ValueError("production SMTP needs CONVEYOR_SMTP_STARTTLS=true")
        if self.claim_lease_seconds <= self.send_retry_seconds:
            raise ValueError(
                "CONVEYOR_CLAIM_LEASE_SECONDS must exceed CONVEYOR_SEND_RETRY_SECONDS, "
                "or a slow send could be repeated by another worker"
            )
        return self

    @property
    def watched_dead_letter_queues(self) -> list[str]:
        if self.dead_letter_queues is not None:
            return self.dead_letter_queues
        names = self.names
        return [
            names.dead_letter_queue(names.scanner_queue),
            names.dead_letter_queue(names.notifier_queue),
        ]
