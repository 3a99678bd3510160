"""Opening the control-plane database: engine options, SQLite pragmas, transactions, migrations.

Rules:
- ``open_database(url)`` is the only way to get an engine: it applies the connection settings and
  brings the schema to ``SCHEMA_VERSION`` before returning.
- SQLite (embedded default): WAL, so readers never wait for the writer; ``synchronous=FULL``, so a
  commit (an accepted purge) is on disk before the API answers; foreign keys on; a busy timeout so
  worker processes queue for the write lock instead of failing.
- Writes use ``write_transaction``: on SQLite it starts with ``BEGIN IMMEDIATE`` (the write lock is
  taken first, so a transaction that reads then writes cannot fail half-way with SQLITE_BUSY when
  another process committed meanwhile); reads use ``read_transaction`` (a plain deferred ``BEGIN``).
- Migrations are a short forward-only list, not Alembic. With one schema version and a handful of
  tables, Alembic's revision graph, autogenerate and env.py would be more code than the migrations
  themselves; the list below is enough until branches or downgrades are needed (they are not: a node
  refuses to open a database newer than its code).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from edgecache.db.schema import (
    SCHEMA_VERSION,
    metadata,
    queue_consumers,
    queue_event_log,
    queue_messages,
    queue_subscriptions,
    queue_tombstones,
    queues,
    schema_version,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another process's write lock before failing."""

_WRITE = "edgecache_write"
# An arbitrary constant: the key of the PostgreSQL advisory lock held while migrating, so nodes
# starting together migrate one after the other.
_MIGRATION_LOCK_KEY = 0x6564676563616368  # "edgecach"


@dataclass(frozen=True)
class Migration:
    """One forward step: brings a database at ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _create_queue_tables(conn: Connection) -> None:
    for table in (
        queues,
        queue_consumers,
        queue_messages,
        queue_tombstones,
        queue_subscriptions,
        queue_event_log,
    ):
        table.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (Migration(2, "queues", _create_queue_tables),)
"""Steps after version 1. A fresh database is created from ``schema.metadata`` directly and stamped
``SCHEMA_VERSION``; these steps only upgrade databases created by older code. Append, never edit."""


def sqlite_url(data_dir: Path) -> str:
    """The URL of the embedded database under ``data_dir`` (which must not contain ``?`` or ``#``:
    SQLAlchemy's URL syntax would read them as query or fragment)."""
    return URL.create("sqlite", database=str(Path(data_dir) / "edgecache.db")).render_as_string()


def open_database(url: str) -> Engine:
    """Create an engine for ``url`` (SQLite or PostgreSQL) and bring its schema up to date.

    Idempotent: opening an up-to-date database changes nothing. Raises ``RuntimeError`` when the
    database was written by newer code than this.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed)
    else:
        # pool_pre_ping: a cluster's database restarts or fails over; a dead pooled connection
        # must be replaced, not handed to a request.
        engine = create_engine(parsed, pool_pre_ping=True)
    ensure_schema(engine)
    return engine


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        assert isinstance(dbapi_connection, sqlite3.Connection)
        # Stop the sqlite3 module from opening transactions on its own (it would start them lazily
        # before the first write, too late for the write lock); we emit BEGIN in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed on normal exit, rolled back on an exception."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work: one consistent snapshot, never holds the SQLite write lock."""
    with engine.connect() as conn, conn.begin():
        yield conn


def ensure_schema(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Create the schema on an empty database or apply the pending migrations; return the version.

    Runs in one write transaction (both engines have transactional DDL), under the SQLite write
    lock or a PostgreSQL advisory lock, so concurrent starters migrate once.
    """
    latest = max([SCHEMA_VERSION, *(m.version for m in migrations)])
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar_one_or_none()
        if current is None:
            metadata.create_all(conn, checkfirst=True)
            conn.execute(
                schema_version.insert().values(version=latest, description="initial schema", applied_at=now)
            )
            return latest
        if current > latest:
            raise RuntimeError(
                f"the database is at schema version {current}, newer than this code ({latest}); "
                "upgrade edgecache instead of opening it with an older release"
            )
        for step in sorted(migrations, key=lambda m: m.version):
            if step.version <= current:
                continue
            step.apply(conn)
            conn.execute(
                schema_version.insert().values(
                    version=step.version, description=step.description, applied_at=now
                )
            )
            current = step.version
        return current
