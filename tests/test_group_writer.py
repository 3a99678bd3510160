"""The group writer holds its connection between groups, and a connection the database dropped
does not stay broken: on a real PostgreSQL server, whose backend is terminated under the writer
(what a database restart or failover does to every connection)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from edgecache.db import writer as writer_module
from edgecache.db.engine import connect, open_database
from edgecache.db.writer import GroupWriter
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
        with pytest.raises(Exception):  # noqa: B017 - the driver's error for a dead connection
            writer.call(lambda conn: conn.execute(text("INSERT INTO writes VALUES (1)")))
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
