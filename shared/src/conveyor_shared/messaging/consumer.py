"""The SQS consumer loop every service runs (A3).

* long poll for up to ten messages at a time, never more than there are free
  handler slots (``MaxNumberOfMessages = min(10, free slots)``): the slots are
  taken before the receive and what it did not fill is given back;
* each message is handled in its own task, at most ``concurrency`` at once;
* while a handler runs, the message's visibility is extended in the
  background, so a 2 GB transfer is not handed to a second worker;
  if that extension fails for good (the receipt is no longer valid, or the
  message would become visible before the next try), the handler is
  cancelled: someone else may hold the message now;
* success, and only success, queues the message for deletion; failure leaves
  it for SQS to redeliver after a back-off, and the queue's redrive policy
  moves it to the dead-letter queue after ``maxReceiveCount`` receives;
* deletes and visibility changes (extensions, back-offs, releases) go out in
  batches of up to ten (``messaging/acks.py``), after at most
  ``linger_seconds``. A delete that still fails after its retries is logged
  and the message comes back once its visibility ends: every handler is
  idempotent, so a second delivery of a handled message is harmless;
* a malformed body is logged and left to reach the dead-letter queue quickly;
  it never crashes the worker;
* on stop, nothing more is received; handlers in flight get ``drain_seconds``
  to finish, then are cancelled (a handler releases what it holds) and their
  messages are made visible at once for another replica; the deletes and
  visibility changes still queued are sent before ``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from conveyor_shared.messaging.acks import MAX_ENTRIES, MessageAcks, Outcome
from conveyor_shared.messaging.envelopes import MalformedMessage

log = structlog.get_logger("conveyor.consumer")


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    #: How many times SQS has handed this message out, this time included.
    receive_count: int
    #: When this receive happened (epoch seconds): SQS's 12-hour limit on a
    #: visibility timeout counts from here.
    received_at: float = field(default_factory=time.time)


#: SQS refuses a visibility timeout that ends more than 12 hours after the receive.
MAX_VISIBILITY_SECONDS = 12 * 3600
_VISIBILITY_LOST = {"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"}


class RetryLater(Exception):
    """Raised by a handler to have the message redelivered after ``delay`` seconds."""

    def __init__(self, delay: int, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


class LeaveMessage(Exception):
    """Raised by a handler that must neither delete nor touch its message: the
    work passed to another receiver, which may hold this very message now
    (SQS honours an older receipt handle too)."""


Handler = Callable[[ReceivedMessage], Awaitable[None]]


class QueueConsumer:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        *,
        concurrency: int = 8,
        receivers: int = 1,
        visibility_timeout: int = 60,
        wait_seconds: int = 20,
        retry_delays: Sequence[int] = (2, 10, 30),
        drain_seconds: float = 30.0,
        linger_seconds: float = 0.05,
        gather_seconds: float = 0.0,
    ) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._handler = handler
        self._concurrency = concurrency
        self._receivers = receivers
        self._visibility = visibility_timeout
        self._wait = wait_seconds
        self._retry_delays = tuple(retry_delays)
        self._drain = drain_seconds
        self._linger = linger_seconds
        self._gather = gather_seconds
        self._acks: MessageAcks | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._log = log.bind(queue=queue_url.rsplit("/", 1)[-1])

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then let in-flight messages finish."""
        slots = asyncio.Semaphore(self._concurrency)
        self._acks = MessageAcks(self._sqs, self._url, linger=self._linger)
        self._log.info("consumer.started", concurrency=self._concurrency)
        try:
            await asyncio.gather(*(self._poll(slots, stop) for _ in range(self._receivers)))
        finally:
            await self._drain_in_flight()
            await self._acks.close()
            self._log.info("consumer.stopped")

    async def _drain_in_flight(self) -> None:
        if not self._in_flight:
            return
        self._log.info("consumer.draining", in_flight=len(self._in_flight), bound=self._drain)
        _, unfinished = await asyncio.wait(set(self._in_flight), timeout=self._drain)
        for task in unfinished:
            task.cancel("stopping: the drain bound ran out")
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _poll(self, slots: asyncio.Semaphore, stop: asyncio.Event) -> None:
        while not stop.is_set():
            taken = await _take_slots(slots, MAX_ENTRIES, stop)
            messages = await self._receive(taken, stop) if taken else []
            for _ in range(taken - len(messages)):
                slots.release()
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                task.add_done_callback(lambda _t: slots.release())
            if self._gather and 0 < len(messages) < taken:
                # A trickle: let a few more arrive, so that the next receive
                # takes several messages instead of one (``gather_seconds``).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._gather)

    async def _receive(self, count: int, stop: asyncio.Event) -> list[ReceivedMessage]:
        receive = asyncio.ensure_future(
            self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self._wait,
                VisibilityTimeout=self._visibility,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if receive not in done:
            # Whatever this poll would have returned stays invisible for one
            # visibility timeout, then is redelivered: nothing is lost.
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receive
            return []
        try:
            response = receive.result()
        except (BotoCoreError, ClientError) as exc:
            self._log.warning("consumer.receive_failed", error=str(exc))
            await asyncio.sleep(1)
            return []
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    async def _handle(self, message: ReceivedMessage) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, receive_count=message.receive_count
        )
        lost = asyncio.Event()
        try:
            async with self._keep_invisible(message, lost):
                await self._handler(message)
        except asyncio.CancelledError:
            if not lost.is_set():
                # A stop: let another replica have the message at once.
                self._log.warning("message.released", reason="service stopping")
                await self._set_visibility(message, 0)
                raise
            self._log.error(
                "message.abandoned", reason="its visibility could not be extended any more"
            )
        except LeaveMessage as exc:
            self._log.warning("message.left", reason=str(exc))
        except MalformedMessage as exc:
            # Visible again at once: its receive count climbs to the redrive
            # limit within seconds and an operator finds it in the DLQ.
            self._log.error("message.malformed", reason=str(exc), body=message.body[:500])
            await self._set_visibility(message, 0)
        except RetryLater as exc:
            delay = self._within_limit(message, exc.delay)
            self._log.info("message.retry_later", reason=str(exc), delay=delay)
            if await self._set_visibility(message, delay) is not None:
                self._log.error("message.retry_later_refused", delay=delay, reason=str(exc))
        except Exception as exc:
            delay = self._retry_delays[min(message.receive_count, len(self._retry_delays)) - 1]
            self._log.error(
                "message.failed", error=str(exc), error_type=type(exc).__name__, retry_in=delay
            )
            await self._set_visibility(message, delay)
        else:
            self._delete(message)

    @staticmethod
    def _within_limit(message: ReceivedMessage, delay: int) -> int:
        """``delay``, cut so the visibility ends within 12 hours of the receive."""
        elapsed = time.time() - message.received_at
        return max(0, min(delay, int(MAX_VISIBILITY_SECONDS - elapsed) - 60))

    @contextlib.asynccontextmanager
    async def _keep_invisible(
        self, message: ReceivedMessage, lost: asyncio.Event
    ) -> AsyncIterator[None]:
        handler = asyncio.current_task()
        assert handler is not None

        async def extend() -> None:
            confirmed_until = time.monotonic() + self._visibility
            interval = max(1.0, self._visibility / 3)
            while True:
                await asyncio.sleep(interval)
                asked_at = time.monotonic()
                error = await self._set_visibility(
                    message, self._visibility, drop_if_cancelled=True
                )
                if error is None:
                    # Counted from the request, not the reply: the batch may linger.
                    confirmed_until = asked_at + self._visibility
                    continue
                if error in _VISIBILITY_LOST or time.monotonic() + interval >= confirmed_until:
                    lost.set()
                    handler.cancel("the message's visibility was lost")
                    return

        heartbeat = asyncio.create_task(extend())
        try:
            yield
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _set_visibility(
        self, message: ReceivedMessage, seconds: int, *, drop_if_cancelled: bool = False
    ) -> str | None:
        """Set the message's visibility; the error code when SQS refused, else None.

        The change is sent even if the caller is cancelled while it waits
        (a back-off or a release must reach SQS), unless ``drop_if_cancelled``
        (an extension nobody needs once its handler ended).
        """
        assert self._acks is not None, "only while running"
        outcome = self._acks.change_visibility(message.receipt_handle, seconds)
        code = await (outcome if drop_if_cancelled else asyncio.shield(outcome))
        if code is not None:
            self._log.warning("message.visibility_failed", code=code, seconds=seconds)
        return code

    def _delete(self, message: ReceivedMessage) -> None:
        """Queue the message for deletion; its outcome is only logged."""
        assert self._acks is not None, "only while running"
        self._acks.delete(message.receipt_handle).add_done_callback(self._log_delete_failure)

    def _log_delete_failure(self, outcome: asyncio.Future[Outcome]) -> None:
        code = "NotSent" if outcome.cancelled() else outcome.result()
        if code is not None:
            # Redelivered later; every handler is idempotent, so that is harmless.
            self._log.warning("message.delete_failed", code=code)


async def _take_slots(slots: asyncio.Semaphore, most: int, stop: asyncio.Event) -> int:
    """Wait for a free slot (or ``stop``: then 0), then take up to ``most`` at once."""
    first = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    first.cancel()  # a no-op once the slot was taken; a cancelled acquire holds nothing
    with contextlib.suppress(asyncio.CancelledError):
        await first
    if first.cancelled():
        return 0
    if stop.is_set():
        slots.release()
        return 0
    taken = 1
    # A semaphore that is not locked is acquired without waiting.
    while taken < most and not slots.locked():
        await slots.acquire()
        taken += 1
    return taken
