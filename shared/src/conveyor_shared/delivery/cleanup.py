"""Deleting delivered versions from the pick-up, many to a request.

``after_delivery: delete`` (and ``archive``, once copied) removes exactly the
delivered version of each file. Versions settled within ``linger_seconds``
of each other in one bucket go out in one ``DeleteObjects`` request (up to
1000 keys) instead of a ``DeleteObject`` each, after the delivery was
settled and its message let go. What a stop leaves pending is sent by
``close``; a version whose delete was lost (a crash, a refused request)
stays in the pick-up, and the scanner, meeting it again, sees it delivered
and deletes it then (``recorder.py``): never sent twice, never lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from conveyor_shared.backends.s3 import version_id

log = structlog.get_logger("conveyor.delivery")

_MAX_KEYS = 1000


class PickupCleaner:
    def __init__(self, s3_client: Any, linger_seconds: float = 0.5) -> None:
        self._s3 = s3_client
        self._linger = linger_seconds
        self._pending: dict[str, list[dict[str, str]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def delete(self, bucket: str, key: str, version: str | None) -> None:
        """Delete ``key`` at ``version`` (its current object without one), soon."""
        target = {"Key": key}
        if vid := version_id(version):
            target["VersionId"] = vid
        batch = self._pending.setdefault(bucket, [])
        batch.append(target)
        if len(batch) >= _MAX_KEYS:
            self._flush(bucket)
        elif bucket not in self._timers:
            self._timers[bucket] = asyncio.get_running_loop().call_later(
                self._linger, self._flush, bucket
            )

    def _flush(self, bucket: str) -> None:
        if timer := self._timers.pop(bucket, None):
            timer.cancel()
        objects = self._pending.pop(bucket, [])
        if objects:
            task = asyncio.ensure_future(self._send(bucket, objects))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, bucket: str, objects: list[dict[str, str]]) -> None:
        try:
            response = await self._s3.delete_objects(
                Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
            )
        except Exception as exc:
            log.error(
                "pickup.cleanup_failed",
                bucket=bucket,
                keys=[o["Key"] for o in objects],
                error=str(exc),
                reason="left in the pick-up; the scanner removes them when it meets them",
            )
            return
        # A version already gone (an earlier attempt deleted it) is no failure.
        refused = [
            e for e in response.get("Errors", []) if not e.get("Code", "").startswith("NoSuch")
        ]
        for error in refused:
            log.error(
                "pickup.cleanup_failed",
                bucket=bucket,
                key=error.get("Key"),
                version=error.get("VersionId"),
                error=f"{error.get('Code')}: {error.get('Message')}",
            )
        log.info("pickup.cleaned", bucket=bucket, deleted=len(objects) - len(refused))

    async def close(self) -> None:
        """Send what is pending now and wait for every request sent."""
        for bucket in list(self._pending):
            self._flush(bucket)
        await asyncio.gather(*self._flushes, return_exceptions=True)
