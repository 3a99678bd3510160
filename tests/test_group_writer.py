"""The group writer holds its connection between groups, and a connection the database dropped
does not stay broken: on a real PostgreSQL server, whose backend is terminated under the writer
(what a database restart or failover does to every connection)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from edgecache.db import writer as writer_module
from edgecache.db.engine import connect, for_writes, open_database, sqlite_url
from edgecache.db.writer import GroupWriter, TransactionLost
from pg import postgres_server_fixture, postgres_url_fixture  # noqa: F401


def backend(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(url: str, pid: int) -> None:
    # From an engine of its own: the writer's engine may hand out the very connection to terminate.
    engine = connect(url)
    try:
        _terminate(engine, pid)
    finally:
        engine.dispose()


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            alive = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
            if alive.scalar_one() == 0:
                return
        time.sleep(0.05)


def test_groups_share_one_held_connection_until_it_idles(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "IDLE_RELEASE", 0.3)
    engine = open_database(postgres_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        first = writer.call(backend)
        assert writer.call(backend) == first  # held: no checkout between groups
        time.sleep(0.8)
        assert engine.pool.checkedout() == 0  # idle: back in the pool
        terminate(postgres_url, first)  # dropped while idle, as by a restart
        assert writer.call(backend) != first  # the pool's pre-ping replaced it
    finally:
        writer.close()
        engine.dispose()


def test_a_group_on_a_dropped_connection_fails_and_the_next_one_commits(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "IDLE_RELEASE", 3600.0)
    engine = open_database(postgres_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE writes (n integer)"))
        first = writer.call(backend)
        terminate(postgres_url, first)
        # The operation's own error (SQLAlchemy invalidated the connection), not the
        # PendingRollbackError that reaching for its driver connection afterwards raises.
        with pytest.raises(OperationalError) as caught:
            writer.call(lambda conn: conn.execute(text("INSERT INTO writes VALUES (1)")))
        assert caught.value.connection_invalidated
        writer.call(lambda conn: conn.execute(text("INSERT INTO writes VALUES (2)")))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT n FROM writes")).scalars().all() == [2]
        assert writer.call(backend) != first
    finally:
        writer.close()
        engine.dispose()


def test_an_atomic_operation_that_fails_does_not_take_its_group_down(postgres_url: str) -> None:
    """On PostgreSQL a failed statement aborts the transaction: the operations grouped with an
    atomic one that failed must still be written, and told so only once they are."""
    engine = open_database(postgres_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE grouped (n integer)"))
        gate, held = threading.Event(), threading.Event()
        first = writer.submit(lambda conn: held.set() or gate.wait(10))
        assert held.wait(10)  # the writer is busy: the next three queue up as one group

        def insert(n: int) -> Callable[[Connection], object]:
            return lambda conn: conn.execute(text(f"INSERT INTO grouped VALUES ({n})"))

        before = writer.submit(insert(1))
        failing = writer.submit(lambda conn: conn.execute(text("SELECT 1/0")), atomic=True)
        after = writer.submit(insert(3), atomic=True)
        gate.set()
        first.result(10)
        before.result(10)
        with pytest.raises(DBAPIError):
            failing.result(10)
        after.result(10)
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT n FROM grouped")).scalars()) == [1, 3]
    finally:
        writer.close()
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


def test_driver_and_sqlalchemy_operations_share_the_transaction(any_url: str) -> None:
    """The writer opens and commits its transaction on the driver (decision 0022); operations that
    write through ``Connection.execute`` (the queues') join it: in a group, and alone, where one
    that fails is rolled back whole and the next commits."""
    engine = open_database(any_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE mixed (n integer)"))
        on_driver = (
            "INSERT INTO mixed VALUES (%s)"
            if engine.dialect.name == "postgresql"
            else "INSERT INTO mixed VALUES (?)"
        )

        def raw(n: int) -> Callable[[Connection], object]:
            return lambda conn: conn.connection.cursor().execute(on_driver, (n,))

        def through(n: int) -> Callable[[Connection], object]:
            return lambda conn: conn.execute(text("INSERT INTO mixed VALUES (:n)"), {"n": n})

        def nested(conn: Connection) -> None:
            with conn.begin_nested():
                conn.execute(text("INSERT INTO mixed VALUES (4)"))

        def fails_after_writing(conn: Connection) -> None:
            conn.execute(text("INSERT INTO mixed VALUES (99)"))
            raise RuntimeError("refused")

        gate, held = threading.Event(), threading.Event()
        first = writer.submit(lambda conn: held.set() or gate.wait(10))
        assert held.wait(10)
        group = [writer.submit(op) for op in (raw(1), through(2), fails_after_writing, raw(3), nested)]
        gate.set()
        first.result(10)
        for fut in group[:2] + group[3:]:
            fut.result(10)
        with pytest.raises(RuntimeError):
            group[2].result(10)
        with pytest.raises(RuntimeError):
            writer.call(fails_after_writing)  # alone: the whole transaction is rolled back
        writer.call(raw(5))
        writer.call(through(6))
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT n FROM mixed")).scalars()) == [1, 2, 3, 4, 5, 6]
    finally:
        writer.close()
        engine.dispose()


def test_a_failing_commit_of_driver_only_operations_raises_sqlalchemys_error(any_url: str) -> None:
    """An operation that writes on the driver alone is committed on the driver; a deferred foreign
    key failing at that COMMIT reaches the caller as SQLAlchemy's IntegrityError (what the callers
    handle), nothing is written, and the writer goes on."""
    engine = open_database(any_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE parent (id integer PRIMARY KEY)"))
            conn.execute(
                text("CREATE TABLE child (p integer REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
            )
        on_driver = (
            "INSERT INTO child VALUES (%s)"
            if engine.dialect.name == "postgresql"
            else "INSERT INTO child VALUES (?)"
        )
        with pytest.raises(IntegrityError):
            writer.call(lambda conn: conn.connection.cursor().execute(on_driver, (7,)))
        writer.call(lambda conn: conn.execute(text("INSERT INTO parent VALUES (1)")))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
            assert conn.execute(text("SELECT id FROM parent")).scalars().all() == [1]
    finally:
        writer.close()
        engine.dispose()


def test_a_transaction_left_open_on_the_driver_is_not_joined(tmp_path: Path) -> None:
    """Only the transaction a group writer opened on the driver is joined by SQLAlchemy's: on any
    other connection a transaction still open on the driver (a leak) makes the next BEGIN fail
    loudly, rather than the read or write silently becoming part of it."""
    engine = open_database(sqlite_url(tmp_path))
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("BEGIN")
            with pytest.raises(OperationalError, match="within a transaction"), for_writes(conn).begin():
                conn.execute(text("SELECT 1"))
            raw.rollback()
    finally:
        engine.dispose()


def _doom(engine: Engine) -> Callable[[Connection], object]:
    """An operation after which the group's transaction is gone, not just the operation's writes:
    a statement SQLite answers by rolling back the whole transaction (a trigger's
    ``RAISE(ROLLBACK)``, as SQLite itself does on a full disk or an I/O error)."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE doomed (n integer)"))
        conn.execute(
            text("CREATE TRIGGER doom BEFORE INSERT ON doomed BEGIN SELECT RAISE(ROLLBACK, 'full'); END")
        )
    return lambda conn: conn.connection.cursor().execute("INSERT INTO doomed VALUES (1)")


