"""Leases provider sync holds while it works: one poll per source, one fetch
per remote path, and at most ``max_sessions`` connections per server across
every replica (S1). All are ``Leases`` items in the locks table, renewed
while the work runs, so a crashed holder's lease simply expires."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import structlog

from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.claims import new_owner
from conveyor_shared.ledger.locks import Leases

log = structlog.get_logger("conveyor.provider_sync")


class Busy(Exception):
    """Someone else holds the lease (or every connection slot)."""


@contextlib.asynccontextmanager
async def holding(
    leases: Leases, name: str, seconds: int, record: dict[str, Any] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Hold lease ``name`` for the block, renewing it every third of its
    length; yields the lease item as it was taken. Raises ``Busy``.
    ``record`` is set on the item when the lease is given back."""
    owner = new_owner()
    item = await leases.take(name, owner, seconds)
    if item is None:
        raise Busy(name)

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                kept = await leases.acquire(name, owner, seconds)
            except Exception as exc:  # a blip: the lease still has two thirds to run
                log.warning("lease.renew_failed", lease=name, error=str(exc))
                continue
            if not kept:
                # Expired and taken: the work goes on, and its conditional
                # ledger writes keep a second holder harmless.
                log.warning("lease.lost", lease=name)
                return

    renewer = asyncio.create_task(renew())
    try:
        yield item
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await leases.release(name, owner, record)


@contextlib.asynccontextmanager
async def connection_slot(
    leases: Leases, source: ProviderSource, seconds: int
) -> AsyncIterator[None]:
    """One of the source's ``max_sessions`` connection slots. Raises ``Busy``
    when all are taken."""
    slots = list(range(source.max_sessions))
    random.shuffle(slots)  # replicas spread over the slots instead of racing for slot 0
    async with contextlib.AsyncExitStack() as stack:
        for slot in slots:
            with contextlib.suppress(Busy):
                await stack.enter_async_context(
                    holding(leases, f"sync-session#{source.id}#{slot}", seconds)
                )
                break
        else:
            raise Busy(f"all {source.max_sessions} connection slots of {source.id} are in use")
        yield
