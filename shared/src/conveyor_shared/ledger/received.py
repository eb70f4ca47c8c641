"""The received ledger (S2, S3): what provider sync knows of each remote path,
and every version it ever copied, in the ``<stack>-received`` table.

One partition per source (``source``); in it

* ``path#<remote path>``: the path's state. The poll writes the *look*
  (size, time and its precision as last listed, when that look began, whether
  a fetch was asked for) and ``status``; the fetch writes the *stored*
  attributes (what the last copy was of). Unchanged files cost no writes.
* ``version#<remote path>#<sha256>``: one received version, put once with
  ``attribute_not_exists``, so two replicas copying the same content store it
  once. The same content seen again only updates ``lastSeenAt``.

Every write is conditional; the condition is what makes a retry, a duplicate
message or a second replica harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from conveyor_shared.ledger.dynamo import condition_failed, from_item, now_iso, to_item, values

#: The index of versions by source and ``storedAt`` (deploy/conveyor.yaml).
STORED_AT_INDEX = "byStoredAt"


class PathStatus(StrEnum):
    PRESENT = "present"
    #: Gone from the server; our copies stay (S3).
    SOURCE_DELETED = "source_deleted"


class _Item(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Look(_Item):
    """A file as one listing showed it. ``modified`` is UTC ISO 8601 and
    ``precision`` says which part of it the server vouched for."""

    size: int
    modified: str
    precision: str


class PathState(_Item):
    source: str
    path: str
    status: PathStatus = PathStatus.PRESENT
    #: What the latest listing showed, and since when it has looked like that.
    look: Look
    looked_at: str
    fetch_requested_at: str | None = None
    deleted_at: str | None = None
    #: The listing the last stored (or seen) copy was taken at, and its content.
    stored: Look | None = None
    stored_sha256: str | None = None
    stored_uri: str | None = None
    stored_first_seen: str | None = None


class ReceivedVersion(_Item):
    """One version of one remote file, as copied into the landing."""

    source: str
    path: str
    sha256: str
    size: int
    modified: str
    #: When this version was first listed; part of its immutable key.
    first_seen: str
    stored_at: str
    uri: str
    outcome: str = "stored"
    last_seen_at: str | None = None
    times_seen: int = 1
    handed_off_at: str | None = None


def _path_key(source: str, path: str) -> dict[str, Any]:
    return to_item({"source": source, "key": f"path#{path}"})


def _version_key(source: str, path: str, sha256: str) -> dict[str, Any]:
    return to_item({"source": source, "key": f"version#{path}#{sha256}"})


def _dump(look: Look) -> dict[str, Any]:
    return look.model_dump(by_alias=True)


class ReceivedLedger:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def states(self, source: str) -> AsyncIterator[PathState]:
        """Every path of ``source`` the ledger knows, in pages of the one partition."""
        paginator = self._db.get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="#s = :s AND begins_with(#k, :p)",
            ExpressionAttributeNames={"#s": "source", "#k": "key"},
            ExpressionAttributeValues=values({":s": source, ":p": "path#"}),
        ):
            for item in page.get("Items", []):
                yield PathState.model_validate(from_item(item))

    async def state(self, source: str, path: str) -> PathState | None:
        response = await self._db.get_item(
            TableName=self.table, Key=_path_key(source, path), ConsistentRead=True
        )
        item = response.get("Item")
        return PathState.model_validate(from_item(item)) if item else None

    async def note_look(
        self, source: str, path: str, look: Look, previous: PathState | None
    ) -> PathState | None:
        """Record a new look at ``path`` (a new file, a changed one, one back
        after deletion), if the state is still ``previous``; None if another
        poll changed it first (the next poll decides again)."""
        now = now_iso()
        state = PathState(source=source, path=path, look=look, looked_at=now)
        if previous is None:
            condition, names, vals = "attribute_not_exists(#k)", {"#k": "key"}, {}
        else:
            condition = "#lookedAt = :was"
            names, vals = {"#lookedAt": "lookedAt"}, {":was": previous.looked_at}
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=_path_key(source, path),
                UpdateExpression=(
                    "SET #path = :path, #status = :present, #look = :look, #lookedAt = :now "
                    "REMOVE #requested, #deletedAt"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    **names,
                    "#path": "path",
                    "#status": "status",
                    "#look": "look",
                    "#lookedAt": "lookedAt",
                    "#requested": "fetchRequestedAt",
                    "#deletedAt": "deletedAt",
                },
                ExpressionAttributeValues=values(
                    {
                        **vals,
                        ":path": path,
                        ":present": PathStatus.PRESENT.value,
                        ":look": _dump(look),
                        ":now": now,
                    }
                ),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        if previous is not None:
            state = previous.model_copy(
                update={
                    "look": look,
                    "looked_at": now,
                    "status": PathStatus.PRESENT,
                    "fetch_requested_at": None,
                    "deleted_at": None,
                }
            )
        return state

    async def note_fetch_requested(self, state: PathState) -> bool:
        """Mark that a fetch of the current look was asked for; False if the
        look changed meanwhile (or the fetch was already asked for)."""
        return await self._set_if_look(
            state, "SET #requested = :now", {"#requested": "fetchRequestedAt"}, {":now": now_iso()}
        )

    async def mark_deleted(self, state: PathState) -> bool:
        """``source_deleted`` with the time it was noticed; False if the state
        changed meanwhile (the file came back, another poll marked it)."""
        return await self._set_if_look(
            state,
            "SET #status = :deleted, #deletedAt = :now",
            {"#status": "status", "#deletedAt": "deletedAt"},
            {":deleted": PathStatus.SOURCE_DELETED.value, ":now": now_iso(), ":present": "present"},
            extra_condition="#status = :present",
        )

    async def _set_if_look(
        self,
        state: PathState,
        update: str,
        names: dict[str, str],
        vals: dict[str, Any],
        extra_condition: str | None = None,
    ) -> bool:
        condition = "#lookedAt = :was" + (f" AND {extra_condition}" if extra_condition else "")
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=_path_key(state.source, state.path),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={**names, "#lookedAt": "lookedAt"},
                ExpressionAttributeValues=values({**vals, ":was": state.looked_at}),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def version(self, source: str, path: str, sha256: str) -> ReceivedVersion | None:
        response = await self._db.get_item(
            TableName=self.table, Key=_version_key(source, path, sha256), ConsistentRead=True
        )
        item = response.get("Item")
        return ReceivedVersion.model_validate(from_item(item)) if item else None

    async def versions(self, source: str, path: str) -> list[ReceivedVersion]:
        """Every version of ``path`` received, oldest first."""
        paginator = self._db.get_paginator("query")
        found: list[ReceivedVersion] = []
        async for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="#s = :s AND begins_with(#k, :p)",
            ExpressionAttributeNames={"#s": "source", "#k": "key"},
            ExpressionAttributeValues=values({":s": source, ":p": f"version#{path}#"}),
        ):
            found += [ReceivedVersion.model_validate(from_item(i)) for i in page.get("Items", [])]
        return sorted(found, key=lambda v: v.first_seen)

    async def recent(
        self,
        source: str,
        *,
        limit: int,
        name: str | None = None,
        start: dict[str, Any] | None = None,
    ) -> tuple[list[ReceivedVersion], dict[str, Any] | None]:
        """One read of ``source``'s received versions, newest first, on the
        sparse ``byStoredAt`` index (only versions carry ``storedAt``): up to
        ``limit`` evaluated, those whose path contains ``name`` kept, and the
        key to start the next read at (None at the end)."""
        arguments: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STORED_AT_INDEX,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "source"},
            "ExpressionAttributeValues": values({":s": source}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if name:
            arguments["FilterExpression"] = "contains(#path, :name)"
            arguments["ExpressionAttributeNames"]["#path"] = "path"
            arguments["ExpressionAttributeValues"][":name"] = {"S": name}
        if start:
            arguments["ExclusiveStartKey"] = start
        response = await self._db.query(**arguments)
        found = [ReceivedVersion.model_validate(from_item(i)) for i in response.get("Items", [])]
        return found, response.get("LastEvaluatedKey")

    async def put_version(self, version: ReceivedVersion) -> ReceivedVersion:
        """Record ``version`` once. Returns the recorded version: this one, or
        the one already there for the same content (a duplicate fetch, another
        replica, content that came back), whose ``uri`` may differ."""
        item = {
            **_version_key(version.source, version.path, version.sha256),
            **to_item(version.model_dump(by_alias=True, exclude_none=True)),
        }
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": "key"},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            existing = await self.version(version.source, version.path, version.sha256)
            assert existing is not None  # versions are never deleted
            return existing
        return version

    async def note_seen(self, version: ReceivedVersion) -> None:
        """The same content listed again (time rewritten, or content back)."""
        await self._update_version(
            version,
            "SET #last = :now ADD #times :one",
            {"#last": "lastSeenAt", "#times": "timesSeen"},
            {":now": now_iso(), ":one": 1},
        )

    async def note_handed_off(self, version: ReceivedVersion) -> None:
        await self._update_version(
            version, "SET #handed = :now", {"#handed": "handedOffAt"}, {":now": now_iso()}
        )

    async def _update_version(
        self, version: ReceivedVersion, update: str, names: dict[str, str], vals: dict[str, Any]
    ) -> None:
        await self._db.update_item(
            TableName=self.table,
            Key=_version_key(version.source, version.path, version.sha256),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(#k)",
            ExpressionAttributeNames={**names, "#k": "key"},
            ExpressionAttributeValues=values(vals),
        )

    async def note_stored(self, look: Look, looked_at: str, version: ReceivedVersion) -> bool:
        """Set the path's stored listing to ``look`` (first listed at
        ``looked_at``) and its content to ``version``, unless a copy of a later
        look is recorded already (a slow fetch finishing after a newer one);
        False then."""
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=_path_key(version.source, version.path),
                UpdateExpression=("SET #stored = :look, #sha = :sha, #uri = :uri, #first = :first"),
                ConditionExpression=(
                    "attribute_exists(#k) AND (attribute_not_exists(#first) OR #first <= :first)"
                ),
                ExpressionAttributeNames={
                    "#k": "key",
                    "#stored": "stored",
                    "#sha": "storedSha256",
                    "#uri": "storedUri",
                    "#first": "storedFirstSeen",
                },
                ExpressionAttributeValues=values(
                    {
                        ":look": _dump(look),
                        ":sha": version.sha256,
                        ":uri": version.uri,
                        ":first": looked_at,
                    }
                ),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
