"""Group commit: one writer thread runs the write operations handed to it, many per transaction.

Rules:
- An operation is a function of an open write connection. The writer takes every operation waiting
  (up to ``max_batch``), runs each inside its own SAVEPOINT of one transaction, commits once, and
  only then resolves their futures: a caller hears back after its write is on disk, and N callers
  waiting together share one fsync instead of paying N.
- An operation that raises is rolled back to its savepoint and gets the exception; the others in
  the group still commit. A failed commit fails the whole group. An operation submitted with
  ``atomic=True`` is one statement (or raises before writing anything), so it needs no savepoint:
  two statements fewer. That holds on SQLite only: on PostgreSQL a failed statement aborts the
  whole transaction, whose COMMIT would then roll back what the other operations of the group wrote
  while their callers were told it was written, so there every operation of a group of more than
  one gets its savepoint. An operation alone in its group needs none on either: when it raises,
  the whole transaction is rolled back (a paced stream of purges is groups of one). Savepoints are
  the driver's statements, not SQLAlchemy's nested transactions (``edgecache.db.prepared.savepoint``:
  a fraction of the Python).
- A transaction can end under its group, not just an operation's writes: SQLite rolls the whole
  transaction back on some errors (a full disk, an I/O error, ``RAISE(ROLLBACK)``). The writer
  looks after each operation (one attribute of the driver's connection); once the transaction is
  gone it runs no further operation of the group (on SQLite it would run outside any transaction
  and be kept), rolls back, logs the error, and fails every operation of the group (the one that
  ended the transaction with its own error, every other with :class:`TransactionLost`): none is
  told it was written. On PostgreSQL a failed statement aborts the transaction; an operation that
  swallows the error leaves it aborted, and its savepoint's ``RELEASE`` is refused: the writer
  rolls back to that savepoint, which recovers the transaction, and fails that operation alone
  (``savepoint``). Alone in its group it has no savepoint, and the transaction is lost with it.
  An operation that swallows SQLite's rollback and goes on writing is seen too: a first
  ``Connection.execute`` after it begins a new transaction, marked so that the writer rolls it
  back (``edgecache.db.engine.ended_under_driver``); a statement after it on the driver, or
  through a ``Connection`` whose transaction had already joined, runs outside any transaction
  and is kept, but no other operation is answered as written. An operation that rolls back on
  the driver ends the transaction on either database: on SQLite ``in_transaction`` shows it; on
  PostgreSQL the ``RELEASE`` of its savepoint then fails in a new transaction, which is aborted.
  Alone in its group it undoes only its own writes (no operation of the product does either).
- The transaction is opened and committed on the driver's connection
  (``edgecache.db.engine.begin_on_driver``), not through SQLAlchemy's ``begin``/``commit``: the
  purge writes run on the driver's cursor already, and an operation that uses
  ``Connection.execute`` joins the open transaction, which then ends through SQLAlchemy (decision
  0022).
- The writer holds its connection from one group to the next while they keep coming (a pool
  checkout and check-in per transaction were 16% of the ledger thread's profiled time in a paced
  purge stream: cProfile, ``bench/purge_stream_cpu.py --profile``); after ``IDLE_RELEASE`` seconds
  without work it goes back to the pool, so that a connection the database dropped meanwhile is
  replaced at the next checkout (PostgreSQL's pre-ping), and a group that fails gives its
  connection up.
- One writer per process keeps SQLite's write lock in one place (other processes queue for it with
  ``BEGIN IMMEDIATE`` and the busy timeout); on PostgreSQL the operations themselves must be safe
  against other nodes' writers (``FOR UPDATE SKIP LOCKED`` where they claim rows).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from edgecache.db.engine import begin_on_driver, end_on_driver, ended_under_driver, for_writes
from edgecache.db.prepared import savepoint

log = logging.getLogger(__name__)

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

_STOP = object()


class Taker(Protocol[T_contra]):
    """What takes an operation's outcome on the writer thread: the part of
    :class:`concurrent.futures.Future` the writer uses. A caller on the event loop that needs no
    future of its own (the purge service) hands one of its own, and is spared the future's
    condition, locks and callbacks, per purge on the interpreter the data plane runs on
    (decision 0025's addendum)."""

    def set_running_or_notify_cancel(self) -> bool:
        """False when the caller gave up before its turn: the operation is not run."""

    def set_result(self, result: T_contra) -> None:
        """The operation's value, once the transaction holding it has committed."""

    def set_exception(self, exception: BaseException) -> None:
        """The operation's error, or the group's when its transaction did not commit."""


IDLE_RELEASE = 1.0
"""Seconds without work after which a writer returns its connection to the pool."""


class GroupWriter:
    """A thread that commits queued write operations in groups."""

    def __init__(self, engine: Engine, *, name: str, max_batch: int = 256) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: Connection | None = None
        """The connection held between groups (only the writer thread touches it)."""
        self.commits = 0
        """Transactions committed so far (for metrics: operations per commit shows the grouping)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[Connection], T], *, atomic: bool = False) -> Future[T]:
        """Queue ``op``; its future resolves once the transaction holding it has committed."""
        fut: Future[T] = Future()
        self._queue.put((op, fut, atomic))
        return fut

    def hand(self, op: Callable[[Connection], T], taker: Taker[T], *, atomic: bool = False) -> None:
        """Queue ``op`` with what takes its outcome in place of a future (see :class:`Taker`)."""
        self._queue.put((op, taker, atomic))

    async def run(self, op: Callable[[Connection], T], *, atomic: bool = False) -> T:
        """Queue ``op`` and wait for it from the event loop."""
        return await asyncio.wrap_future(self.submit(op, atomic=atomic))

    def call(self, op: Callable[[Connection], T]) -> T:
        """Queue ``op`` and wait for it from a plain thread (the CLI)."""
        return self.submit(op).result()

    def close(self) -> None:
        """Finish the queued operations, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._release()

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_RELEASE) if self._conn is not None else self._queue.get()
            except queue.Empty:
                self._release()
                continue
            if item is _STOP:
                return
            group = [item]
            stop = False
            while len(group) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[tuple[Callable[[Connection], Any], Taker[Any], bool]]) -> None:
        # A caller that gave up before its turn (a cancelled task) gets nothing written; once
        # running, a future can no longer be cancelled, so every result below has a taker.
        group = [(op, fut, atomic) for op, fut, atomic in group if fut.set_running_or_notify_cancel()]
        if not group:
            return
        outcomes: list[tuple[bool, Any]] = []
        committed = True
        try:
            if self._conn is None:
                self._conn = for_writes(self._engine.connect())
            conn = self._conn
            # A failure below releases the connection, and the pool rolls back what is open.
            begin_on_driver(conn)
            if len(group) == 1:
                try:
                    outcomes.append((True, group[0][0](conn)))
                except Exception as exc:
                    outcomes.append((False, exc))
                    committed = False
                if committed and _lost(conn):
                    committed = False
                    outcomes = _all_lost(outcomes, 1)
            else:
                # PostgreSQL aborts the whole transaction on a failed statement, and its COMMIT
                # would then roll back what the other operations wrote: no operation runs
                # without a savepoint there.
                bare = conn.dialect.name != "postgresql"
                for op, _fut, atomic in group:
                    outcomes.append(_run_one(conn, op, atomic and bare))
                    if _lost(conn):
                        # On SQLite the next operation would run outside any transaction.
                        committed = False
                        outcomes = _all_lost(outcomes, len(group))
                        break
            end_on_driver(conn, commit=committed)
        except Exception as exc:
            log.exception("group commit of %d operations failed", len(group))
            self._release()
            for _op, fut, _atomic in group:
                _tell(fut, False, exc)
            return
        self.commits += committed
        for (_op, fut, _atomic), (ok, value) in zip(group, outcomes, strict=True):
            _tell(fut, ok, value)

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("returning the writer's connection failed")


