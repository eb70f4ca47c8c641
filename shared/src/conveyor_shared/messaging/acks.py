"""What a consumer does with the messages it received (deletes, visibility
changes), sent to SQS ten at a time.

Each call is queued and goes out with ``DeleteMessageBatch`` or
``ChangeMessageVisibilityBatch`` once ten are pending or ``linger`` seconds
after the first of them, whichever comes first: a burst of finished handlers
costs one request per ten messages instead of one each, and a lone message
waits no more than the linger. Entries SQS failed on its side
(``SenderFault`` false), and whole requests that failed in transit, are sent
again a few times (stamina's back-off); an entry SQS refused for what it is
(an expired receipt handle, a message no longer in flight) is not.

Each call returns a future of its outcome: ``None`` once SQS applied it,
else SQS's error code. A caller that stops waiting (its future cancelled)
before the batch went out drops its entry: a visibility extension nobody
waits for any more is not sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import stamina
import structlog
from botocore.exceptions import BotoCoreError, ClientError

log = structlog.get_logger("conveyor.consumer")

#: SQS takes at most ten entries per batch request.
MAX_ENTRIES = 10
#: The outcome of one entry: ``None`` when SQS applied it, else its error code.
Outcome = str | None
_RETRYABLE_STATUS = 500


class _EntriesLeft(Exception):
    """Some entries of a batch failed in a way another try may fix."""


@dataclass(frozen=True)
class _Pending:
    entry: dict[str, Any]
    outcome: asyncio.Future[Outcome]


BatchCall = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]


class EntryBatcher:
    """One SQS batch API: entries queued, sent ten at a time or after a linger."""

    def __init__(self, call: BatchCall, operation: str, *, linger: float, attempts: int) -> None:
        self._call = call
        self._operation = operation
        self._linger = linger
        self._attempts = attempts
        self._pending: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._closing = False

    def submit(self, entry: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Queue ``entry`` (without its ``Id``); the future resolves once it was sent."""
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending = [p for p in self._pending if not p.outcome.done()]
        self._pending.append(_Pending(entry, outcome))
        if self._closing or len(self._pending) >= MAX_ENTRIES:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._flush)
        return outcome

    async def close(self) -> None:
        """Send everything still queued and wait for every batch in flight."""
        self._closing = True
        self._flush()
        while self._sending:
            await asyncio.gather(*self._sending)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [p for p in self._pending if not p.outcome.done()]
        self._pending = []
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        waiting = {str(i): pending for i, pending in enumerate(batch)}
        codes: dict[str, str] = {}
        try:
            async for attempt in stamina.retry_context(
                on=_EntriesLeft,
                attempts=self._attempts,
                timeout=None,
                wait_initial=0.1,
                wait_max=2.0,
            ):
                with attempt:
                    codes = await self._attempt(waiting)
                    if waiting:
                        log.warning(
                            "sqs.batch_entries_failed",
                            operation=self._operation,
                            entries=len(waiting),
                            codes=sorted(set(codes.values())),
                            attempt=attempt.num,
                        )
                        raise _EntriesLeft(self._operation)
        except _EntriesLeft:
            pass  # the attempts ran out: each entry gets its last error
        finally:
            # Also when this send is cancelled: nobody waits forever.
            for entry_id, pending in waiting.items():
                _resolve(pending, codes.get(entry_id, "NotSent"))

    async def _attempt(self, waiting: dict[str, _Pending]) -> dict[str, str]:
        """Send what is ``waiting``; resolve and remove what is final; return
        the error codes of the entries worth another try (left in ``waiting``)."""
        for entry_id in [i for i, p in waiting.items() if p.outcome.done()]:
            del waiting[entry_id]  # nobody waits for it any more
        if not waiting:
            return {}
        entries = [{"Id": entry_id, **p.entry} for entry_id, p in waiting.items()]
        try:
            reply = await self._call(entries)
        except (BotoCoreError, ClientError) as exc:
            code = _error_code(exc)
            if _worth_retrying(exc):
                return dict.fromkeys(waiting, code)
            refused = list(waiting.values())
            waiting.clear()
            if len(refused) == 1:
                _resolve(refused[0], code)
            else:
                # One entry can make SQS refuse the whole request (moto does,
                # for a visibility beyond 12 hours): its neighbours go alone.
                await asyncio.gather(*(self._send([pending]) for pending in refused))
            return {}
        for done in reply.get("Successful", []):
            _resolve(waiting.pop(done["Id"]), None)
        retry: dict[str, str] = {}
        for failed in reply.get("Failed", []):
            if failed.get("SenderFault", True):
                _resolve(waiting.pop(failed["Id"]), str(failed.get("Code", "SenderFault")))
            else:
                retry[failed["Id"]] = str(failed.get("Code", "ServerFault"))
        return retry


def _resolve(pending: _Pending, outcome: Outcome) -> None:
    if not pending.outcome.done():
        pending.outcome.set_result(outcome)


def _error_code(exc: BotoCoreError | ClientError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _worth_retrying(exc: BotoCoreError | ClientError) -> bool:
    """A connection failure, throttling or a 5xx, after the client's own retries."""
    if isinstance(exc, BotoCoreError):
        return True
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return status >= _RETRYABLE_STATUS or "Throttl" in _error_code(exc)


class MessageAcks:
    """Deletes and visibility changes for one queue, each sent in batches."""

    def __init__(self, sqs: Any, queue_url: str, *, linger: float, attempts: int = 4) -> None:
        async def delete(entries: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, Any] = await sqs.delete_message_batch(
                QueueUrl=queue_url, Entries=entries
            )
            return reply

        async def change_visibility(entries: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, Any] = await sqs.change_message_visibility_batch(
                QueueUrl=queue_url, Entries=entries
            )
            return reply

        self._deletes = EntryBatcher(delete, "DeleteMessageBatch", linger=linger, attempts=attempts)
        self._visibility = EntryBatcher(
            change_visibility, "ChangeMessageVisibilityBatch", linger=linger, attempts=attempts
        )

    def delete(self, receipt_handle: str) -> asyncio.Future[Outcome]:
        return self._deletes.submit({"ReceiptHandle": receipt_handle})

    def change_visibility(self, receipt_handle: str, seconds: int) -> asyncio.Future[Outcome]:
        return self._visibility.submit(
            {"ReceiptHandle": receipt_handle, "VisibilityTimeout": seconds}
        )

    async def close(self) -> None:
        """Send every queued delete and visibility change; return once SQS answered."""
        await asyncio.gather(self._deletes.close(), self._visibility.close())