def _swallowing(op: Callable[[Connection], object], conn: Connection) -> None:
    with suppress(Exception):
        op(conn)


def _insert(n: int) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(text("INSERT INTO kept VALUES (:n)"), {"n": n})


def _group(writer: GroupWriter, *ops: tuple[Callable[[Connection], object], bool]) -> list[Future[object]]:
    """``ops`` (each with its ``atomic``) submitted while the writer is busy: taken as one group."""
    gate, held = threading.Event(), threading.Event()
    first = writer.submit(lambda conn: held.set() or gate.wait(10))
    assert held.wait(10)
    group = [writer.submit(op, atomic=atomic) for op, atomic in ops]
    gate.set()
    first.result(10)
    for fut in group:
        fut.exception(10)
    return group


@pytest.mark.parametrize("atomic", [False, True])
def test_a_transaction_lost_under_a_group_answers_none_of_it_as_written(
    tmp_path: Path, atomic: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """When SQLite ends the group's whole transaction under one operation, that operation gets the
    database's own error, no other operation of the group is told it was written, none is
    written, and the error is logged: before this check the writes before it were answered as
    committed while rolled back, and those after it were committed outside any transaction.
    Alone in its group, an operation that lost the transaction is not answered as written
    either. The writer goes on with the next group."""
    engine = open_database(sqlite_url(tmp_path))
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (n integer)"))
        doom = _doom(engine)
        group = _group(writer, (_insert(1), False), (_insert(2), False), (doom, atomic), (_insert(3), False))
        for fut in (group[0], group[1], group[3]):
            with pytest.raises(TransactionLost):
                fut.result()
        own = group[2].exception()
        assert isinstance(own, sqlite3.IntegrityError) and str(own) == "full", own
        assert any(r.levelname == "ERROR" and "full" in r.getMessage() for r in caplog.records)
        with pytest.raises(TransactionLost):
            writer.call(lambda conn: (_insert(4)(conn), _swallowing(doom, conn)))
        writer.call(_insert(5))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT n FROM kept")).scalars().all() == [5]
    finally:
        writer.close()
        engine.dispose()


def test_a_cause_names_the_operation_that_lost_the_transaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operation of the group that failed earlier, undone to its savepoint, is not the cause
    the others hear of: the one that ended the transaction is."""
    engine = open_database(sqlite_url(tmp_path))
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (n integer)"))
        doom = _doom(engine)

        def refused(_conn: Connection) -> None:
            raise RuntimeError("refused")

        group = _group(writer, (refused, False), (_insert(1), False), (doom, False))
        assert isinstance(group[0].exception(), RuntimeError)
        lost = group[1].exception()
        assert isinstance(lost, TransactionLost)
        assert lost.__cause__ is group[2].exception()
        assert isinstance(lost.__cause__, sqlite3.IntegrityError)
    finally:
        writer.close()
        engine.dispose()


@pytest.mark.parametrize("alone", [False, True])
def test_a_statement_after_a_swallowed_rollback_does_not_pass_for_the_transaction(
    tmp_path: Path, alone: bool
) -> None:
    """An operation that swallows SQLite's rollback of the whole transaction and then writes
    through ``Connection.execute`` as the group's first statement there begins a new transaction;
    that one is not committed in place of the lost one: the operations before it (on the driver,
    answered as written while rolled back before the mark) and what it wrote are all refused."""
    engine = open_database(sqlite_url(tmp_path))
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (n integer)"))
        doom = _doom(engine)

        def swallow_then_write(conn: Connection) -> None:
            _swallowing(doom, conn)
            _insert(2)(conn)

        def on_driver(conn: Connection) -> None:
            conn.connection.cursor().execute("INSERT INTO kept VALUES (1)")

        if alone:
            with pytest.raises(TransactionLost):
                writer.call(lambda conn: (on_driver(conn), swallow_then_write(conn)))
        else:
            group = _group(writer, (on_driver, False), (swallow_then_write, False), (_insert(3), False))
            for fut in (group[0], group[2]):
                with pytest.raises(TransactionLost):
                    fut.result()
            assert group[1].exception() is not None
        writer.call(_insert(5))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT n FROM kept")).scalars().all() == [5]
    finally:
        writer.close()
        engine.dispose()


def test_an_error_swallowed_on_postgresql_fails_only_its_operation(postgres_url: str) -> None:
    """On PostgreSQL a failed statement aborts the transaction; an operation that swallows the
    error is rolled back to its savepoint, which recovers the transaction: that operation fails,
    the others of its group are written. Alone in its group (no savepoint) it loses the
    transaction. An operation that rolls back on the driver loses its group's transaction: none
    of the group is answered as written."""
    engine = open_database(postgres_url)
    writer = GroupWriter(engine, name="test-writer")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (n integer)"))

        def swallow(conn: Connection) -> None:
            _swallowing(lambda c: c.connection.cursor().execute("SELECT 1/0"), conn)

        group = _group(writer, (_insert(1), False), (swallow, True), (_insert(3), False))
        assert group[0].exception() is None and group[2].exception() is None
        assert isinstance(group[1].exception(), psycopg.errors.InFailedSqlTransaction)
        with pytest.raises(TransactionLost):
            writer.call(lambda conn: (_insert(4)(conn), swallow(conn)))

        def roll_back(conn: Connection) -> None:
            conn.connection.driver_connection.rollback()  # type: ignore[union-attr]

        group = _group(writer, (_insert(5), False), (roll_back, False), (_insert(6), False))
        for fut in (group[0], group[2]):
            with pytest.raises(TransactionLost):
                fut.result()
        writer.call(_insert(7))
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT n FROM kept")).scalars()) == [1, 3, 7]
    finally:
        writer.close()
        engine.dispose()


class _Raising:
    """A taker whose outcome handler raises (a closed event loop, a failed give-back)."""

    def __init__(self) -> None:
        self.told = threading.Event()

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: object) -> None:
        self.told.set()
        raise RuntimeError("Event loop is closed")

    def set_exception(self, exception: BaseException) -> None:
        self.told.set()
        raise RuntimeError("Event loop is closed")


def test_a_taker_that_raises_does_not_stop_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A taker's error is logged, as a future logs its callbacks' errors: the writer thread goes on,
    the operations grouped with it are told, and later operations are written."""
    engine = open_database(sqlite_url(tmp_path))
    writer = GroupWriter(engine, name="test-writer")
    gate = threading.Event()
    try:
        held = writer.submit(lambda conn: gate.wait(10))
        raising = _Raising()
        writer.hand(lambda conn: 1, raising)
        after = writer.submit(lambda conn: 2)
        gate.set()
        assert held.result(10) is True
        assert raising.told.wait(10)
        assert after.result(10) == 2, "an operation grouped after the raising taker was not told"
        assert writer.call(lambda conn: 42) == 42, "the writer stopped after a taker raised"
        assert "outcome failed" in caplog.text
    finally:
        gate.set()
        writer.close()
        engine.dispose()
