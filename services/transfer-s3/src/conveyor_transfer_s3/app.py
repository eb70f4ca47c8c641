"""Wiring of the S3 transfer service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from conveyor_shared.aws import CLIENT_CONFIG, aws_session
from conveyor_shared.backends.s3 import S3DestinationFactory
from conveyor_shared.delivery.service import TransferSettings, run_transfer_service
from conveyor_shared.runtime import AwsClients
from conveyor_shared.secrets import SecretStore


async def run(settings: TransferSettings, stop: asyncio.Event | None = None) -> None:
    async def make_factory(
        aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
    ) -> S3DestinationFactory:
        return S3DestinationFactory(
            aws.s3, secrets, aws_session(settings.region), stack, CLIENT_CONFIG
        )

    await run_transfer_service(settings, "s3", make_factory, stop)
