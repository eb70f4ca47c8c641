"""Provider sources in the routes file: partners' FTP, FTPS and SFTP servers
that Conveyor polls and copies into S3 (S1, S2, S4, S6, S8).

A new provider is one entry under ``sources:`` plus a secret; no code. Every
model forbids unknown keys, so a misspelt setting is an error naming it.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, timedelta, timezone
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from conveyor_shared.config.models import S3Location, SecretRef

#: Where a copy is staged (in the landing bucket) until it is complete and
#: hashed; no landing may contain it.
STAGING_PREFIX = "conveyor-incoming/"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OFFSET = re.compile(r"^(?P<sign>[+-])(?P<hours>\d{2}):(?P<minutes>\d{2})$")

SourceId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
    Field(description="Stable id of the source: lower-case letters, digits and '-'"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stability(_Strict):
    """When a file is finished being written (S2, S4)."""

    #: Size and time must be the same on two looks at least this far apart.
    settle_seconds: int = Field(default=60, ge=0, le=86400)
    #: And the file's modification time at least this old.
    min_age_seconds: int = Field(default=0, ge=0, le=7 * 86400)
    #: Fetch a file only once this marker exists beside it; ``{name}`` is the
    #: file's name ("{name}.done"), or a fixed name for a whole folder ("_SUCCESS").
    #: Marker files themselves are never copied.
    done_marker: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    #: Names ending in one of these are still being written and are skipped.
    temp_suffixes: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] = Field(
        default_factory=lambda: [".tmp", ".part", ".partial", ".filepart"]
    )

    @field_validator("done_marker")
    @classmethod
    def _plain_name(cls, marker: str | None) -> str | None:
        if marker is not None and "/" in marker:
            raise ValueError("a done marker is a file name beside the file, without '/'")
        return marker


class FtpOptions(_Strict):
    """The FTP backend's per-server settings a source may set
    (docs/transfer-ftp.md says which server needs which)."""

    #: FTPS only: ``explicit`` (``AUTH TLS`` on the plain port) or ``implicit``.
    tls: Literal["explicit", "implicit"] = "explicit"
    #: ``auto``: EPSV, then PASV if the server does not know EPSV.
    passive: Literal["auto", "epsv", "pasv"] = "auto"
    #: Connect to the address in a PASV reply instead of the control host.
    trust_pasv_address: bool = False
    connect_timeout: float = Field(default=30.0, gt=0, le=600)
    #: How long any one read or reply may take before the session counts as lost.
    io_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: Idle sessions older than this are closed, not reused.
    idle_seconds: float = Field(default=60.0, ge=0, le=3600)


class ProviderSource(_Strict):
    """One partner server polled for files."""

    id: SourceId
    name: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    #: The partner (health plan) the files come from, as in ``file.received``.
    partner_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    protocol: Literal["ftp", "ftps", "sftp"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: int | None = Field(default=None, ge=1, le=65535)
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    #: A secret holding ``{"password": ...}`` or ``{"private_key": ...}`` (SFTP).
    credentials: SecretRef
    #: The folder on the server that is polled.
    directory: str = "."
    #: Shell patterns (``*.csv``) matched against the path below ``directory``;
    #: with none, every file is included. Excludes win over includes.
    include: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    exclude: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    #: Look into sub-folders, at most ``max_depth`` levels below ``directory``.
    recursive: bool = False
    max_depth: int = Field(default=10, ge=1, le=64)
    #: Minutes between polls (S1).
    schedule_minutes: int = Field(default=15, ge=1, le=7 * 24 * 60)
    #: SFTP: the server's public host key(s), as in known_hosts.
    host_keys: list[Annotated[str, StringConstraints(pattern=r"^(ssh|ecdsa)-\S+ \S+")]] = Field(
        default_factory=list
    )
    #: FTPS: the server certificate's SHA-256 (hex, colons allowed), pinned;
    #: without it the certificate is checked against the system CAs or the
    #: secret's ``ca_bundle``.
    certificate_sha256: str | None = None
    #: FTP: the clock of the server's LIST times, ``UTC`` or an offset such as
    #: ``-05:00`` (MLSD and MDTM are UTC by the RFC; SFTP times always are).
    #: Times are stored in UTC.
    time_zone: str = "UTC"
    #: Where copies land: ``<landing>/<source id>/<path>/<first seen>--<sha256>/<name>``.
    landing: S3Location
    #: Who the files are for (S6): an automated ``process`` (``file.received``
    #: on SNS) or the ``care_team`` (a Slack message through the notifier).
    audience: Literal["process", "care_team"]
    #: What happens on the server after a copy: ``delete`` only where the
    #: partner's agreement allows it.
    after_copy: Literal["keep", "delete"] = "keep"
    #: At most this many connections to this server at once.
    max_sessions: int = Field(default=2, ge=1, le=32)
    stability: Stability = Field(default_factory=Stability)
    ftp: FtpOptions = Field(default_factory=FtpOptions)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone_of(name)
        return name

    @field_validator("certificate_sha256")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").strip().lower()
        if not _SHA256.match(digits):
            raise ValueError("certificate_sha256 must be a SHA-256 in hex (64 digits)")
        return digits

    @field_validator("directory")
    @classmethod
    def _directory(cls, directory: str) -> str:
        if not directory or ".." in directory.split("/"):
            raise ValueError("the directory must be a path on the server without '..'")
        return directory

    @field_validator("landing")
    @classmethod
    def _outside_staging(cls, landing: S3Location) -> S3Location:
        staging = S3Location(bucket=landing.bucket, prefix=STAGING_PREFIX)
        if landing.overlaps(staging):
            raise ValueError(
                f"{landing} overlaps {staging}, where copies are staged until complete"
            )
        return landing

    @model_validator(mode="after")
    def _protocol_settings(self) -> ProviderSource:
        if self.protocol == "sftp" and not self.host_keys:
            raise ValueError("an sftp source needs 'host_keys' (the server's pinned key)")
        if self.protocol != "sftp" and self.host_keys:
            raise ValueError("'host_keys' is for sftp sources only")
        if self.protocol != "ftps" and self.certificate_sha256 is not None:
            raise ValueError("'certificate_sha256' is for ftps sources only")
        return self

    @property
    def server_port(self) -> int:
        if self.port:
            return self.port
        if self.protocol == "sftp":
            return 22
        return 990 if self.protocol == "ftps" and self.ftp.tls == "implicit" else 21

    @property
    def zone(self) -> timezone:
        return zone_of(self.time_zone)

    def wants(self, path: str) -> bool:
        """Whether ``path`` (relative to ``directory``) is one of this source's files."""
        if path.count("/") >= (self.max_depth + 1 if self.recursive else 1):
            return False
        if any(fnmatch.fnmatchcase(path, p) for p in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatchcase(path, p) for p in self.include)


def zone_of(name: str) -> timezone:
    """``UTC`` or a fixed offset ``+HH:MM``. A fixed offset, not a named zone:
    a daylight-saving change would shift every listed time by an hour and
    make every file look changed."""
    if name == "UTC":
        return UTC
    match = _OFFSET.match(name)
    if not match or int(match["hours"]) > 14 or int(match["minutes"]) > 59:
        raise ValueError(f"time_zone {name!r} must be UTC or an offset such as -05:00")
    delta = timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]))
    return timezone(-delta if match["sign"] == "-" else delta)


def offset_text(zone: timezone) -> str:
    """``+HH:MM`` for ``zone``, as the FTP backend's ``time_zone`` takes it."""
    minutes = int((zone.utcoffset(None) or timedelta(0)).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


#: The ``sources:`` list of the routes file. Unique ids, and landings apart
#: from every pick-up, are checked across entries by ``validate_routes``, so
#: that each repeat is named at its own ``sources[i]``.
Sources = list[ProviderSource]
