"""Keep-alive connections to one origin (scheme, host, port), bounded, reused most-recent first.

Rules:
- At most ``max_connections`` connections are open (busy or idle); a request that finds none free
  waits for one, within the connect timeout.
- A connection goes back to the pool only when its response is complete and reusable (see
  ``origin_conn.py``, rule 4); an idle connection older than ``idle_timeout`` is closed, both when
  it would be handed out and by a sweep, so the origin's own keep-alive timer rarely fires first.
- The most recently used idle connection is handed out first: it is the least likely to have
  been closed by the origin, and the others age out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from edgecache.edge.origin_conn import Deadlines, OriginConnection, OriginTimeout, OriginUnreachable


class OriginStats:
    """Counters of the origin client across its pools, plain integers read at scrape time."""

    __slots__ = ("connections_opened", "requests", "retries")

    def __init__(self) -> None:
        self.connections_opened = 0
        self.requests = 0
        """Requests sent, retries included: requests - connections_opened went on reused connections."""
        self.retries = 0
        """Idempotent requests re-sent on a new connection after a reused one failed unanswered."""


class OriginPool:
    """The connections to one origin."""

    def __init__(
        self,
        *,
        deadlines: Deadlines,
        stats: OriginStats,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        first_byte_timeout: float,
        read_timeout: float,
        idle_timeout: float,
        max_connections: int,
    ) -> None:
        self._deadlines = deadlines
        self._stats = stats
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._first_byte_timeout = first_byte_timeout
        self._read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._max = max_connections
        self._idle: list[OriginConnection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    def take_idle(self) -> OriginConnection | None:
        """The most recently used idle connection that is still open and young enough, if any."""
        idle = self._idle
        oldest = self._deadlines.now - self._idle_timeout
        while idle:
            conn = idle.pop()
            transport = conn.transport
            usable = not conn.closed and transport is not None and not transport.is_closing()
            if usable and conn.idle_since > oldest:
                return conn
            conn.close()
        return None

    async def acquire(self) -> tuple[OriginConnection, bool]:
        """A connection to send one request on, and whether it was used before."""
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn, True
            if self._open < self._max:
                return await self.connect(), False
            await self._wait_for_slot(asyncio.get_running_loop())

    async def connect(self) -> OriginConnection:
        """Open a new connection (counted against the bound from the start)."""
        loop = asyncio.get_running_loop()
        self._open += 1
        conn = OriginConnection(
            loop,
            deadlines=self._deadlines,
            first_byte_timeout=self._first_byte_timeout,
            read_timeout=self._read_timeout,
            on_reusable=self._release,
            on_closed=self._closed,
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except BaseException as exc:
            self._abandon(conn)
            if isinstance(exc, TimeoutError):
                raise OriginTimeout(
                    f"origin {self.host}:{self.port} did not accept a connection "
                    f"within {self._connect_timeout:g} s"
                ) from exc
            if isinstance(exc, OSError):  # ssl.SSLError included
                raise OriginUnreachable(f"origin {self.host}:{self.port} unreachable: {exc}") from exc
            raise
        self._stats.connections_opened += 1
        return conn

    def close(self) -> None:
        """Close every idle connection (busy ones close when their response ends)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connection callbacks ------------------------------------------------------------------------

    def _release(self, conn: OriginConnection) -> None:
        self._idle.append(conn)
        if self._waiters:
            self._wake_one()
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self._idle_timeout, self._sweep_idle)

    def _closed(self, conn: OriginConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        self._give_back_slot()

    def _abandon(self, conn: OriginConnection) -> None:
        """A connect that did not complete: the slot comes back once, whether or not a transport exists."""
        if conn.transport is not None:
            conn.close()  # calls _closed, which gives the slot back
        else:
            self._give_back_slot()

    def _give_back_slot(self) -> None:
        self._open -= 1
        self._wake_one()

    # -- internals -----------------------------------------------------------------------------------

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await waiter
        except TimeoutError as exc:
            raise OriginTimeout(
                f"all {self._max} connections to {self.host}:{self.port} stayed busy for "
                f"{self._connect_timeout:g} s"
            ) from exc
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep_idle(self) -> None:
        self._sweep = None
        if not self._idle:
            return
        loop = self._idle[0].loop
        oldest = loop.time() - self._idle_timeout
        for conn in [c for c in self._idle if c.idle_since <= oldest]:
            conn.close()
        if self._idle:
            wait = min(c.idle_since for c in self._idle) + self._idle_timeout - loop.time()
            self._sweep = loop.call_later(max(wait, 0.05), self._sweep_idle)
