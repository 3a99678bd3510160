"""Schema upgrades with Alembic: the revisions in ``migrations/versions``, run from code.

Rules:
- ``upgrade(engine)`` brings any database edgecache created to the newest revision, in one
  transaction under the migration lock (``engine.migration_transaction``): a crash leaves the
  database as it was, and of two processes starting together one migrates, the other then
  finds nothing to do.
- The revision is whatever ``alembic_version`` says. A database created by 0.1.0 has no such
  table but a ``schema_version`` row 1 and every table of revision 0001: it is stamped 0001 (in
  the same transaction) and upgraded from there, so no row is touched.
- A database at a revision this code does not know was written by a newer release: refused, as
  is a database with tables but no version record at all (not edgecache's, or damaged).
- Forward only: rolling back a release means restoring the database it ran on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from edgecache.db.engine import migration_transaction, read_transaction

SCRIPTS = Path(__file__).with_name("migrations")
"""Alembic's script directory (env.py and versions/), part of the installed package."""

LEGACY_REVISION = "0001"
"""The revision whose schema edgecache 0.1.0 created (and recorded as ``schema_version`` 1)."""
LEGACY_TABLES = frozenset(
    {"accounts", "zones", "tokens", "global_keys", "purge_ledger", "schema_version", "api_secrets", "tasks"}
)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands. ``revision`` is None for an empty database and for one 0.1.0
    created (``legacy``), which has no ``alembic_version`` yet."""

    revision: str | None
    head: str
    legacy: bool

    @property
    def up_to_date(self) -> bool:
        """True when ``upgrade`` has nothing to do."""
        return self.revision == self.head


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    # Reading the revision files once per process: every open_database asks for the head.
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this code knows."""
    found = _scripts().get_current_head()
    assert found is not None, "the package ships no revision"
    return found


def _read(conn: Connection) -> SchemaState:
    tables = set(inspect(conn).get_table_names())
    latest = head()
    if "alembic_version" in tables:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is not None:
            try:
                _scripts().get_revision(revision)
            except CommandError:
                raise RuntimeError(
                    f"the database is at schema revision {revision}, which this release does not know: "
                    "it was written by a newer edgecache; upgrade edgecache instead of opening it with "
                    "an older release"
                ) from None
        return SchemaState(revision, latest, legacy=False)
    if "schema_version" in tables:
        version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar_one_or_none()
        missing = LEGACY_TABLES - tables
        if version != 1 or missing:
            raise RuntimeError(
                f"the database records schema_version {version} (missing tables: "
                f"{', '.join(sorted(missing)) or 'none'}); only edgecache 0.1.0's version 1 can be upgraded"
            )
        return SchemaState(None, latest, legacy=True)
    ours = tables & LEGACY_TABLES
    if ours:
        raise RuntimeError(
            f"the database has edgecache's tables ({', '.join(sorted(ours))}) but no record of its "
            "schema version; refusing to guess"
        )
    return SchemaState(None, latest, legacy=False)


def state(engine: Engine) -> SchemaState:
    """Where the database stands, without changing it."""
    with read_transaction(engine) as conn:
        return _read(conn)


def upgrade(engine: Engine) -> SchemaState:
    """Bring the database to ``head()`` (see the module rules); returns the state found under the
    lock, before upgrading (``up_to_date`` when another process had done it)."""
    try:
        found: SchemaState | None = state(engine)
    except (RuntimeError, SQLAlchemyError):
        # Read without the lock, the catalogue can change between two statements (another process
        # committing an upgrade drops ``schema_version`` after we listed it): decide under the lock.
        found = None
    if found is not None and found.up_to_date:
        # The common case, decided without the lock: a node starting beside running ones never
        # holds up their writes.
        return found
    with migration_transaction(engine) as conn:
        found = _read(conn)
        if found.up_to_date:
            return found
        cfg = _config(conn)
        if found.legacy:
            command.stamp(cfg, LEGACY_REVISION)
        command.upgrade(cfg, "head")
        return found
