"""Wiring of the S3 transfer service: its destinations come from the backend registry."""

from __future__ import annotations

import asyncio

from conveyor_shared.backends.registry import factory_maker
from conveyor_shared.delivery.service import TransferSettings, run_transfer_service


async def run(settings: TransferSettings, stop: asyncio.Event | None = None) -> None:
    await run_transfer_service(settings, "s3", factory_maker("s3", settings), stop)
