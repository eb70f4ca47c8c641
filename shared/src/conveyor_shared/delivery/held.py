"""Duplicates held back for a file in flight, decided as soon as it settles (D4).

An upload whose content was being delivered when it arrived stays in the
pick-up, noted on the original's ledger entry (``heldDuplicates``), so that
it is not lost if the original then fails. Once the original settles, each
held duplicate goes back to the scanner as a ``pickup.recheck``: removed if
the original was delivered, sent if it failed. Nothing waits for the next
scheduled scan, which remains the safety net if this message is lost.

Pass ``release`` the entry as the settle returned it: a duplicate is only
held while the original is active (a conditional write), so the settled
entry lists every one held before the settle, and one that comes later is
decided by the scanner at once.
"""

from __future__ import annotations

from typing import Any

import structlog

from conveyor_shared.ledger.models import FileEntry
from conveyor_shared.messaging.models import PickupRecheck
from conveyor_shared.messaging.publisher import CommandSender

log = structlog.get_logger("conveyor.delivery")


class HeldDuplicates:
    def __init__(self, sqs: Any, scanner_queue_url: str) -> None:
        self._sender = CommandSender(sqs, scanner_queue_url)

    async def release(self, entry: FileEntry) -> None:
        """After ``entry`` settled (success or fail): ask the scanner to decide each
        duplicate that was held back for it. Does nothing when none was held."""
        held = {(h.key, h.version): h for h in entry.held_duplicates or []}
        if not held:
            return
        await self._sender.send_many(
            [
                PickupRecheck(bucket=entry.source_bucket, key=h.key, version=h.version)
                for h in held.values()
            ]
        )
        log.info(
            "file.held_duplicates_released",
            client_id=entry.client_id,
            content_id=entry.content_id,
            status=entry.status.value,
            keys=[h.key for h in held.values()],
        )
