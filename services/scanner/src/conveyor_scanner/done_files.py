"""Routes with ``trigger_on_done_file`` (D3): the batch a ``.done`` file releases."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import structlog

from conveyor_scanner.keys import is_folder_placeholder
from conveyor_scanner.recorder import JobRecorder
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.config.models import Route
from conveyor_shared.errors import NotFound

log = structlog.get_logger("conveyor.scanner")


class DoneFileBatches:
    """Routes with ``trigger_on_done_file`` (D3): nothing moves until
    ``<client id>.done`` appears; then everything in the pick-up that was there
    when it appeared is one job, and the ``.done`` is deleted after that job
    is recorded. A file that arrives after the ``.done`` waits for the next one."""

    def __init__(self, recorder: JobRecorder, s3_client: Any) -> None:
        self._recorder = recorder
        self._s3 = s3_client
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def take(self, route: Route) -> str | None:
        async with self._locks[route.client_id]:
            pickup = S3Store(self._s3, route.pickup.bucket)
            try:
                done = await pickup.stat(route.done_file_key)
            except NotFound:
                log.info("done_file.already_handled", client_id=route.client_id)
                return None
            keys = [
                info.path
                async for info in pickup.list(route.pickup.prefix)
                if info.path != route.done_file_key
                and not is_folder_placeholder(info.path)
                and (
                    info.modified is None or done.modified is None or info.modified <= done.modified
                )
            ]
            job_id = await self._recorder.record(route, keys) if keys else None
            await pickup.delete(route.done_file_key)
            log.info(
                "done_file.processed", client_id=route.client_id, job_id=job_id, files=len(keys)
            )
            return job_id
