"""One resumable upload session, chunk by chunk (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import stamina
import structlog
from yarl import URL

from conveyor_shared.backends.gcs.client import (
    ABORT_TIMEOUT,
    Reply,
    info_from_resource,
)
from conveyor_shared.backends.gcs.errors import (
    SESSION,
    SessionLost,
)

if TYPE_CHECKING:
    from conveyor_shared.backends.gcs.store import GcsStore
from conveyor_shared.errors import (
    IntegrityError,
    TransientError,
)
from conveyor_shared.transfer.protocols import ObjectInfo

log = structlog.get_logger("conveyor.gcs")


class _Window:
    """Bytes written but not yet committed by GCS, kept as views of the
    caller's own buffers (no copies), with their offsets in the object."""

    def __init__(self) -> None:
        self._pieces: deque[memoryview] = deque()
        #: Offset of the first byte held; GCS has committed everything before it.
        self.start = 0
        #: Offset just past the last byte written.
        self.end = 0
        self._grew = asyncio.Event()

    def append(self, piece: memoryview) -> None:
        if piece:
            self._pieces.append(piece)
            self.end += len(piece)
            self._grew.set()

    def release(self, offset: int) -> None:
        """Forget the bytes before ``offset``: GCS holds them."""
        while self._pieces and self.start < offset:
            head = self._pieces[0]
            if len(head) <= offset - self.start:
                self._pieces.popleft()
                self.start += len(head)
            else:
                self._pieces[0] = head[offset - self.start :]
                self.start = offset

    def views(self, start: int, end: int) -> Iterator[memoryview]:
        """The held bytes in ``[start, end)``, which must lie within the window."""
        position = self.start
        for piece in list(self._pieces):
            low, high = max(start - position, 0), min(end - position, len(piece))
            if low < high:
                yield piece[low:high]
            position += len(piece)
            if position >= end:
                return

    async def stream(self, start: int, end: int) -> AsyncIterator[memoryview]:
        """``[start, end)`` as it is written, waiting for bytes not written yet."""
        offset = start
        while offset < end:
            if self.end <= offset:
                self._grew.clear()
                await self._grew.wait()
                continue
            for view in self.views(offset, min(end, self.end)):
                yield view
                offset += len(view)


async def _iterate(views: Iterable[memoryview]) -> AsyncIterator[memoryview]:
    for view in views:
        yield view


def _committed(reply: Reply) -> int:
    """How many bytes a 308 says GCS holds (``Range: bytes=0-N``; none without it)."""
    match = re.fullmatch(r"bytes=0-(\d+)", reply.headers.get("Range", "").strip())
    return int(match[1]) + 1 if match else 0


def _worth_resuming(exc: Exception) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, SessionLost | IntegrityError)


