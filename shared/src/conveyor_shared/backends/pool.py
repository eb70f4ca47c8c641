"""Sessions to one server, at most so many at once, reused across files: the
part of a connection pool that does not depend on the protocol (FTP now;
SFTP's pool has the same shape)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class PooledSession(Protocol):
    #: When the session was last returned to the pool (``time.monotonic``).
    idle_since: float

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


SessionT = TypeVar("SessionT", bound=PooledSession)


class SessionPool(Generic[SessionT]):
    """Up to ``max_sessions`` sessions from ``connect``; ``acquire`` waits while
    all are busy. A session found closed, or idle past ``idle_seconds``, is
    dropped and replaced by a fresh one."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[SessionT]],
        max_sessions: int,
        idle_seconds: float,
    ) -> None:
        self._connect = connect
        self._idle_seconds = idle_seconds
        self._slots = asyncio.Semaphore(max_sessions)
        self._idle: list[SessionT] = []
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> SessionT:
        """A live session for this caller alone; ``release`` it when done.

        Raises what ``connect`` raises when a new session is needed and fails.
        """
        await self._slots.acquire()
        try:
            while self._idle:
                session = self._idle.pop()
                if session.closed:
                    continue
                if time.monotonic() - session.idle_since > self._idle_seconds:
                    session.close()
                    continue
                return session
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, session: SessionT) -> None:
        """Back to the pool, or closed if it failed or the pool is closed."""
        try:
            if session.closed or self._closed:
                session.close()
            else:
                session.idle_since = time.monotonic()
                self._idle.append(session)
        finally:
            self._slots.release()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SessionT]:
        session = await self.acquire()
        try:
            yield session
        finally:
            self.release(session)

    def drain(self) -> list[SessionT]:
        """Close the pool: the idle sessions, for the caller to end politely;
        busy ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        return idle
