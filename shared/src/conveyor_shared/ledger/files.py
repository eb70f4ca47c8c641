"""The file ledger (D4, D5, D7, D9): one entry per client and content identity.

State machine (docs/architecture.md has the picture):

    (none) --record_new--> processing/active --settle--> success | fail
    success | fail --reset_for_resend--> processing/active   (bypass, resend, retry of a fail)

Every write is conditional and the condition is what makes a retry or a
duplicate message harmless: two scanners recording the same file create one
entry; two workers holding the same transfer message cannot both claim it;
a file is settled exactly once (and so counted in its job once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import (
    condition_failed,
    from_item,
    now_iso,
    to_item,
    values,
)
from conveyor_shared.ledger.models import FileEntry, FileStatus

_LEASE = Lease()


_ACTIVE_INDEX = "active"
_JOB_INDEX = "byJob"


class FileLedger:
    def __init__(self, client: Any, files_table: str) -> None:
        self._db = client
        self.table = files_table

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
            "leaseOwner, leaseExpires, lastError, errorKind, deliveredTo, "
            "deliveredAt, bytesDone, progressAt, verifiedBy"
        )
        result = await self._update(
            self._key(entry.client_id, entry.content_id),
            UpdateExpression=f"SET {assignments} REMOVE {removals}",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values({**{f":{k}": v for k, v in fresh.items()}, **bound}),
        )
        return result is not None

    # --- transferring (transfer services) -------------------------------------------------

    async def claim(
        self,
        client_id: str,
        content_id: str,
        job_id: str,
        owner: str,
        lease_seconds: int,
        max_attempts: int | None = None,
    ) -> FileEntry | None:
        """Take the transfer of a ``processing`` file, counting one send attempt.

        ``owner`` is a token made for this one claim (``claims.new_owner``), so
        a message redelivered while its first receiver still holds the file
        waits for that lease to end instead of sharing it. Returns None
        (nothing changed) when the file is settled, belongs to another job, or
        another owner's lease is live, or its ``max_attempts`` are used up.
        """
        condition = Clause(
            "#s = :processing AND jobId = :job",
            {"#s": "status"},
            {":processing": FileStatus.PROCESSING.value, ":job": job_id},
        ) & _LEASE.takeable_by(owner)
        if max_attempts is not None:
            condition = condition & Clause("sendAttempts < :max", values={":max": max_attempts})
        take = _LEASE.assign(owner, lease_seconds)
        return await self._update(
            self._key(client_id, content_id),
            UpdateExpression=f"SET {take.text} ADD sendAttempts :one",
            ConditionExpression=condition.text,
            ExpressionAttributeNames={**condition.names, **take.names},
            ExpressionAttributeValues=values({**condition.values, **take.values, ":one": 1}),
        )

    async def claim_ended(self, holder: str, owner: str) -> bool:
        """Whether the claim ``owner`` made on file ``holder`` (``client/content``)
        has ended: the file settled, was released, or is another owner's now."""
        client_id, _, content_id = holder.partition("/")
        entry = await self.get(client_id, content_id)
        return entry is None or entry.lease_owner != owner

    def _held(self, owner: str) -> Clause:
        return _LEASE.held_by(owner) & Clause(
            "#s = :processing", {"#s": "status"}, {":processing": FileStatus.PROCESSING.value}
        )

    async def renew_lease(
        self,
        client_id: str,
        content_id: str,
        owner: str,
        lease_seconds: int,
        bytes_done: int | None = None,
    ) -> bool:
        """Extend ``owner``'s lease (recording progress if given); False if it was lost."""
        held = self._held(owner)
        extension = _LEASE.extension(lease_seconds)
        sets = [extension.text]
        bound: dict[str, Any] = {}
        if bytes_done is not None:
            sets += ["bytesDone = :done", "progressAt = :at"]
            bound |= {":done": bytes_done, ":at": now_iso()}
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression=f"SET {', '.join(sets)}",
            ConditionExpression=held.text,
            ExpressionAttributeNames={**held.names, **extension.names},
            ExpressionAttributeValues=values({**held.values, **extension.values, **bound}),
        )
        return result is not None

    async def record_progress(
        self, client_id: str, content_id: str, owner: str, bytes_done: int, lease_seconds: int
    ) -> bool:
        """Record bytes moved and extend the lease; False if the lease was lost."""
        return await self.renew_lease(client_id, content_id, owner, lease_seconds, bytes_done)

    async def release_claim(self, client_id: str, content_id: str, owner: str) -> bool:
        """Give back a claim whose attempt was interrupted on purpose (a graceful
        stop): the lease is freed and the attempt is not counted."""
        held = self._held(owner)
        removal = _LEASE.removal()
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression=f"REMOVE {removal.text} ADD sendAttempts :minus",
            ConditionExpression=held.text + " AND sendAttempts > :zero",
            ExpressionAttributeNames={**held.names, **removal.names},
            ExpressionAttributeValues=values({**held.values, ":minus": -1, ":zero": 0}),
        )
        return result is not None

    async def record_attempt_failure(
        self, client_id: str, content_id: str, owner: str, error: str, error_kind: str
    ) -> bool:
        """Record why an attempt failed (kept in ``attempts``, the file's history)
        and release the lease for the next attempt."""
        held = self._held(owner)
        removal = _LEASE.removal()
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET lastError = :error, errorKind = :kind, "
            "attempts = list_append(if_not_exists(attempts, :none), :attempt) "
            f"REMOVE {removal.text}",
            ConditionExpression=held.text,
            ExpressionAttributeNames={**held.names, **removal.names},
            ExpressionAttributeValues=values(
                {
                    **held.values,
                    ":error": error[:1000],
                    ":kind": error_kind,
                    ":none": [],
                    ":attempt": [{"at": now_iso(), "outcome": "failed", "error": error[:1000]}],
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
        verified_by: str | None = None,
        bytes_done: int | None = None,
    ) -> FileEntry | None:
        """Move a ``processing`` file to ``success`` or ``fail`` (D7); the entry as
        settled, or None, changing nothing, if it was already settled.

        With ``owner``, only the holder of the lease may settle; without, only
        while no live lease is held (a worker that took the file meanwhile
        decides its fate). The last progress report (``bytes_done``) and the
        attempt's record ride along, so a delivery costs no separate write for
        them. The caller then counts the file in its job
        (``JobCompletion.count``): only the one settle that succeeded does.
        """
        now = now_iso()
        attempt: dict[str, Any] = {"at": now, "outcome": status.value}
        sets = [
            "#s = :status",
            "active = :false",
            "#ts = :now",
            "attempts = list_append(if_not_exists(attempts, :none), :attempt)",
        ]
        bound: dict[str, Any] = {
            ":status": status.value,
            ":false": False,
            ":now": now,
            ":processing": FileStatus.PROCESSING.value,
            ":job": entry.job_id,
            ":none": [],
        }
        condition = Clause("#s = :processing AND jobId = :job") & (
            _LEASE.held_by(owner) if owner is not None else _LEASE.free()
        )
        if error is not None:
            sets += ["lastError = :error", "errorKind = :kind"]
            bound |= {":error": error[:1000], ":kind": error_kind or "unknown"}
            attempt["error"] = error[:1000]
        if delivered_to is not None:
            sets += ["deliveredTo = :to", "deliveredAt = :now"]
            bound[":to"] = delivered_to
        if verified_by is not None:
            sets.append("verifiedBy = :verified")
            bound[":verified"] = verified_by
            attempt["verifiedBy"] = verified_by
        if bytes_done is not None:
            sets.append("bytesDone = :done")
            bound[":done"] = bytes_done
        bound[":attempt"] = [attempt]
        removal = _LEASE.removal()
        return await self._update(
            self._key(entry.client_id, entry.content_id),
            UpdateExpression=f"SET {', '.join(sets)} REMOVE activeSince, {removal.text}",
            ConditionExpression=condition.text,
            ExpressionAttributeNames={
                "#s": "status",
                "#ts": "timestamp",
                **condition.names,
                **removal.names,
            },
            ExpressionAttributeValues=values({**bound, **condition.values}),
        )

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

    # --- duplicates held back while this file is in flight (scanner) ----------------------

    async def hold_duplicate(
        self, client_id: str, content_id: str, job_id: str, key: str, version: str
    ) -> bool:
        """Note on a file still in flight that an upload of the same content
        (``key`` at ``version``) waits for it to settle. False, changing
        nothing, if it is no longer in flight in ``job_id``: decide the
        duplicate now instead."""
        result = await self._update(
            self._key(client_id, content_id),
            UpdateExpression="SET heldDuplicates = list_append("
            "if_not_exists(heldDuplicates, :none), :held)",
            ConditionExpression="active = :true AND jobId = :job",
            ExpressionAttributeValues=values(
                {
                    ":none": [],
                    ":held": [{"key": key, "version": version}],
                    ":true": True,
                    ":job": job_id,
                }
            ),
        )
        return result is not None

    async def clear_held_duplicates(self, client_id: str, content_id: str) -> None:
        """Forget the held duplicates of a settled file (each was released);
        nothing happens while it is in flight again."""
        await self._update(
            self._key(client_id, content_id),
            UpdateExpression="REMOVE heldDuplicates",
            ConditionExpression="active = :false AND attribute_exists(heldDuplicates)",
            ExpressionAttributeValues=values({":false": False}),
        )
