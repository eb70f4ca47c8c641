"""The routes file: which client gets which files, where, and how (D1, S8).

Every model forbids unknown keys, so a typo is an error naming the field, not
a silently ignored setting. Credentials are only ever references to a secret
in AWS Secrets Manager (``credentials: {secret: NAME}``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from conveyor_shared.backends.ftp.settings import FtpSettings

#: A client's H number (``H1234``) or a provider's id (``bcbs-tx``, as in ``sources:``).
_ROUTE_ID = re.compile(r"^(?:[A-Z][0-9]{4}|[a-z][a-z0-9-]{0,62})$")


def _route_id(value: str) -> str:
    if not _ROUTE_ID.match(value):
        raise ValueError(
            f"{value!r} is neither a client's H number (a capital letter and 4 digits, "
            "e.g. H1234) nor a provider id (a lower-case letter, then letters, digits "
            "and '-', e.g. bcbs-tx)"
        )
    return value


#: Who a route delivers to (S7): a client, by its H number, or a provider
#: (reports uploaded to a partner's server), by its id. The field keeps its
#: name, ``client_id``: the ledger, jobs and mail are keyed by it.
ClientId = Annotated[
    str,
    AfterValidator(_route_id),
    Field(description="The route's id: a client's H number (H1234) or a provider id (bcbs-tx)"),
]

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """A reference to a JSON secret in AWS Secrets Manager, by name or ARN."""

    secret: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class S3Location(_Strict):
    """A bucket and a key prefix; written in the file as ``s3://bucket/prefix/``."""

    bucket: str
    prefix: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_uri(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        match = _S3_URI.match(value)
        if not match:
            raise ValueError(f"not an s3://bucket/prefix/ URI: {value!r}")
        return {"bucket": match["bucket"], "prefix": match["prefix"] or ""}

    @field_validator("prefix")
    @classmethod
    def _folder_prefix(cls, prefix: str) -> str:
        # A prefix is a folder: "H123" would otherwise also match "H1234/...".
        if prefix.startswith("/") or "//" in prefix or ".." in prefix.split("/"):
            raise ValueError(f"prefix {prefix!r} must be a plain relative folder path")
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def contains(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)

    def overlaps(self, other: S3Location) -> bool:
        return self.bucket == other.bucket and (
            self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        )

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class GcsDestination(_Strict):
    type: Literal["gcs"]
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")]
    prefix: str = ""
    #: A service-account key; without one, the service's own identity is used.
    credentials: SecretRef | None = None
    #: Resumable-upload chunk size in MiB (GCS needs a multiple of 256 KiB).
    chunk_mib: int = Field(default=32, ge=1, le=1024)


class SftpDestination(_Strict):
    type: Literal["sftp"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: int = Field(default=22, ge=1, le=65535)
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    directory: str = "."
    #: The server's public host key(s), as in known_hosts: "ssh-ed25519 AAAA...".
    host_keys: list[Annotated[str, StringConstraints(pattern=r"^(ssh|ecdsa)-\S+ \S+")]] = Field(
        min_length=1
    )
    credentials: SecretRef
    #: At most this many concurrent SFTP sessions to this server.
    max_sessions: int = Field(default=4, ge=1, le=64)
    #: Create the remote directory when it does not exist.
    create_directory: bool = False
    #: After upload, compare a checksum when the server can compute one
    #: (the size is always compared).
    verify_checksum: bool = True


class FtpDestination(FtpSettings):
    """An FTP or FTPS server: every setting of the FTP backend
    (docs/transfer-ftp.md says which server needs which), the login name,
    and the secret holding ``{"password": ..., "ca_bundle": ...}``."""

    type: Literal["ftp"]
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    credentials: SecretRef


class S3Destination(_Strict):
    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    #: Credentials for the destination account; without them, the service's own.
    credentials: SecretRef | None = None
    region: str | None = None
    kms_key_id: str | None = None
    #: Grant the bucket owner full control (cross-account deliveries).
    bucket_owner_full_control: bool = False


#: A route's ``destination`` settings: one model per destination type, told
#: apart by ``type``. Named ``...Config`` so it is not mistaken for the
#: ``transfer.Destination`` protocol a backend implements. Written out (not
#: built from ``backends/registry.py``) so type checkers see the union and the
#: routes file parses without any backend's SDK installed; the registry
#: refuses to load if the two disagree.
DestinationConfig = Annotated[
    GcsDestination | SftpDestination | S3Destination | FtpDestination,
    Field(discriminator="type"),
]
DESTINATION_CONFIGS: tuple[type[BaseModel], ...] = get_args(get_args(DestinationConfig)[0])


def type_name(model: type[BaseModel]) -> str:
    """The ``type`` a destination model is written with (``Literal["sftp"]``: "sftp")."""
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


#: Every destination type's name, in the union's order: one transfer queue each.
DESTINATION_TYPES: tuple[str, ...] = tuple(type_name(model) for model in DESTINATION_CONFIGS)


class Route(_Strict):
    """One client's delivery: where its files are picked up and where they go."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    client_id: ClientId
    contacts: list[EmailStr] = Field(min_length=1)
    notify: bool = True
    pickup: S3Location
    destination: DestinationConfig
    #: Send a file again even when its content is already in the ledger (D5).
    bypass_file_checks: bool = False
    #: Hold every file until ``<client_id>.done`` appears, then send them as one batch (D3).
    trigger_on_done_file: bool = False
    #: The least check a delivery needs (B1). Every hash either side vouches for
    #: is compared either way; ``checksum`` also fails, permanently, a file
    #: whose content no hash could check (only its size), instead of
    #: delivering it size-checked. ``size`` is the default so existing routes
    #: keep delivering from sources and to servers that offer no hash.
    verify: Literal["checksum", "size"] = "size"
    #: What happens to a delivered file in the pick-up.
    after_delivery: Literal["delete", "keep", "archive"] = "delete"
    #: Where ``after_delivery: archive`` moves delivered files.
    archive: S3Location | None = None
    #: Seconds between a failed attempt and the next one, after the first and
    #: the second failure; the third failure is final (D7). Sized for a
    #: partner's maintenance window, not for a blip: blips are retried within
    #: the attempt. SQS holds the message invisible meanwhile (at most 12 h).
    retry_delays_seconds: list[Annotated[int, Field(ge=0, le=43000)]] = Field(
        default_factory=lambda: [60, 600], min_length=2, max_length=2
    )

    def retry_delay(self, failed_attempts: int) -> int:
        """Seconds before the next attempt after ``failed_attempts`` failures."""
        return self.retry_delays_seconds[min(failed_attempts, 2) - 1]

    @model_validator(mode="after")
    def _archive_needs_a_place(self) -> Route:
        if self.after_delivery == "archive" and self.archive is None:
            raise ValueError("after_delivery: archive needs an 'archive' location")
        if self.archive is not None and self.archive.overlaps(self.pickup):
            raise ValueError("the archive location must not overlap the pick-up")
        return self

    @property
    def done_file_key(self) -> str:
        return f"{self.pickup.prefix}{self.client_id}.done"


class OpsNotifications(_Strict):
    """Where operators hear about failed files and dead letters."""

    emails: list[EmailStr] = Field(default_factory=list)
    slack: SecretRef | None = None


class CareTeamNotifications(_Strict):
    """Where the care team hears of provider files meant for them (S6)."""

    #: An incoming-webhook secret (``{"url": ...}``) for the care team's Slack channel.
    slack: SecretRef | None = None


class RoutesFile(_Strict):
    version: Literal[1] = 1
    #: Sender address for notification e-mails.
    mail_from: EmailStr = "conveyor@localhost.localdomain"
    ops: OpsNotifications = Field(default_factory=OpsNotifications)
    care_team: CareTeamNotifications = Field(default_factory=CareTeamNotifications)
    routes: list[Route] = Field(default_factory=list)
    #: Partners' servers polled for files (S1); see config/sources.py.
    sources: Sources = Field(default_factory=list)

    def route_for_client(self, client_id: str) -> Route | None:
        return next((r for r in self.routes if r.client_id == client_id), None)

    def route_for_object(self, bucket: str, key: str) -> Route | None:
        # Pick-ups never overlap (the validator refuses it), so at most one matches.
        return next((r for r in self.routes if r.pickup.contains(bucket, key)), None)


# Sources are built on SecretRef and S3Location above, so they are imported last.
from conveyor_shared.config.sources import Sources  # noqa: E402

RoutesFile.model_rebuild()
