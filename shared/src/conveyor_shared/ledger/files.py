"""The file ledger (D4, D5, D7, D9): one entry per client and content identity.

State machine (docs/architecture.md has the picture):

    (none) --record_new--> processing/active --settle--> success | fail
    success | fail --reset_for_resend--> processing/active   (bypass, resend, retry of a fail)

Every write is conditional and the condition is what makes a retry or a
duplicate message harmless: two scanners recording the same file create one
entry; two workers holding the same transfer message cannot both claim it;
a file is settled, and counted in its job, exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import (
    condition_failed,
    epoch,
    from_item,
    now_iso,
    to_item,
    values,
)
from conveyor_shared.ledger.models import FileEntry, FileStatus

_ACTIVE_INDEX = "active"
_JOB_INDEX = "byJob"


class FileLedger:
    def __init__(self, client: Any, files_table: str, jobs_table: str) -> None:
        self._db = client
        self.table = files_table
        self._jobs_table = jobs_table

    def _key(self, client_id: str, content_id: str) -> dict[str, Any]:
        return to_item({"clientId": client_id, "contentId": content_id})

    async def get(self, client_id: str, content_id: str) -> FileEntry | None:
        response = await self._db.get_item(
            TableName=self.table, Key=self._key(client_id, content_id), ConsistentRead=True
        )
        item = response.get("Item")
        return FileEntry.model_validate(from_item(item)) if item else None

    async def _update(self, key: dict[str, Any], **kwargs: Any) -> FileEntry | None:
        """A conditional update; ``None`` when its condition did not hold."""
        try:
            response = await self._db.update_item(
                TableName=self.table, Key=key, ReturnValues="ALL_NEW", **kwargs
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return FileEntry.model_validate(from_item(response["Attributes"]))

    # --- recording (scanner) --------------------------------------------------------------

    async def record_new(self, entry: FileEntry) -> bool:
        """Create ``entry`` unless its content is already recorded for its client.

        Returns False, changing nothing, when an entry exists.
        """
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item(entry.to_attributes()),
                ConditionExpression="attribute_not_exists(contentId)",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def reset_for_resend(self, entry: FileEntry, unless_version: str | None) -> bool:
        """Make a settled entry ``processing`` again, as a new file of ``entry.job_id`` (D5).

        Only a settled entry is reset, so a resend never races a live transfer;
        with ``unless_version``, an entry already reset for that same upload is
        left alone, which makes duplicate S3 events harmless under bypass.
        """
        condition = "active = :false"
        bound: dict[str, Any] = {":false": False}
        if unless_version is not None:
            condition += " AND (attribute_not_exists(sourceVersion) OR sourceVersion <> :version)"
            bound[":version"] = unless_version
        fresh = entry.to_attributes()
        fresh.pop("clientId"), fresh.pop("contentId")
        names = {f"#{k}": k for k in fresh}
        assignments = ", ".join(f"#{k} = :{k}" for k in fresh)
        removals = (
            "dispatchedAt, leaseOwner, leaseExpires, lastError, errorKind, deliveredTo, "
            "deliveredAt, bytesDone, progressAt"
        )
        result = await self._update(
            self._key(entry.client_id, entry.content_id),
            UpdateExpression=f"SET {assignments} REMOVE {removals}",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values({**{f":{k}": v for k, v in fresh.items()}, **bound}),
        )
        return result is not None

    async def mark_dispatched(self, client_id: str, content_id: str, job_id: str) -> bool:
        """Note that the transfer message was sent; False if it already was."""
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET dispatchedAt = :now",
            ConditionExpression="jobId = :job AND #s = :processing "
            "AND attribute_not_exists(dispatchedAt)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values(
                {":now": now_iso(), ":job": job_id, ":processing": FileStatus.PROCESSING.value}
            ),
        )
        return result is not None

    # --- transferring (transfer services) -------------------------------------------------

    async def claim(
        self, client_id: str, content_id: str, job_id: str, owner: str, lease_seconds: int
    ) -> FileEntry | None:
        """Take the transfer of a ``processing`` file, counting one send attempt.

        ``owner`` is the SQS message id, so the same message redelivered after
        a crash reclaims at once, while a duplicate message must wait for the
        lease to expire. Returns None (nothing changed) when the file is
        settled, belongs to another job, or another owner's lease is live.
        """
        now = epoch()
        return await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET leaseOwner = :owner, leaseExpires = :expires "
            "ADD sendAttempts :one",
            ConditionExpression="#s = :processing AND jobId = :job AND (attribute_not_exists("
            "leaseOwner) OR leaseOwner = :owner OR leaseExpires < :now)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values(
                {
                    ":owner": owner,
                    ":expires": now + lease_seconds,
                    ":one": 1,
                    ":job": job_id,
                    ":processing": FileStatus.PROCESSING.value,
                    ":now": now,
                }
            ),
        )

    async def record_progress(
        self, client_id: str, content_id: str, owner: str, bytes_done: int, lease_seconds: int
    ) -> bool:
        """Record bytes moved and extend the lease; False if the lease was lost."""
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET bytesDone = :done, progressAt = :at, leaseExpires = :expires",
            ConditionExpression="leaseOwner = :owner AND #s = :processing",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values(
                {
                    ":done": bytes_done,
                    ":at": now_iso(),
                    ":expires": epoch() + lease_seconds,
                    ":owner": owner,
                    ":processing": FileStatus.PROCESSING.value,
                }
            ),
        )
        return result is not None

    async def record_attempt_failure(
        self, client_id: str, content_id: str, owner: str, error: str, error_kind: str
    ) -> bool:
        """Record why an attempt failed and release the lease for the next attempt."""
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET lastError = :error, errorKind = :kind "
            "REMOVE leaseOwner, leaseExpires",
            ConditionExpression="leaseOwner = :owner AND #s = :processing",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values(
                {
                    ":error": error[:1000],
                    ":kind": error_kind,
                    ":owner": owner,
                    ":processing": FileStatus.PROCESSING.value,
                }
            ),
        )
        return result is not None

    async def settle(
        self,
        entry: FileEntry,
        status: FileStatus,
        *,
        owner: str | None = None,
        error: str | None = None,
        error_kind: str | None = None,
        delivered_to: str | None = None,
    ) -> bool:
        """Move a ``processing`` file to ``success`` or ``fail`` and count it in its job,
        in one transaction (D7). False, changing nothing, if it was already settled.

        With ``owner``, only the holder of the lease may settle.
        """
        now = now_iso()
        sets = ["#s = :status", "active = :false", "#ts = :now"]
        bound: dict[str, Any] = {
            ":status": status.value,
            ":false": False,
            ":now": now,
            ":processing": FileStatus.PROCESSING.value,
            ":job": entry.job_id,
        }
        condition = "#s = :processing AND jobId = :job"
        if owner is not None:
            condition += " AND leaseOwner = :owner"
            bound[":owner"] = owner
        if error is not None:
            sets += ["lastError = :error", "errorKind = :kind"]
            bound |= {":error": error[:1000], ":kind": error_kind or "unknown"}
        if delivered_to is not None:
            sets += ["deliveredTo = :to", "deliveredAt = :now"]
            bound[":to"] = delivered_to
        counter = "succeeded" if status is FileStatus.SUCCESS else "failed"
        try:
            await self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(entry.client_id, entry.content_id),
                            "UpdateExpression": f"SET {', '.join(sets)} "
                            "REMOVE activeSince, leaseOwner, leaseExpires",
                            "ConditionExpression": condition,
                            "ExpressionAttributeNames": {"#s": "status", "#ts": "timestamp"},
                            "ExpressionAttributeValues": values(bound),
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._jobs_table,
                            "Key": to_item({"jobId": entry.job_id}),
                            "UpdateExpression": f"ADD {counter} :one",
                            "ConditionExpression": "attribute_exists(jobId)",
                            "ExpressionAttributeValues": values({":one": 1}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    # --- reading --------------------------------------------------------------------------

    async def _query(self, **kwargs: Any) -> AsyncIterator[FileEntry]:
        paginator = self._db.get_paginator("query")
        async for page in paginator.paginate(TableName=self.table, **kwargs):
            for item in page.get("Items", []):
                yield FileEntry.model_validate(from_item(item))

    async def files_of_job(self, job_id: str) -> list[FileEntry]:
        """Every entry of a job, read from the ``byJob`` index (eventually consistent)."""
        return [
            entry
            async for entry in self._query(
                IndexName=_JOB_INDEX,
                KeyConditionExpression="jobId = :job",
                ExpressionAttributeValues=values({":job": job_id}),
            )
        ]

    async def active_since_before(self, client_id: str, cutoff_iso: str) -> list[FileEntry]:
        """Entries of ``client_id`` active since before ``cutoff_iso`` (sparse index, D9)."""
        return [
            entry
            async for entry in self._query(
                IndexName=_ACTIVE_INDEX,
                KeyConditionExpression="clientId = :client AND activeSince < :cutoff",
                ExpressionAttributeValues=values({":client": client_id, ":cutoff": cutoff_iso}),
            )
        ]

    async def files_of_client(self, client_id: str) -> list[FileEntry]:
        return [
            entry
            async for entry in self._query(
                KeyConditionExpression="clientId = :client",
                ExpressionAttributeValues=values({":client": client_id}),
            )
        ]
