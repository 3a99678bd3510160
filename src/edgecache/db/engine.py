"""Opening the control-plane database: engine options, SQLite pragmas, transactions, the migration lock.

Rules:
- ``open_database(url)`` is how a node or a command gets an engine: it applies the connection
  settings and brings the schema to the newest revision (``edgecache.db.migrate``) before
  returning. ``connect(url)`` is the same without touching the schema (``edgecache db current``).
- SQLite (embedded default): WAL, so readers never wait for the writer; ``synchronous=FULL``, so a
  commit (an accepted purge) is on disk before the API answers; foreign keys on; a busy timeout so
  worker processes queue for the write lock instead of failing.
- Writes use ``write_transaction``: on SQLite it starts with ``BEGIN IMMEDIATE`` (the write lock is
  taken first, so a transaction that reads then writes cannot fail half-way with SQLITE_BUSY when
  another process committed meanwhile); reads use ``read_transaction`` (a plain deferred ``BEGIN``).
- Migrations run in ``migration_transaction``: one transaction that no other migrator shares
  (``BEGIN EXCLUSIVE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL), see
  ``docs/decisions/0007-migrations-alembic.md``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another process's write lock before failing."""
SQLITE_MIGRATION_WAIT_MS = 600_000
"""How long a starting node waits on SQLite while another process migrates (PostgreSQL waits as
long as the advisory lock is held)."""

_BEGIN = "edgecache_begin"
"""Execution option: the statement that opens a transaction on SQLite."""
_ON_DRIVER = "edgecache_on_driver"
"""Key in a connection's ``info``, set while the transaction open on its driver connection is one
:func:`begin_on_driver` opened: the only kind SQLAlchemy's transaction may join (``_on_begin``)."""
_ENDED = "edgecache_ended"
"""Key in a connection's ``info``, set when the transaction :func:`begin_on_driver` opened had
ended (SQLite rolled it back whole) before a statement through ``Connection.execute`` began
SQLAlchemy's: that statement runs in a new transaction, which must not pass for the old one
(:func:`ended_under_driver`)."""
# An arbitrary constant: the key of the PostgreSQL advisory lock held while migrating, so nodes
# starting together migrate one after the other.
_MIGRATION_LOCK_KEY = 0x6564676563616368  # "edgecach"


def sqlite_url(data_dir: Path) -> str:
    """The URL of the embedded database under ``data_dir`` (which must not contain ``?`` or ``#``:
    SQLAlchemy's URL syntax would read them as query or fragment)."""
    return URL.create("sqlite", database=str(Path(data_dir) / "edgecache.db")).render_as_string()


def connect(url: str) -> Engine:
    """An engine for ``url`` (SQLite or PostgreSQL) with this project's connection settings; the
    schema is left as it is."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    # pool_pre_ping: a cluster's database restarts or fails over; a dead pooled connection must be
    # replaced, not handed to a request.
    return create_engine(parsed, pool_pre_ping=True)


def open_database(url: str) -> Engine:
    """``connect(url)``, then bring the schema to the newest revision.

    Idempotent: opening an up-to-date database changes nothing. Raises ``RuntimeError`` when the
    database was written by newer code than this, or is not one edgecache created.
    """
    # Imported here: migrate builds on this module's transactions.
    from edgecache.db.migrate import upgrade

    engine = connect(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
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
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        # The transaction ``begin_on_driver`` opened (the group writers) is joined by the one an
        # operation's first ``Connection.execute`` begins. Any other transaction open on the
        # driver is a leak: BEGIN fails on it rather than a read or write silently joining it.
        if conn.info.pop(_ON_DRIVER, False):
            if raw.in_transaction:
                return
            # Ended under the operation, which swallowed the error. Not raised here: an error from
            # this event leaves SQLAlchemy's Connection never beginning again, each later
            # statement committed on its own. The new transaction holds what follows, and the
            # mark makes the group writer roll it back.
            conn.info[_ENDED] = True
        _begin_sqlite(raw, conn.get_execution_options().get(_BEGIN, "BEGIN"))

    return engine


def _begin_sqlite(raw: sqlite3.Connection, statement: str) -> None:
    # On the driver's connection: through ``exec_driver_sql`` the statement went through
    # SQLAlchemy's whole execution path, 13% of the ledger thread's profiled time in a paced
    # purge stream (cProfile, ``bench/purge_stream_cpu.py --profile``).
    try:
        raw.execute(statement)
    except sqlite3.Error as err:
        # Outside SQLAlchemy's error wrapping here: a busy database ("database is locked" after
        # the busy timeout) must reach callers as the SQLAlchemyError they handle.
        raise OperationalError(statement, (), err) from err


def for_writes(conn: Connection) -> Connection:
    """Make every transaction ``conn`` begins from now on a write transaction (``BEGIN IMMEDIATE``
    on SQLite): for a connection held across many of them (the group writers)."""
    conn.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"})
    return conn


def begin_on_driver(conn: Connection) -> None:
    """Open a transaction on ``conn``'s driver connection, outside SQLAlchemy's transaction
    bookkeeping (``BEGIN IMMEDIATE`` after :func:`for_writes` on SQLite; on PostgreSQL the driver
    opens it with the first statement). End it with :func:`end_on_driver`.

    Why: SQLAlchemy's ``begin`` and ``commit`` are Python per transaction, paid on the interpreter
    the data plane runs on, by every purge (decision 0022 has the measurement).
    A statement run through ``conn`` meanwhile starts SQLAlchemy's transaction as usual; it joins
    the one already open (``_on_begin``, which joins only one this function opened), and
    :func:`end_on_driver` then ends it through SQLAlchemy, so both views of the connection agree."""
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    _begin_sqlite(raw, conn.get_execution_options().get(_BEGIN, "BEGIN"))
    conn.info[_ON_DRIVER] = True
    conn.info.pop(_ENDED, None)


def ended_under_driver(conn: Connection) -> bool:
    """Whether the transaction :func:`begin_on_driver` opened on SQLite ended before a statement
    through ``conn`` began SQLAlchemy's (which is then a new one, not to be committed for it)."""
    return bool(conn.info.get(_ENDED))


