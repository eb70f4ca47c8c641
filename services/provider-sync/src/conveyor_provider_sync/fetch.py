"""One fetch of one remote file (S2 to S4, S6).

Under a lease on the path, so one replica copies it at a time:

1. stat it: gone -> ``source_deleted``; changed since the poll -> nothing
   (the next poll sees the change and waits for it to settle);
2. stream it into a staged multipart upload, hashing while streaming;
3. stat it again: changed or gone during the copy -> discard the copy;
4. the same content already received -> recorded as seen, not stored again;
   else copied server-side to its immutable key and recorded once
   (``attribute_not_exists``); a duplicate from a race is removed;
5. hand off, then ``after_copy: delete`` removes it from the server.

The staged object is always removed. A failure anywhere raises, and the
message is retried with back-off, then dead-lettered like a delivery.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum

import structlog

from conveyor_provider_sync.handoff import HandOff
from conveyor_provider_sync.landing import Staged, final_key, promote, stage
from conveyor_provider_sync.leases import connection_slot, holding
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.errors import NotFound
from conveyor_shared.ledger.dynamo import now_iso
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.received import (
    Look,
    PathState,
    PathStatus,
    ReceivedLedger,
    ReceivedVersion,
)
from conveyor_shared.sync.detect import look_of, same_listing
from conveyor_shared.sync.messages import FetchRequested
from conveyor_shared.sync.remote import Remover, SourceOpener
from conveyor_shared.transfer.protocols import Source

log = structlog.get_logger("conveyor.provider_sync")


class Outcome(StrEnum):
    STORED = "stored"
    #: The same content as a version already received.
    SEEN = "seen"
    #: A duplicate request for a look already recorded.
    ALREADY = "already_recorded"
    #: Different from the poll's listing: the next poll decides.
    CHANGED = "changed_since_listed"
    #: Changed while being copied: the copy was thrown away.
    DISCARDED = "discarded"
    SOURCE_DELETED = "source_deleted"


@dataclass(frozen=True)
class Stores:
    """The landing bucket's store (staging and final keys) for a source."""

    s3: object
    part_size: int
    parts_in_flight: int

    def for_source(self, source: ProviderSource) -> S3Store:
        return S3Store(
            self.s3,
            source.landing.bucket,
            part_size=self.part_size,
            parts_in_flight=self.parts_in_flight,
        )


class SourceFetch:
    def __init__(
        self,
        *,
        leases: Leases,
        ledger: ReceivedLedger,
        opener: SourceOpener,
        stores: Stores,
        handoff: HandOff,
        lease_seconds: int,
    ) -> None:
        self._leases = leases
        self._ledger = ledger
        self._opener = opener
        self._stores = stores
        self._handoff = handoff
        self._lease_seconds = lease_seconds

    async def run(self, source: ProviderSource, request: FetchRequested) -> Outcome:
        """Raises ``Busy`` if another replica fetches this path, or every
        connection slot of the source is taken."""
        log_ = log.bind(source=source.id, file=request.path)
        async with holding(
            self._leases, f"sync-fetch#{source.id}#{request.path}", self._lease_seconds
        ):
            state = await self._ledger.state(source.id, request.path)
            if state is None or (
                state.stored is not None
                and state.stored_first_seen is not None
                and state.stored_first_seen >= request.looked_at
            ):
                if state is not None and source.after_copy == "delete":
                    await self._remove_stored(source, state)
                log_.info("fetch.skipped", outcome=Outcome.ALREADY)
                return Outcome.ALREADY
            async with (
                connection_slot(self._leases, source, self._lease_seconds),
                self._opener.open(source) as remote,
            ):
                outcome = await self._fetch(source, remote, request)
        log_.info("fetch.done", outcome=outcome)
        return outcome

    async def _fetch(
        self, source: ProviderSource, remote: Source, request: FetchRequested
    ) -> Outcome:
        before = await self._look(remote, request.path)
        if before is None:
            return await self._gone(source, request.path)
        if not same_listing(before, request.look, source.zone):
            return Outcome.CHANGED
        store = self._stores.for_source(source)
        staged = await stage(store, source, remote, request.path, before.size)
        try:
            after = await self._look(remote, request.path)
            if after is None or after.size != staged.size or not same_listing(after, before):
                log.warning(
                    "fetch.discarded",
                    source=source.id,
                    file=request.path,
                    reason="the file changed while it was copied; the next poll retries",
                )
                return Outcome.DISCARDED
            version, outcome = await self._record(source, store, request, staged)
            await self._ledger.note_stored(after, request.looked_at, version)
        finally:
            await store.delete(staged.key)
        await self._handoff.deliver(source, version)
        if source.after_copy == "delete":
            await self._remove(source, remote, request.path)
        return outcome

    async def _look(self, remote: Source, path: str) -> Look | None:
        try:
            return look_of(await remote.stat(path))
        except NotFound:
            return None

    async def _gone(self, source: ProviderSource, path: str) -> Outcome:
        state = await self._ledger.state(source.id, path)
        if state is not None and state.status is PathStatus.PRESENT:
            await self._ledger.mark_deleted(state)
            log.info("file.source_deleted", source=source.id, file=path)
        return Outcome.SOURCE_DELETED

    async def _record(
        self, source: ProviderSource, store: S3Store, request: FetchRequested, staged: Staged
    ) -> tuple[ReceivedVersion, Outcome]:
        known = await self._ledger.version(source.id, request.path, staged.sha256)
        if known is not None:
            await self._ledger.note_seen(known)
            return known, Outcome.SEEN
        key = final_key(source, request.path, request.looked_at, staged.sha256)
        await promote(store, staged, key)
        ours = ReceivedVersion(
            source=source.id,
            path=request.path,
            sha256=staged.sha256,
            size=staged.size,
            modified=request.look.modified,
            first_seen=request.looked_at,
            stored_at=now_iso(),
            uri=store.describe(key),
        )
        recorded = await self._ledger.put_version(ours)
        if recorded.uri != ours.uri:
            # Another fetch of the same content won the record: ours is a
            # duplicate nobody refers to.
            await store.delete(key)
            return recorded, Outcome.SEEN
        return recorded, Outcome.STORED

    async def _remove_stored(self, source: ProviderSource, state: PathState) -> None:
        """A retried fetch whose copy is recorded, but whose removal may have
        failed: remove the file if its copy was handed off and it is still
        what was stored (a newer version on the server is never removed unseen)."""
        if state.stored is None or state.stored_sha256 is None:
            return
        version = await self._ledger.version(source.id, state.path, state.stored_sha256)
        if version is None or version.handed_off_at is None:
            return
        async with (
            connection_slot(self._leases, source, self._lease_seconds),
            self._opener.open(source) as remote,
        ):
            now = await self._look(remote, state.path)
            if now is not None and same_listing(now, state.stored, source.zone):
                await self._remove(source, remote, state.path)

    async def _remove(self, source: ProviderSource, remote: Source, path: str) -> None:
        if not isinstance(remote, Remover):
            log.warning(
                "after_copy.unsupported", source=source.id, reason="this backend cannot delete"
            )
            return
        with contextlib.suppress(NotFound):
            await remote.delete(path)
        log.info("file.removed_from_source", source=source.id, file=path)
