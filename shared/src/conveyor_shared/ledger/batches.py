"""A client's open batch, in the locks table (D8): which job the files arriving
now belong to, shared by every scanner replica.

Files are dispatched the moment they are recorded; the job only groups them
for the "job started" and "job finished" e-mails. One item per client,
``batch/<client id>``, names the open job and counts the files reserved in it:

* ``reserve`` adds files to the open job with one conditional update that
  also pushes its quiet deadline out. It fails once the batch is closed, full,
  quiet for ``quiet_seconds`` or open for ``max_wait_seconds`` - judged by
  DynamoDB against the caller's clock, so every replica applies one rule.
* ``open`` replaces a batch that no longer takes files with a new job;
  of two replicas opening at once, the conditional put lets one win and
  the other reserves in the winner's job.
* ``close`` marks the batch closed for job ``J`` and returns how many files
  were reserved in it; from then on every reservation fails, so the count
  is final. Files that were reserved but turned out not to be new
  (duplicates) are given back on the job (``JobLedger.give_back``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import condition_failed, from_item, to_item, values

#: How long a batch item outlives its last file (the locks table's TTL).
_KEEP_SECONDS = 7 * 86400


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class BatchRules:
    quiet_seconds: float
    max_wait_seconds: float
    max_files: int

    def open_until_ms(self, opened_ms: int, last_ms: int) -> int:
        """When a batch opened at ``opened_ms`` with its last file at ``last_ms`` closes."""
        return min(
            last_ms + int(self.quiet_seconds * 1000),
            opened_ms + int(max(self.max_wait_seconds, self.quiet_seconds) * 1000),
        )


@dataclass(frozen=True)
class Batch:
    job_id: str
    opened_ms: int
    last_ms: int
    files: int
    closed: bool = False

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Batch:
        return cls(
            job_id=item["jobId"],
            opened_ms=int(item["openedMs"]),
            last_ms=int(item["lastMs"]),
            files=int(item.get("files", 0)),
            closed=bool(item.get("closed", False)),
        )


class OpenBatches:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    @staticmethod
    def _key(client_id: str) -> dict[str, Any]:
        return to_item({"name": f"batch/{client_id}"})

    async def _update(self, client_id: str, **kwargs: Any) -> Batch | None:
        try:
            response = await self._db.update_item(
                TableName=self.table, Key=self._key(client_id), ReturnValues="ALL_NEW", **kwargs
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return Batch.from_item(from_item(response["Attributes"]))

    @staticmethod
    def _takes_files(rules: BatchRules, files: int, now: int) -> tuple[str, dict[str, Any]]:
        """The condition under which the batch item takes ``files`` more at ``now``."""
        return (
            "attribute_exists(jobId) AND attribute_not_exists(closed) AND #f <= :room "
            "AND lastMs > :quietSince AND openedMs > :openSince",
            {
                ":room": rules.max_files - files,
                ":quietSince": now - int(rules.quiet_seconds * 1000),
                ":openSince": now - int(max(rules.max_wait_seconds, rules.quiet_seconds) * 1000),
            },
        )

    async def reserve(self, client_id: str, files: int, rules: BatchRules) -> Batch | None:
        """Add ``files`` to the client's open batch; None if it takes no more."""
        now = now_ms()
        condition, bound = self._takes_files(rules, files, now)
        return await self._update(
            client_id,
            UpdateExpression="SET lastMs = :now, #ttl = :ttl ADD #f :files",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#f": "files", "#ttl": "ttl"},
            ExpressionAttributeValues=values(
                {**bound, ":now": now, ":files": files, ":ttl": now // 1000 + _KEEP_SECONDS}
            ),
        )

    async def open(
        self, client_id: str, job_id: str, files: int, rules: BatchRules
    ) -> tuple[bool, Batch | None]:
        """Make ``job_id`` the client's open batch with ``files`` in it, unless the
        current one still takes files. (True, the batch replaced) when this call
        opened it; (False, None) when another batch is open."""
        now = now_ms()
        still_open, bound = self._takes_files(rules, 1, now)
        try:
            response = await self._db.put_item(
                TableName=self.table,
                Item=to_item(
                    {
                        "name": f"batch/{client_id}",
                        "jobId": job_id,
                        "openedMs": now,
                        "lastMs": now,
                        "files": files,
                        "ttl": now // 1000 + _KEEP_SECONDS,
                    }
                ),
                ConditionExpression=f"NOT ({still_open})",
                ExpressionAttributeNames={"#f": "files"},
                ExpressionAttributeValues=values(bound),
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False, None
            raise
        old = response.get("Attributes")
        return True, Batch.from_item(from_item(old)) if old else None

    async def get(self, client_id: str) -> Batch | None:
        response = await self._db.get_item(
            TableName=self.table, Key=self._key(client_id), ConsistentRead=True
        )
        item = response.get("Item")
        return Batch.from_item(from_item(item)) if item else None

    async def close(self, client_id: str, job_id: str) -> Batch | None:
        """Close the batch of ``job_id``; it as closed (its count now final), or
        None if the client's open batch is another job (this one was replaced,
        and so already takes no files)."""
        return await self._update(
            client_id,
            UpdateExpression="SET closed = :true",
            ConditionExpression="jobId = :job",
            ExpressionAttributeValues=values({":true": True, ":job": job_id}),
        )
