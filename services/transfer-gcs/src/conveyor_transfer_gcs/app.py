"""Wiring of the GCS transfer service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from conveyor_shared.backends.gcs import GcsDestinationFactory
from conveyor_shared.delivery.service import TransferSettings, run_transfer_service
from conveyor_shared.runtime import AwsClients
from conveyor_shared.secrets import SecretStore


async def run(settings: TransferSettings, stop: asyncio.Event | None = None) -> None:
    async def make_factory(
        aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
    ) -> GcsDestinationFactory:
        return GcsDestinationFactory(secrets)

    await run_transfer_service(settings, "gcs", make_factory, stop)
