"""Revision 0006 (decision 0034) on a database that main's revisions made and filled: its rows and
ids kept, the ledger's and the tasks' numbers never handed out again (on SQLite without
``AUTOINCREMENT``, before and after the upgrade, the newest rows deleted either way), and the
listing's filters answered as before from the one index left, on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from edgecache.db.engine import connect, migration_transaction, open_database, sqlite_url
from edgecache.db.identity import IdentityStore
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.migrate import _config, head, state
from edgecache.db.tasks import NewTask, TaskQuery, TaskStore
from pg import PostgresServer, postgres_server_fixture  # noqa: F401

ACCOUNT = "a" * 32
ZONE = "b" * 32
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TYPES = ("purge_url", "purge_cache_tag", "purge_prefix")
STATUSES = ("success", "failed", "timeout", "processing")


@pytest.fixture(name="db_url", params=["sqlite", "postgresql"])
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def _at(engine: Engine, at: datetime) -> Any:
    return at if engine.dialect.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f")


def made_by_0005(url: str) -> Engine:
    """A database at revision 0005 (main's head) with an account and a zone."""
    engine = connect(url)
    with migration_transaction(engine) as conn:
        command.upgrade(_config(conn), "0005")
    ids = IdentityStore(engine)
    ids.upsert_account(ACCOUNT, "acme", "enterprise", T0)
    ids.upsert_zone(ZONE, ACCOUNT, "example.com", "enterprise", T0)
    return engine


def fill_as_0005(engine: Engine, n: int) -> tuple[int, int]:
    """``n`` purges of one task each, as main wrote them (its statements, by hand: today's read
    ``high_water``), a type and a status each by turn; then the newest purge and its task deleted.
    The highest ledger seq and task id handed out."""
    seq = task_id = 0
    with engine.begin() as conn:
        for i in range(n):
            at = _at(engine, T0 + timedelta(seconds=i))
            seq = int(
                conn.execute(
                    text(
                        "INSERT INTO purge_ledger (zone_id, mode, selectors, principal, dialect, created_at,"
                        " job_id) VALUES (:z, 'delete', '{}', 'p', 'cli', :at, :j) RETURNING seq"
                    ),
                    {"z": ZONE, "at": at, "j": f"{i:032x}"},
                ).scalar_one()
            )
            task_id = int(
                conn.execute(
                    text(
                        "INSERT INTO tasks (job_id, kind, zone_id, seq, target, domain, type, method, status,"
                        " created_at, updated_at, principal, dialect) VALUES (:j, 'purge', :z, :seq, :t,"
                        " NULL, :type, 'delete', :status, :at, :at, 'p', 'cli') RETURNING id"
                    ),
                    {
                        "j": f"{i:032x}",
                        "z": ZONE,
                        "seq": seq,
                        "t": f"t{i}",
                        "type": TYPES[i % len(TYPES)],
                        "status": STATUSES[i % len(STATUSES)],
                        "at": at,
                    },
                ).scalar_one()
            )
        conn.execute(text("DELETE FROM tasks WHERE id = :i"), {"i": task_id})
        conn.execute(text("DELETE FROM purge_ledger WHERE seq = :s"), {"s": seq})
    return seq, task_id


def rows(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table}"))


def purge(i: int) -> NewPurge:
    return NewPurge(
        ZONE,
        "delete",
        {"tags": [f"n{i}"]},
        "p",
        "cli",
        f"{i:032x}",
        T0 + timedelta(hours=1, seconds=i),
        [NewTask(f"n{i}", "purge_cache_tag", None, "delete")],
    )


def highest_task_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT max(id) FROM tasks").scalar_one())


@pytest.fixture(name="upgraded")
def upgraded_fixture(db_url: str) -> Iterator[tuple[Engine, int, int, dict[str, list[tuple[Any, ...]]]]]:
    old = made_by_0005(db_url)
    seq, task_id = fill_as_0005(old, 40)
    before = {t: rows(old, t) for t in ("purge_ledger", "tasks")}
    old.dispose()
    engine = open_database(db_url)
    yield engine, seq, task_id, before
    engine.dispose()


def test_the_upgrade_keeps_every_row_and_id(upgraded: tuple[Engine, int, int, dict[str, Any]]) -> None:
    engine, _seq, _task_id, before = upgraded
    assert state(engine).revision == head()
    assert {t: rows(engine, t) for t in before} == before
    with engine.connect() as conn:
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("tasks")}
    assert indexes == {"ix_tasks_listing", "ix_tasks_unsuccessful", "ix_tasks_job", "ix_tasks_processing_seq"}


def test_numbers_deleted_before_or_after_the_upgrade_are_never_handed_out_again(
    upgraded: tuple[Engine, int, int, dict[str, Any]],
) -> None:
    engine, seq, task_id, _before = upgraded
    ledger = LedgerStore(engine)
    first = ledger.append(purge(100))
    assert first == seq + 1
    assert highest_task_id(engine) == task_id + 1
    second = ledger.append(purge(101))
    with engine.begin() as conn:
        # The newest purges go, as compaction or an operator's DELETE would take them.
        conn.execute(text("DELETE FROM tasks WHERE seq >= :s"), {"s": first})
        conn.execute(text("DELETE FROM purge_ledger WHERE seq >= :s"), {"s": first})
    third = ledger.append(purge(102))
    assert third == second + 1
    assert highest_task_id(engine) == task_id + 3
    assert [r.seq for r in ledger.after(seq - 2)] == [seq - 1, third]
    # A retention delete of the oldest rows leaves the numbering as it was.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM purge_ledger WHERE seq < :s"), {"s": seq - 5})
    assert ledger.append(purge(103)) == third + 1


def test_the_listing_filters_answer_as_before(upgraded: tuple[Engine, int, int, dict[str, Any]]) -> None:
    engine, _seq, _task_id, _before = upgraded
    store = TaskStore(engine)
    kept = 39  # the fortieth was deleted
    for status in STATUSES:
        total, page = store.query(TaskQuery(ZONE, "purge", statuses=(status,), limit=100))
        expected = [i for i in range(kept) if STATUSES[i % len(STATUSES)] == status]
        assert total == len(expected)
        assert [t.target for t in page] == [f"t{i}" for i in reversed(expected)]
    for type_ in TYPES:
        since = T0 + timedelta(seconds=10)
        assert store.count_since(ZONE, "purge", type_, since) == sum(
            1 for i in range(10, kept) if TYPES[i % len(TYPES)] == type_
        )
    total, page = store.query(
        TaskQuery(
            ZONE, "purge", start=T0 + timedelta(seconds=20), types=("purge_url",), statuses=("success",)
        )
    )
    both = [i for i in range(20, kept) if i % len(TYPES) == 0 and i % len(STATUSES) == 0]
    assert (total, [t.target for t in page]) == (len(both), [f"t{i}" for i in reversed(both)])