def _tell(taker: Taker[Any], ok: bool, value: Any) -> None:
    """Give an operation its outcome. A taker that raises is logged and the writer goes on, as a
    future logs its callbacks' errors: else one taker's error (a closed event loop, a failed
    give-back) would end the writer thread, the group's other takers never told and every later
    operation left waiting."""
    try:
        if ok:
            taker.set_result(value)
        else:
            taker.set_exception(value)
    except Exception:
        log.exception("telling an operation of the ledger writer its outcome failed")


def _run_one(conn: Connection, op: Callable[[Connection], Any], atomic: bool) -> tuple[bool, Any]:
    """Run one operation of a group: its value, or the exception it raised with its writes undone."""
    try:
        if atomic:
            return True, op(conn)
        with savepoint(conn, "op"):
            return True, op(conn)
    except Exception as exc:
        return False, exc


class TransactionLost(SQLAlchemyError):
    """The group's transaction ended under it (rolled back by the database, or aborted with no
    savepoint to return to): nothing the group wrote is kept."""


def _lost(conn: Connection) -> bool:
    """Whether the transaction the group opened is gone or can no longer commit. A connection
    SQLAlchemy invalidated is not asked: its rollback and the operations' own errors follow."""
    if conn.invalidated:
        return False
    raw: Any = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        # The mark is set only as SQLAlchemy begins its transaction: the purge writes, on the
        # driver alone, skip reading it.
        return not raw.in_transaction or (conn.in_transaction() and ended_under_driver(conn))
    # No savepoint-less operation of a group on PostgreSQL, and each RELEASE is a statement: an
    # operation that rolled back on the driver leaves the transaction aborted (INERROR), not
    # IDLE. Alone in its group, IDLE is also an operation that ran nothing, and an operation that
    # rolled back its own transaction undid only its own writes.
    return bool(raw.info.transaction_status == TransactionStatus.INERROR)


