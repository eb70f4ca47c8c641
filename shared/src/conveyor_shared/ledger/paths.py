"""Destination paths in the locks table: who is delivering to a path right now,
and how new the newest upload delivered there was.

Two uploads of one pick-up key are two files (two ledger entries) bound for
one destination path. Holding the path while a file goes there keeps their
bytes apart; remembering the newest delivered upload (by the time the
scanner recorded it) keeps an older one, retried late, from landing over a
correction. Both ride on the writes the lease needs anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor_shared.ledger.locks import Leases

#: How long a path remembers its newest delivery after the last one.
_REMEMBER_SECONDS = 90 * 86400


@dataclass(frozen=True)
class PathHold:
    #: Whether the path is ours now.
    held: bool
    #: When the newest upload delivered to this path was recorded, if any.
    newest_delivered: str | None = None


class DestinationPaths:
    def __init__(self, client: Any, table: str) -> None:
        self._leases = Leases(client, table)

    async def hold(self, name: str, owner: str, seconds: int) -> PathHold:
        """Take or renew path ``name`` for ``seconds``; not held if another owner has it."""
        item = await self._leases.take(name, owner, seconds, keep_seconds=_REMEMBER_SECONDS)
        return PathHold(False) if item is None else PathHold(True, item.get("newestDelivered"))

    async def release(self, name: str, owner: str, delivered: str | None = None) -> None:
        """Give the path back, if still ours; ``delivered`` records the upload
        just delivered there as the newest (it was checked on ``hold``)."""
        record = {"newestDelivered": delivered} if delivered is not None else None
        await self._leases.release(name, owner, record)
