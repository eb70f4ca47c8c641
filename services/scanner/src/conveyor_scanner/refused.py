"""Pick-up files whose names no destination can take (``keys.rejection``).

Each one is refused once: logged as an error (``pickup.rejected``, with the
key and the reason), reported to ops as a ``file.failed`` of the job
``<client id>-refused`` (the notifier already sends those; its once-only
record is keyed on the job and the content id, here the key and version),
and moved to ``conveyor-quarantine/<key>`` in the pick-up's bucket, which no
pick-up may contain (the routes validator refuses one that would). So no
later scan meets it again, and an operator finds it, unchanged, in one place.
"""

from __future__ import annotations

from typing import Any

import structlog
from botocore.exceptions import ClientError

from conveyor_shared.backends.s3 import S3Store, object_version
from conveyor_shared.config.models import Route
from conveyor_shared.config.validate import QUARANTINE_PREFIX
from conveyor_shared.delivery.destinations import destination_path
from conveyor_shared.errors import ConveyorError, NotFound
from conveyor_shared.messaging.models import FileFailed
from conveyor_shared.messaging.publisher import EventPublisher

log = structlog.get_logger("conveyor.scanner")


def printable(text: str) -> str:
    """``text`` with control characters escaped, for a message a person reads."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


class RefusedFiles:
    def __init__(self, s3_client: Any, publisher: EventPublisher) -> None:
        self._s3 = s3_client
        self._publisher = publisher

    async def refuse(self, route: Route, key: str, reason: str) -> None:
        """Report ``key`` to ops and move it out of the pick-up. Reported before
        it is moved: if the move fails (e.g. CopyObject's 5 GiB limit) the file
        stays, the next scan tries again, and ops still hear of it once."""
        bound = log.bind(client_id=route.client_id, key=key, reason=reason)
        bound.error("pickup.rejected")
        pickup = S3Store(self._s3, route.pickup.bucket)
        target = f"{QUARANTINE_PREFIX}{key}"
        try:
            head = await pickup.head(key)
            version = object_version(head)
            await self._publisher.publish(
                FileFailed(
                    job_id=f"{route.client_id}-refused",
                    client_id=route.client_id,
                    content_id=f"refused:{key}:{version}",
                    file_name=printable(destination_path(route, key)),
                    attempts=0,
                    error=f"refused: {reason}; moved to s3://{pickup.bucket}/{printable(target)}",
                )
            )
            source = {"Bucket": pickup.bucket, "Key": key}
            if head.get("VersionId"):
                source["VersionId"] = head["VersionId"]
            await self._s3.copy_object(Bucket=pickup.bucket, Key=target, CopySource=source)
            await pickup.delete(key, version=version)
        except NotFound:
            bound.info("pickup.gone", detail="deleted before it was quarantined")
            return
        except (ConveyorError, ClientError) as exc:
            bound.error("pickup.quarantine_failed", error=str(exc))
            return
        bound.warning("pickup.quarantined", to=f"s3://{pickup.bucket}/{target}")
