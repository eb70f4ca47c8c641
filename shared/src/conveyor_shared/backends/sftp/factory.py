"""Opens SFTP stores for routes, sharing one pool per server and account."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from conveyor_shared.backends.sftp.connection import SftpConnectionPool
from conveyor_shared.backends.sftp.server import SftpServer, SftpTuning
from conveyor_shared.backends.sftp.store import SftpStore
from conveyor_shared.config.models import SftpDestination
from conveyor_shared.errors import Misconfigured
from conveyor_shared.secrets import SecretStore, SftpCredentials

if TYPE_CHECKING:
    from conveyor_shared.runtime import AwsClients
    from conveyor_shared.settings import ConveyorSettings


class SftpDestinationFactory:
    """Opens SFTP destinations, one connection pool per server, user,
    credentials secret, pinned keys and session limit."""

    def __init__(self, secrets: SecretStore, tuning: SftpTuning | None = None) -> None:
        self._secrets = secrets
        self._tuning = tuning or SftpTuning()
        self._pools: dict[tuple[Any, ...], SftpConnectionPool] = {}

    def _pool_for(self, spec: SftpDestination) -> SftpConnectionPool:
        key = (
            spec.host,
            spec.port,
            spec.username,
            spec.credentials.secret,
            tuple(spec.host_keys),
            spec.max_sessions,
        )
        if key not in self._pools:
            secret = spec.credentials.secret

            async def credentials() -> SftpCredentials:
                return await self._secrets.get(secret, SftpCredentials)

            self._pools[key] = SftpConnectionPool(
                SftpServer(spec.host, spec.port, spec.username, tuple(spec.host_keys)),
                credentials,
                spec.max_sessions,
                self._tuning,
                credentials_name=f"secret {secret!r}",
            )
        return self._pools[key]

    async def open(self, spec: Any) -> SftpStore:
        """A store for ``spec``; connects lazily, on the first file.

        Raises ``Misconfigured`` if ``spec`` is not an SFTP destination or a
        pinned host key cannot be parsed.
        """
        if not isinstance(spec, SftpDestination):
            raise Misconfigured(f"the SFTP transfer service cannot deliver to {spec.type}")
        return SftpStore(
            self._pool_for(spec),
            spec.directory,
            create_directory=spec.create_directory,
            verify_checksum=spec.verify_checksum,
        )

    async def forget_credentials(self) -> None:
        """Nothing to drop here: each new connection asks the secret store,
        which the caller has told to read again."""

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))


async def open_factory(
    settings: ConveyorSettings, aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
) -> SftpDestinationFactory:
    """The SFTP transfer service's destinations (``backends/registry.py``)."""
    return SftpDestinationFactory(secrets)
