"""How long the notifier keeps trying one send before handing the message back
to SQS: stamina's back-off with jitter, bounded by attempts and time.

Within a message we retry transient failures (a relay that is restarting,
throttling); SQS redelivery, and finally the dead-letter queue, handle the
rest. Tests turn the back-off off with ``stamina.set_testing``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

from conveyor_shared.errors import TransientError

T = TypeVar("T")

#: What stamina accepts as ``on``: an exception class, or a hook that returns
#: whether to retry, or how many seconds to wait before the next attempt.
RetryOn = type[Exception] | Callable[[Exception], bool | float]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    seconds: float
    wait_initial: float = 0.5
    wait_max: float = 30.0

    async def call(self, work: Callable[[], Awaitable[T]], on: RetryOn = TransientError) -> T:
        """Await ``work()`` until it succeeds, ``on`` declines an error, or the
        attempts or time run out (the last error is then raised)."""
        caller = stamina.AsyncRetryingCaller(
            attempts=self.attempts,
            timeout=self.seconds,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
        )
        return await caller(on, work)