def _all_lost(outcomes: list[tuple[bool, Any]], size: int) -> list[tuple[bool, Any]]:
    """Every operation's outcome once the transaction is lost (logged here): an operation that
    failed keeps its own error, every other one (written, or not run) hears that nothing was
    written. The cause is the error of the operation that ended the transaction, the last one
    run (an earlier one that failed was undone to its savepoint, the transaction intact); None
    when it swallowed the error."""
    ok, value = outcomes[-1]
    cause = None if ok else value
    log.error(
        "a group's transaction of %d operations was lost under it, none written (cause: %s)",
        size,
        "swallowed by the operation" if cause is None else repr(cause),
        exc_info=cause,
    )
    lost = TransactionLost("the group's transaction was rolled back; nothing of it was written")
    lost.__cause__ = cause
    kept = [(False, value if not ok else lost) for ok, value in outcomes]
    return kept + [(False, lost)] * (size - len(kept))


class WriterPool:
    """Several group writers taking operations in turn: one on SQLite (its single write lock
    serialises writers anyway), several on PostgreSQL, where one writer's connection spends its
    time waiting on network round trips that other connections can overlap. Operations must then be
    safe against each other the way they are against other nodes' writers."""

    def __init__(self, engine: Engine, *, name: str, size: int) -> None:
        self._writers = [GroupWriter(engine, name=f"{name}-{i}") for i in range(max(1, size))]
        self._next = itertools.cycle(self._writers)

    @property
    def commits(self) -> int:
        """Transactions committed by all the writers."""
        return sum(w.commits for w in self._writers)

    def submit(self, op: Callable[[Connection], T], *, atomic: bool = False) -> Future[T]:
        """Queue ``op`` on the next writer (see :meth:`GroupWriter.submit`)."""
        return next(self._next).submit(op, atomic=atomic)

    async def run(self, op: Callable[[Connection], T], *, atomic: bool = False) -> T:
        """Queue ``op`` and wait for it from the event loop."""
        return await asyncio.wrap_future(self.submit(op, atomic=atomic))

    def close(self) -> None:
        """Finish every writer's queued operations, then stop them."""
        for w in self._writers:
            w.close()
