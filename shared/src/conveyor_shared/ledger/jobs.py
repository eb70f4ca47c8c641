"""The job ledger (D8, D11, D12): files picked up together for one client.

State machine:

    (none) --create--> forming --start(total)--> running --finish--> finished

A job is created before its files are recorded, so every entry's ``jobId``
points at a job that exists. ``start`` fixes ``total``; only then are files
dispatched, so the counters can never reach ``total`` early. Counters are
incremented by ``FileLedger.settle`` in the same transaction as the file's
own status, so each file is counted once. ``finish`` is conditional on
``running``: of any number of workers settling the last files at once,
exactly one moves the job to ``finished`` and publishes ``job.finished``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import condition_failed, from_item, now_iso, to_item, values
from conveyor_shared.ledger.models import Job, JobStatus


class JobLedger:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def create(self, job: Job) -> bool:
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item(job.to_attributes()),
                ConditionExpression="attribute_not_exists(jobId)",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def get(self, job_id: str) -> Job | None:
        response = await self._db.get_item(
            TableName=self.table, Key=to_item({"jobId": job_id}), ConsistentRead=True
        )
        item = response.get("Item")
        return Job.model_validate(from_item(item)) if item else None

    async def _update(self, job_id: str, **kwargs: Any) -> Job | None:
        try:
            response = await self._db.update_item(
                TableName=self.table,
                Key=to_item({"jobId": job_id}),
                ReturnValues="ALL_NEW",
                **kwargs,
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return Job.model_validate(from_item(response["Attributes"]))

    async def discard(self, job_id: str) -> None:
        """Delete a job that is still ``forming`` (it turned out to have no new file)."""
        try:
            await self._db.delete_item(
                TableName=self.table,
                Key=to_item({"jobId": job_id}),
                ConditionExpression="#s = :forming",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values({":forming": JobStatus.FORMING.value}),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    async def start(self, job_id: str, total: int) -> Job | None:
        """Fix the job's file count and let its files be dispatched."""
        return await self._update(
            job_id,
            UpdateExpression="SET #s = :running, #t = :total",
            ConditionExpression="#s = :forming",
            ExpressionAttributeNames={"#s": "status", "#t": "total"},
            ExpressionAttributeValues=values(
                {
                    ":running": JobStatus.RUNNING.value,
                    ":forming": JobStatus.FORMING.value,
                    ":total": total,
                }
            ),
        )

    async def finish_if_complete(self, job_id: str) -> Job | None:
        """Move a complete ``running`` job to ``finished``.

        Returns the job only to the one caller whose write made the change.
        """
        job = await self.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or not job.complete:
            return None
        return await self.finish(job_id)

    async def finish(self, job_id: str) -> Job | None:
        """Move a ``running`` job, which the caller saw complete, to ``finished``.

        Counters only grow, so a job seen complete stays complete; the
        condition on ``running`` lets exactly one caller win.
        """
        return await self._update(
            job_id,
            UpdateExpression="SET #s = :finished, finishedAt = :now",
            ConditionExpression="#s = :running",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values(
                {
                    ":finished": JobStatus.FINISHED.value,
                    ":running": JobStatus.RUNNING.value,
                    ":now": now_iso(),
                }
            ),
        )

    async def mark_published(self, job_id: str, event: Literal["started", "finished"]) -> bool:
        """Record that ``job.<event>`` went out; False if it already had."""
        attribute = f"{event}PublishedAt"
        result = await self._update(
            job_id,
            UpdateExpression=f"SET {attribute} = :now",
            ConditionExpression=f"attribute_not_exists({attribute})",
            ExpressionAttributeValues=values({":now": now_iso()}),
        )
        return result is not None

    async def jobs_of_client(self, client_id: str, limit: int = 50) -> list[Job]:
        """The client's most recent jobs, newest first."""
        response = await self._db.query(
            TableName=self.table,
            IndexName="byClient",
            KeyConditionExpression="clientId = :client",
            ExpressionAttributeValues=values({":client": client_id}),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [Job.model_validate(from_item(i)) for i in response.get("Items", [])]

    async def unfinished(self) -> AsyncIterator[Job]:
        """Jobs not yet ``finished`` (a scan; run by the periodic health check only)."""
        paginator = self._db.get_paginator("scan")
        async for page in paginator.paginate(
            TableName=self.table,
            FilterExpression="#s <> :finished",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values({":finished": JobStatus.FINISHED.value}),
        ):
            for item in page.get("Items", []):
                yield Job.model_validate(from_item(item))
