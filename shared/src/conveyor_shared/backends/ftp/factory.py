"""Opens FTP stores for routes, sharing one session pool per server and login."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from conveyor_shared.backends.ftp.session import FtpSessionPool
from conveyor_shared.backends.ftp.settings import FtpCredentials, FtpSettings
from conveyor_shared.backends.ftp.store import FtpStore
from conveyor_shared.config.models import FtpDestination
from conveyor_shared.errors import Misconfigured
from conveyor_shared.secrets import SecretStore

if TYPE_CHECKING:
    from conveyor_shared.runtime import AwsClients
    from conveyor_shared.settings import ConveyorSettings


async def route_credentials(secrets: SecretStore, spec: FtpDestination) -> FtpCredentials:
    """The route's login: ``username`` from the route, ``password`` and an
    optional ``ca_bundle`` from its secret. Raises ``Misconfigured`` naming
    the secret and the bad fields, never their values."""
    secret = spec.credentials.secret
    value = await secrets.get_json(secret)
    try:
        return FtpCredentials.model_validate({**value, "username": spec.username})
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise Misconfigured(
            f"secret {secret!r} is not a usable FTP secret (check {fields}; "
            "expected password and optionally ca_bundle)"
        ) from None


class FtpDestinationFactory:
    """Opens FTP destinations, one session pool per server settings, login
    and secret: routes to the same server share its ``max_sessions``."""

    def __init__(self, secrets: SecretStore) -> None:
        self._secrets = secrets
        self._pools: dict[tuple[FtpSettings, str, str], FtpSessionPool] = {}

    def _pool_for(self, spec: FtpDestination) -> FtpSessionPool:
        # The server's settings without the route-only fields, so two routes to
        # one server and directory differ only where the backend would.
        settings = FtpSettings.model_validate(
            spec.model_dump(exclude={"type", "username", "credentials"})
        )
        key = (settings, spec.username, spec.credentials.secret)
        if key not in self._pools:

            async def credentials() -> FtpCredentials:
                # Read per connection: after a refused login the store is told
                # to read the secret again (a rotated password).
                return await route_credentials(self._secrets, spec)

            self._pools[key] = FtpSessionPool(settings, credentials)
        return self._pools[key]

    async def open(self, spec: Any) -> FtpStore:
        """A store for ``spec``; connects lazily, on the first file.

        Raises ``Misconfigured`` if ``spec`` is not an FTP destination.
        """
        if not isinstance(spec, FtpDestination):
            raise Misconfigured(f"the FTP transfer service cannot deliver to {spec.type}")
        return FtpStore(self._pool_for(spec), spec.username)

    async def forget_credentials(self) -> None:
        """Nothing to drop here: each new session asks the secret store,
        which the caller has told to read again."""

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))


async def open_factory(
    settings: ConveyorSettings, aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
) -> FtpDestinationFactory:
    """The FTP transfer service's destinations (``backends/registry.py``)."""
    return FtpDestinationFactory(secrets)
