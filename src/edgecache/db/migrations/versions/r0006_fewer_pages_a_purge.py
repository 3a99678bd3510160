"""Fewer pages in every purge's commit: no ``AUTOINCREMENT`` on the ledger and the tasks, one task
index for the listing instead of three.

SQLite: ``purge_ledger`` and ``tasks`` are rebuilt without ``AUTOINCREMENT`` (it is part of a
table's definition), every row and id kept; their ``sqlite_sequence`` numbers go to the new
``high_water`` table, and a trigger on each records there the id of a row deleted while it was
above every id left, so that the inserts never hand out a number again (``edgecache.db.ids``).
PostgreSQL keeps its identities; ``high_water`` exists there too, empty.

Both: ``ix_tasks_zone_kind_created``, ``ix_tasks_zone_kind_status_created`` and
``ix_tasks_zone_kind_type_created`` become ``ix_tasks_listing`` (zone_id, kind, created_at, type,
status): the type filter and the status filter for successful or processing tasks read it over the
time range instead of an index of their own; the status filter for the others reads
``ix_tasks_unsuccessful``, partial, which a purge's commit never writes (decision 0034). A million
tasks take seconds to rebuild, under the migration lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

_TRIGGER = (
    "CREATE TRIGGER tr_{table}_high_water AFTER DELETE ON {table} "
    "WHEN old.{column} > coalesce((SELECT max({column}) FROM {table}), 0) "
    "BEGIN INSERT INTO high_water (name, last) VALUES ('{table}', old.{column}) "
    "ON CONFLICT (name) DO UPDATE SET last = max(last, excluded.last); END"
)
"""Run after each deleted row: only a row above every one left is recorded (a retention delete of
the oldest rows writes nothing)."""


def _utc(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _serial(name: str) -> sa.Column[int]:
    # BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
    return sa.Column(
        name, sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(start=1), nullable=False
    )


def _ledger(name: str) -> None:
    op.create_table(
        name,
        _serial("seq"),
        sa.Column("zone_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("selectors", sa.Text(), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("dialect", sa.String(16), nullable=False),
        _utc("created_at"),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_purge_ledger"),
        sa.CheckConstraint("mode IN ('delete', 'invalidate')", name="ck_purge_ledger_mode"),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"], name="fk_purge_ledger_zone_id_zones"),
    )


def _tasks(name: str) -> None:
    op.create_table(
        name,
        _serial("id"),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("zone_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("domain", sa.String(253), nullable=True),
        sa.Column("type", sa.String(24), nullable=False),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.Column("fail_type", sa.String(40), nullable=True),
        sa.Column("fail_message", sa.Text(), nullable=True),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("dialect", sa.String(16), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.CheckConstraint("kind IN ('purge', 'prefetch')", name="ck_tasks_kind"),
        sa.CheckConstraint(
            "status IN ('processing', 'success', 'failed', 'timeout', 'canceled', 'invalid')",
            name="ck_tasks_status",
        ),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"], name="fk_tasks_zone_id_zones"),
    )


_LEDGER_COLUMNS = "seq, zone_id, mode, selectors, principal, dialect, created_at, job_id"
_TASK_COLUMNS = (
    "id, job_id, kind, zone_id, seq, target, domain, type, method, status, created_at, updated_at, "
    "fail_type, fail_message, principal, dialect, matched"
)


def _rebuild_sqlite() -> None:
    """The two tables again without AUTOINCREMENT, their rows and ids copied."""
    op.execute(
        "INSERT INTO high_water (name, last) SELECT name, seq FROM sqlite_sequence "
        "WHERE name IN ('purge_ledger', 'tasks')"
    )
    _ledger("purge_ledger_0006")
    op.execute(
        f"INSERT INTO purge_ledger_0006 ({_LEDGER_COLUMNS}) SELECT {_LEDGER_COLUMNS} FROM purge_ledger"
    )
    op.drop_table("purge_ledger")
    op.rename_table("purge_ledger_0006", "purge_ledger")
    _tasks("tasks_0006")
    op.execute(f"INSERT INTO tasks_0006 ({_TASK_COLUMNS}) SELECT {_TASK_COLUMNS} FROM tasks")
    op.drop_table("tasks")  # its indexes with it
    op.rename_table("tasks_0006", "tasks")
    op.create_index("ix_tasks_job", "tasks", ["job_id", "zone_id", "kind", "created_at"])
    processing = sa.text("status = 'processing'")
    op.create_index("ix_tasks_processing_seq", "tasks", ["seq"], sqlite_where=processing)
    op.execute(_TRIGGER.format(table="purge_ledger", column="seq"))
    op.execute(_TRIGGER.format(table="tasks", column="id"))


def upgrade() -> None:
    """``high_water``; on SQLite the two tables rebuilt; the listing's one index."""
    op.create_table(
        "high_water",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_high_water"),
    )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite()
    else:
        op.drop_index("ix_tasks_zone_kind_created", table_name="tasks")
        op.drop_index("ix_tasks_zone_kind_status_created", table_name="tasks")
        op.drop_index("ix_tasks_zone_kind_type_created", table_name="tasks")
    op.create_index("ix_tasks_listing", "tasks", ["zone_id", "kind", "created_at", "type", "status"])
    unsuccessful = sa.text("status NOT IN ('processing', 'success')")
    op.create_index(
        "ix_tasks_unsuccessful",
        "tasks",
        ["zone_id", "kind", "status", "created_at"],
        sqlite_where=unsuccessful,
        postgresql_where=unsuccessful,
    )
