"""Opens GCS stores for routes over one shared HTTP session."""

from __future__ import annotations

import io
import json
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.storage.storage import init_api_root

from conveyor_shared.backends.gcs.client import (
    HTTP_TIMEOUT,
    SCOPES,
    GcsClient,
    MiB,
)
from conveyor_shared.backends.gcs.store import GcsStore
from conveyor_shared.config.models import DestinationConfig, GcsDestination
from conveyor_shared.errors import (
    Misconfigured,
    NotFound,
)
from conveyor_shared.secrets import GcsCredentials, SecretStore

if TYPE_CHECKING:
    from conveyor_shared.runtime import AwsClients
    from conveyor_shared.settings import ConveyorSettings


class GcsDestinationFactory:
    """Opens GCS destinations over one shared HTTP session, with one access
    token per credentials secret (the service's own identity, from the
    environment, when a route names none).

    ``api_root`` points at an emulator; by default ``STORAGE_EMULATOR_HOST``
    does, and against an emulator no token is ever fetched.
    """

    def __init__(
        self, secrets: SecretStore, *, api_root: str | None = None, resume_attempts: int = 5
    ) -> None:
        self._secrets = secrets
        self._emulated, self._api_root = init_api_root(api_root)
        self._resume_attempts = resume_attempts
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str | None, GcsClient] = {}

    async def open(self, spec: DestinationConfig) -> GcsStore:
        """A ``GcsStore`` for ``spec``. Raises ``Misconfigured`` if ``spec`` is not a
        GCS destination, or its secret is missing or not a service-account key."""
        if not isinstance(spec, GcsDestination):
            raise Misconfigured(f"the GCS transfer service cannot deliver to {spec.type}")
        secret = spec.credentials.secret if spec.credentials else None
        return GcsStore(
            await self._client_for(secret),
            spec.bucket,
            spec.prefix,
            chunk_size=spec.chunk_mib * MiB,
            resume_attempts=self._resume_attempts,
        )

    async def _client_for(self, secret: str | None) -> GcsClient:
        if secret not in self._clients:
            # Read even against the emulator, so a bad secret shows up locally too.
            key = await self._key(secret) if secret else None
            session = self._http()
            token = None if self._emulated else _token(key, session, secret)
            self._clients[secret] = GcsClient(session, self._api_root, token)
        return self._clients[secret]

    async def _key(self, secret: str) -> dict[str, Any]:
        try:
            credentials = await self._secrets.get(secret, GcsCredentials)
        except NotFound:
            raise Misconfigured(f"GCS credentials secret {secret!r} does not exist") from None
        return {
            **credentials.model_dump(exclude={"private_key"}),
            "private_key": credentials.private_key.get_secret_value(),
        }

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        return self._session

    async def forget_credentials(self) -> None:
        """Drop the clients (and tokens) made from secrets."""
        self._clients.clear()

    async def close(self) -> None:
        """Close the shared HTTP session; stores opened from here stop working."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._clients.clear()


def _token(key: dict[str, Any] | None, session: aiohttp.ClientSession, secret: str | None) -> Token:
    """gcloud-aio-auth's token for a service-account key, or, without one, for the
    environment's identity (GOOGLE_APPLICATION_CREDENTIALS, the metadata server)."""
    try:
        service_file = io.StringIO(json.dumps(key)) if key is not None else None
        # gcloud-aio-auth types ``session`` as requests' Session (its sync twin's).
        return Token(service_file=service_file, session=session, scopes=SCOPES)  # type: ignore[arg-type]
    except Exception as exc:
        raise Misconfigured(
            f"GCS credentials secret {secret!r} is not a usable key ({type(exc).__name__})"
        ) from None


async def open_factory(
    settings: ConveyorSettings, aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
) -> GcsDestinationFactory:
    """The GCS transfer service's destinations (``backends/registry.py``)."""
    return GcsDestinationFactory(secrets)
