"""Pushes stored together: every push waiting for the writer goes into the database as one queue
lookup and one ``executemany``, in one group-commit transaction.

Why: with 50 producers each push used to be its own writer operation (its own statement, built and
compiled by SQLAlchemy per push): ~400 µs of CPU per push, most of it in the writer thread, which
then set the rate rather than the disk (decision 0010). Here the per-push work in the writer is one
row of an ``executemany``: ~30 to 40 µs per push in all (``bench/queues.py``, CPU column).

Rules:
- A push is validated before it is queued (``check_messages``); what can still fail is the queue
  lookup (:class:`QueueNotFound`, for that push alone) or the database (every push of that flush).
- At most one flush waits in the writer's queue at a time; it takes every push pending when it
  runs, so pushes arriving while the writer commits the previous group share the next one. On
  PostgreSQL, where the pool has several writers, a new flush is queued as soon as the previous one
  has taken its pushes, so flushes overlap on different connections.
- A push's future resolves after the transaction holding its rows has committed: durable before
  the answer, as for every other write.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import Connection

from edgecache.control.queue_rules import Message, QueueNotFound
from edgecache.db import queues as db
from edgecache.db.queues import NewMessage
from edgecache.db.writer import WriterPool


@dataclass(frozen=True, slots=True)
class _Push:
    account_id: str
    queue_id: str
    messages: Sequence[Message]
    batch_delay: int | None
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Flush:
    ran: bool = False
    pushes: list[_Push] = field(default_factory=list)


class PushCombiner:
    """Stores pushes through a writer pool, many per statement."""

    def __init__(self, writer: WriterPool, now_ms: Callable[[], int]) -> None:
        self._writer = writer
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self._pending: list[_Push] = []
        self._scheduled = False

    async def push(
        self, account_id: str, queue_id: str, messages: Sequence[Message], batch_delay: int | None
    ) -> None:
        """Store already validated messages durably; raises :class:`QueueNotFound`."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.append(_Push(account_id, queue_id, messages, batch_delay, done))
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            flush = _Flush()
            self._writer.submit(lambda conn: self._flush(conn, flush)).add_done_callback(
                lambda fut: self._settle(fut, flush)
            )
        await done

    def _take(self) -> list[_Push]:
        with self._lock:
            taken, self._pending = self._pending, []
            self._scheduled = False
        # A producer that gave up before its turn (a cancelled request) gets nothing written.
        return [p for p in taken if not p.done.cancelled()]

    def _flush(self, conn: Connection, flush: _Flush) -> list[tuple[_Push, Exception | None]]:
        flush.ran = True
        pushes = flush.pushes = self._take()
        if not pushes:
            return []
        now = self._now_ms()
        found = db.queue_delays(conn, {p.queue_id for p in pushes})
        rows: list[tuple[str, NewMessage]] = []
        outcomes: list[tuple[_Push, Exception | None]] = []
        for p in pushes:
            queue = found.get(p.queue_id)
            if queue is None or queue[0] != p.account_id:
                outcomes.append((p, QueueNotFound(f"Queue {p.queue_id} does not exist")))
                continue
            default = queue[1] if p.batch_delay is None else p.batch_delay
            for m in p.messages:
                delay = default if m.delay_seconds is None else m.delay_seconds
                rows.append((p.queue_id, NewMessage(m.body, m.content_type, now + 1000 * delay)))
            outcomes.append((p, None))
        db.insert_rows(conn, rows, now)
        return outcomes

    def _settle(self, fut: Future[list[tuple[_Push, Exception | None]]], flush: _Flush) -> None:
        # Runs on the writer thread once the group has committed (or failed): each producer's
        # future belongs to its event loop and is resolved there.
        error = fut.exception()
        outcomes: list[tuple[_Push, Exception | None]]
        if error is None:
            outcomes = fut.result()
        else:
            # The transaction failed: every push the flush took fails with it. When the group
            # failed before the flush ran (no connection), the pushes are still pending and no
            # other flush is queued for them.
            failed = flush.pushes if flush.ran else self._take()
            reason = error if isinstance(error, Exception) else RuntimeError(str(error))
            outcomes = [(p, reason) for p in failed]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Push, Exception | None]]] = {}
        for p, exc in outcomes:
            by_loop.setdefault(p.done.get_loop(), []).append((p, exc))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[tuple[_Push, Exception | None]]) -> None:
    for p, exc in items:
        if p.done.done():
            continue
        if exc is None:
            p.done.set_result(None)
        else:
            p.done.set_exception(exc)
