"""The job ledger (D8, D11, D12): files picked up together for one client.

State machine:

    (none) --create--> forming --close(reserved)--> forming, closed
           --start(total)--> running --finish--> finished

Files are dispatched while their job is still ``forming`` (an open batch,
``ledger/batches.py``): a job only groups them for the two e-mails. Closing
fixes how many files were reserved in it; ``start`` fixes ``total`` once they
are all recorded and the start mail is out, so a finish (which needs
``running``) never comes before the start.

Each settled file is counted with one ``ADD`` (``count``), apart from the
file's own settle: a worker that dies between the two leaves the job short
of a count, and the health check finishes it from its files (``unfinished``
lists such jobs from a sparse index, never a scan). ``finish`` is
conditional on ``running``: of any number of workers settling the last
files at once, exactly one moves the job to ``finished``. A finished job is
kept ``retention_days`` (the table's TTL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import (
    condition_failed,
    epoch,
    from_item,
    now_iso,
    to_item,
    values,
)
from conveyor_shared.ledger.models import Job, JobStatus

_UNFINISHED_INDEX = "unfinished"
#: Who is closing and starting a job (``batch.due``).
_TURN = Lease(owner="closer", expires="closerExpires")


class JobLedger:
    def __init__(self, client: Any, table: str, retention_days: int = 90) -> None:
        self._db = client
        self.table = table
        self._retention = retention_days * 86400

    async def create(self, job: Job) -> bool:
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item({**job.to_attributes(), "unfinished": "1"}),
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

    async def close(self, job_id: str, reserved: int) -> Job | None:
        """Record that ``reserved`` files were reserved in the job's batch, which
        takes no more; the first close counts, a repeated one changes nothing
        (and returns the job as it is)."""
        closed = await self._update(
            job_id,
            UpdateExpression="SET reserved = :n, closedAt = :now",
            ConditionExpression="attribute_exists(jobId) AND attribute_not_exists(reserved)",
            ExpressionAttributeValues=values({":n": reserved, ":now": now_iso()}),
        )
        return closed or await self.get(job_id)

    async def take_turn(self, job_id: str, owner: str, seconds: int) -> bool:
        """Take (or renew) the job's closing for ``owner`` (one message's handler):
        while it lasts, another handler of the same job leaves it alone."""
        condition = Clause("attribute_exists(jobId)") & _TURN.takeable_by(owner)
        take = _TURN.assign(owner, seconds)
        taken = await self._update(
            job_id,
            UpdateExpression=f"SET {take.text}",
            ConditionExpression=condition.text,
            ExpressionAttributeNames={**condition.names, **take.names},
            ExpressionAttributeValues=values({**condition.values, **take.values}),
        )
        return taken is not None

    async def recorded(self, job_id: str, *, dispatched: int, given_back: int) -> None:
        """Mark ``dispatched`` files of the job recorded and sent, and
        ``given_back`` reserved in it but not recorded (duplicates)."""
        await self._update(
            job_id,
            UpdateExpression="ADD dispatched :sent, givenBack :back",
            ConditionExpression="attribute_exists(jobId)",
            ExpressionAttributeValues=values({":sent": dispatched, ":back": given_back}),
        )

    async def count(self, job_id: str, *, succeeded: int = 0, failed: int = 0) -> Job | None:
        """Count settled files of the job; the job after it."""
        return await self._update(
            job_id,
            UpdateExpression="ADD succeeded :ok, failed :failed",
            ConditionExpression="attribute_exists(jobId)",
            ExpressionAttributeValues=values({":ok": succeeded, ":failed": failed}),
        )

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

    async def finish(self, job_id: str) -> Job | None:
        """Move a ``running`` job, which the caller saw complete, to ``finished``.

        Counters only grow, so a job seen complete stays complete; the
        condition on ``running`` lets exactly one caller win.
        """
        return await self._update(
            job_id,
            UpdateExpression="SET #s = :finished, finishedAt = :now, #ttl = :ttl REMOVE unfinished",
            ConditionExpression="#s = :running",
            ExpressionAttributeNames={"#s": "status", "#ttl": "ttl"},
            ExpressionAttributeValues=values(
                {
                    ":finished": JobStatus.FINISHED.value,
                    ":running": JobStatus.RUNNING.value,
                    ":now": now_iso(),
                    ":ttl": epoch() + self._retention,
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
        """Jobs not yet ``finished``, oldest first (the sparse ``unfinished`` index)."""
        paginator = self._db.get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table,
            IndexName=_UNFINISHED_INDEX,
            KeyConditionExpression="unfinished = :one",
            ExpressionAttributeValues=values({":one": "1"}),
        ):
            for item in page.get("Items", []):
                yield Job.model_validate(from_item(item))