class GcsUpload:
    """One resumable upload session; see the module's docstring for the protocol."""

    def __init__(self, store: GcsStore, path: str, session: URL, size: int | None) -> None:
        self._store = store
        self._path = path
        self._session = session
        self._size = size
        self._what = f"upload {store.describe(path)}"
        self._window = _Window()
        #: End of the chunk now being written.
        self._chunk_end = store.chunk_size
        #: The current chunk's PUT, while it streams.
        self._streaming: asyncio.Task[Reply] | None = None
        #: A request failed: ask GCS how much it holds before sending more.
        self._lost = False
        self._finished = False

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``. Waits only when a chunk is complete and GCS has not yet
        acknowledged it; raises ``TransientError`` if GCS stays unreachable through
        every resume attempt, ``PermanentError`` if it refuses the upload."""
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk)).cast("B")
        while view:
            if self._window.end == self._chunk_end:
                # A byte beyond the chunk: it was not the last, so GCS must hold it all.
                await self._deliver(self._chunk_end, None)
                self._chunk_end += self._store.chunk_size
            room = self._chunk_end - self._window.end
            self._window.append(view[:room])
            view = view[room:]
            self._stream_if_not_last()

    def _stream_if_not_last(self) -> None:
        """Start sending the current chunk while it is written, unless it may be
        the object's last (a last chunk goes with the total, in ``commit``)."""
        if self._streaming is not None or self._size is None or self._chunk_end >= self._size:
            return
        start = self._window.start
        body = self._window.stream(start, self._chunk_end)
        self._streaming = asyncio.create_task(self._put(start, self._chunk_end, None, body))

    async def commit(self, expected: Mapping[str, str] | None = None) -> ObjectInfo:
        """Send the last chunk with the total; GCS creates the object atomically,
        replacing any object of that name, and returns its metadata.

        Raises ``IntegrityError`` if fewer or more bytes were written than ``begin``
        was told; the upload is then left for ``abort``. ``expected`` is not
        checked here: the object's ``md5Hash`` is returned for ``copy()`` to compare.
        """
        total = self._window.end
        if self._size is not None and total != self._size:
            raise IntegrityError(f"{self._what}: {total} bytes written, {self._size} declared")
        resource = await self._deliver(total, total)
        if resource is None:
            raise TransientError(f"{self._what}: GCS did not finish the object")
        self._finished = True
        return info_from_resource(self._path, resource, self._what)

    async def abort(self) -> None:
        """Cancel the session; whatever GCS held of it is discarded. Never raises."""
        if self._finished:
            return
        self._finished = True
        if self._streaming is not None:
            self._streaming.cancel()
            await asyncio.gather(self._streaming, return_exceptions=True)
        with contextlib.suppress(Exception):
            # GCS answers 499 to a cancelled session; the emulator, 501.
            await self._store.client.call(
                "DELETE", self._session, self._what, ok=range(100, 600), timeout=ABORT_TIMEOUT
            )
        log.info("gcs.upload_aborted", to=self._store.describe(self._path))

    async def _deliver(self, end: int, total: int | None) -> dict[str, Any] | None:
        """Return once GCS holds every byte before ``end`` (with ``total``: once it
        has created the object, whose resource is returned).

        A transient failure makes the next attempt ask GCS what it holds and
        resend the rest from the window, after a back-off. Raises the last
        error when every attempt failed.
        """
        pending, self._streaming = self._streaming, None
        async for attempt in stamina.retry_context(
            on=_worth_resuming,
            attempts=self._store.resume_attempts,
            timeout=None,
            wait_initial=0.5,
            wait_max=30.0,
        ):
            with attempt:
                try:
                    if pending is not None:
                        task, pending = pending, None
                        first = await task
                    elif self._lost:
                        first = await self._resume(end, total)
                    else:
                        first = await self._send(end, total)
                    return await self._until_held(first, end, total)
                except TransientError:
                    self._lost = True
                    raise
        raise AssertionError("stamina re-raises the last failure")

    async def _until_held(self, reply: Reply, end: int, total: int | None) -> dict[str, Any] | None:
        """Resend what GCS did not keep (it may commit less than a PUT carried)."""
        resource = self._acknowledge(reply, end, total)
        while resource is None and (total is not None or self._window.start < end):
            offset = self._window.start
            resource = self._acknowledge(await self._send(end, total), end, total)
            if resource is None and self._window.start == offset:
                raise TransientError(f"{self._what}: GCS kept none of bytes {offset}-{end - 1}")
        return resource

    async def _resume(self, end: int, total: int | None) -> Reply:
        """Ask the session what it holds (``bytes */*``; ``*/total`` once the total
        is known, which also finishes an upload whose last answer was lost)."""
        reply = await self._put(0, 0, total, None)
        self._lost = False
        held = _committed(reply) if reply.status == 308 else end
        log.warning(
            "gcs.upload_resumed",
            to=self._store.describe(self._path),
            committed=held,
            resending=max(end - held, 0),
        )
        return reply

    async def _send(self, end: int, total: int | None) -> Reply:
        start = self._window.start
        body = _iterate(self._window.views(start, end)) if end > start else None
        return await self._put(start, end, total, body)

    async def _put(
        self, start: int, end: int, total: int | None, body: AsyncIterator[memoryview] | None
    ) -> Reply:
        """PUT ``[start, end)`` of the object into the session; ``body`` None
        means no bytes: a status query, or the end of an object already sent."""
        size = "*" if total is None else str(total)
        span = f"{start}-{end - 1}" if body is not None else "*"
        return await self._store.client.call(
            "PUT",
            self._session,
            self._what,
            ok=(200, 201, 308),
            meanings=SESSION,
            headers={"Content-Range": f"bytes {span}/{size}", "Content-Length": str(end - start)},
            data=body,
        )

    def _acknowledge(self, reply: Reply, end: int, total: int | None) -> dict[str, Any] | None:
        """Drop what GCS now holds from the window; the object's resource once it exists."""
        if reply.status in (200, 201):
            if total is None:
                raise IntegrityError(f"{self._what}: GCS finished the object before its end")
            return reply.resource(self._what)
        held = _committed(reply)
        if not self._window.start <= held <= self._window.end:
            raise SessionLost(
                f"{self._what}: GCS holds {held} bytes, but bytes "
                f"{self._window.start}-{self._window.end} are all that can be resent"
            )
        self._window.release(held)
        return None
