"""The group writer holds its connection between groups, and a connection the database dropped
does not stay broken: on a real PostgreSQL server, whose backend is terminated under the writer
(what a database restart or failover does to every connection)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Connection, Engine, text

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
