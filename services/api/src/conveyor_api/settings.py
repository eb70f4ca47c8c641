"""The API's settings, read from ``CONVEYOR_*`` environment variables.

No key material appears here: ``CONVEYOR_API_KEYS_SECRET`` is the *name* of a
Secrets Manager secret holding the keys' SHA-256 hashes (docs/api.md).
"""

from __future__ import annotations

from pydantic import Field

from conveyor_shared.settings import ConveyorSettings


class ApiSettings(ConveyorSettings):
    #: Where uvicorn listens (``CONVEYOR_API_HOST``, ``CONVEYOR_API_PORT``).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    #: Name of the secret ``{"keys": [{"id", "role", "sha256"}]}`` (never the keys).
    api_keys_secret: str = Field(min_length=1)
    #: How long the key list is cached; a revoked key stops working within this.
    api_keys_cache_seconds: float = Field(default=60.0, ge=0.0)
    #: A CSV export stops after this many rows.
    csv_max_rows: int = Field(default=100_000, ge=1)
    #: A resend by filter touches at most this many files per request.
    resend_max_files: int = Field(default=1000, ge=1, le=10_000)
    #: How often queue depths and new deliveries are read for ``/metrics``.
    metrics_refresh_seconds: float = Field(default=15.0, ge=0.0)
    #: How long an ``Idempotency-Key``'s first response is kept.
    idempotency_seconds: int = Field(default=24 * 3600, ge=60)
    #: Name of the secret ``{"keys": ["<32+ random characters>", ...]}`` that signs
    #: the web page's session cookies (the first signs, all verify). Unset: no sign-in.
    web_session_secret: str | None = Field(default=None, min_length=1)
    #: How long a web session lasts after sign-in.
    web_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