def end_on_driver(conn: Connection, *, commit: bool) -> None:
    """Commit (or roll back) the transaction :func:`begin_on_driver` opened: through SQLAlchemy
    when a statement run through ``conn`` began its transaction, else on the driver. A failed
    commit rolls the transaction back before it raises (SQLite keeps it open when a deferred
    constraint fails at ``COMMIT``, and the connection would go back to the pool with it); the
    error raised is a ``SQLAlchemyError`` on either path."""
    if conn.invalidated:
        # A statement through ``conn`` met a disconnect and SQLAlchemy invalidated the
        # connection: reaching for its driver connection would raise PendingRollbackError in
        # place of that statement's own error. Its rollback (or failing commit) is all that is left.
        _end_through_sqlalchemy(conn, commit)
        return
    conn.info.pop(_ON_DRIVER, None)
    conn.info.pop(_ENDED, None)
    raw: Any = conn.connection.driver_connection
    try:
        if conn.in_transaction():
            _end_through_sqlalchemy(conn, commit)
        else:
            _end_on_driver(conn.dialect, raw, commit)
    except BaseException:
        with suppress(Exception):  # a connection the database dropped: the pool discards it
            raw.rollback()
        raise


def _end_through_sqlalchemy(conn: Connection, commit: bool) -> None:
    if commit:
        conn.commit()
    else:
        conn.rollback()


def _end_on_driver(dialect: Dialect, raw: Any, commit: bool) -> None:
    dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
    try:
        if commit:
            raw.commit()
        else:
            raw.rollback()
    except dbapi_error as err:
        # Outside SQLAlchemy's error wrapping, as in ``_begin_sqlite``: callers handle
        # SQLAlchemyError (a deferred foreign key failing at COMMIT is the driver's IntegrityError,
        # and becomes SQLAlchemy's).
        statement = "COMMIT" if commit else "ROLLBACK"
        raise DBAPIError.instance(statement, None, err, dbapi_error, dialect=dialect) from err


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed on normal exit, rolled back on an exception."""
    with engine.connect() as conn, for_writes(conn).begin():
        yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work: one consistent snapshot, never holds the SQLite write lock."""
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that at most one process at a time is in, committed on normal exit.

    SQLite: ``BEGIN EXCLUSIVE`` (in WAL mode readers carry on with the schema they started with),
    waiting up to ``SQLITE_MIGRATION_WAIT_MS`` for a migrator in another process. PostgreSQL:
    ``pg_advisory_xact_lock``, released by the commit or rollback, or when the connection dies.
    """
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                yield conn
            return
        # On the driver's connection: a statement through ``conn`` would open the transaction.
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.execute(f"PRAGMA busy_timeout={SQLITE_MIGRATION_WAIT_MS}")
        conn.execution_options(**{_BEGIN: "BEGIN EXCLUSIVE"})
        try:
            with conn.begin():
                yield conn
        finally:
            raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
