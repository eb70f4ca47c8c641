"""Wiring of the SFTP transfer service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from conveyor_shared.backends.sftp import SftpDestinationFactory
from conveyor_shared.delivery.service import TransferSettings, run_transfer_service
from conveyor_shared.runtime import AwsClients
from conveyor_shared.secrets import SecretStore


async def run(settings: TransferSettings, stop: asyncio.Event | None = None) -> None:
    async def make_factory(
        _aws: AwsClients, secrets: SecretStore, _stack: AsyncExitStack
    ) -> SftpDestinationFactory:
        return SftpDestinationFactory(secrets)

    await run_transfer_service(settings, "sftp", make_factory, stop)
