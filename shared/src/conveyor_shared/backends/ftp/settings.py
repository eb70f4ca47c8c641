"""An FTP server as a route names it, and the secret that logs in to it
(docs/transfer-ftp.md documents every setting and which server needs which)."""

from __future__ import annotations

import re
from datetime import timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")

#: ``rename``: write a temporary name, rename it over the final one (nothing
#: partial ever visible, the old file replaced in one step where the server
#: renames over files). ``delete_then_rename``: the same, deleting the old
#: file first for servers that refuse to rename over one (proftpd's default):
#: never partial, but briefly absent. ``direct``: write the final name itself,
#: for servers that refuse renames: a failed upload can leave a partial file
#: there until the retry overwrites it.
UploadMode = Literal["rename", "delete_then_rename", "direct"]


class FtpSettings(BaseModel):
    """One FTP or FTPS server and the directory Conveyor works in there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    #: None: 21, or 990 for implicit FTPS.
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ``explicit``: ``AUTH TLS`` on the plain port; ``implicit``: TLS from the first byte.
    tls: Literal["none", "explicit", "implicit"] = "explicit"
    #: The server certificate's SHA-256, hex (colons allowed): pinned instead of
    #: checked against the system CAs or the secret's ``ca_bundle``.
    fingerprint: str | None = None
    #: Absolute, or relative to the directory the server starts a session in.
    directory: str = "."
    #: ``auto``: EPSV, then PASV if the server does not know EPSV.
    passive: Literal["auto", "epsv", "pasv"] = "auto"
    #: Connect to the address in the server's PASV reply instead of the control
    #: host (only for servers whose data connections live on another host).
    trust_pasv_address: bool = False
    #: Sessions (control connections) open at once, listing and transfers together.
    max_sessions: int = Field(default=2, ge=1, le=64)
    connect_timeout: float = Field(default=30.0, gt=0)
    #: How long any one read or reply may take before the session is declared dead.
    io_timeout: float = Field(default=60.0, gt=0)
    #: Idle sessions older than this are closed, not reused (servers drop them).
    idle_seconds: float = Field(default=60.0, ge=0)
    upload_mode: UploadMode = "rename"
    #: The server's clock for LIST times (MLSD and MDTM are UTC by the RFC), as ``+HH:MM``.
    time_zone: str = "+00:00"
    #: A temporary file nobody wrote to for this long (by the server's clock)
    #: is a crashed upload's, removed by a later upload to its directory.
    orphan_age: float = Field(default=3600.0, gt=0)
    #: Create missing directories (the destination's and any a path names).
    create_dirs: bool = False
    #: Compare the server's hash (HASH, XSHA256, XMD5, XCRC) after upload where FEAT offers one.
    verify_hash: bool = True

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalised = value.replace(":", "").strip().lower()
        if not _FINGERPRINT.match(normalised):
            raise ValueError("fingerprint must be a SHA-256 in hex (64 digits, colons allowed)")
        return normalised

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        match = _OFFSET.match(value)
        if not match or int(match[2]) > 14 or int(match[3]) > 59:
            raise ValueError("time_zone must be an offset such as +00:00 or -05:00")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or (990 if self.tls == "implicit" else 21)

    @property
    def zone(self) -> timezone:
        match = _OFFSET.match(self.time_zone)
        assert match is not None  # validated
        minutes = int(match[2]) * 60 + int(match[3])
        return timezone(timedelta(minutes=-minutes if match[1] == "-" else minutes))


class FtpCredentials(BaseModel):
    """The secret's fields: a login and, for a private CA, its certificates (PEM)."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1)
    password: SecretStr = SecretStr("")
    ca_bundle: str | None = None
