"""The schema of edgecache 0.1.0, the first release (its ``schema_version`` 1).

Frozen: written out table by table so it stays what 0.1.0 created while ``schema.py`` moves on.
Databases that 0.1.0 created are stamped at this revision instead of running it
(``edgecache.db.migrate``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

PLAN_CHECK = "plan IN ('free', 'pro', 'business', 'enterprise')"


def _utc(name: str, nullable: bool = False) -> sa.Column[object]:
    # schema.UTCDateTime's storage: timestamptz on PostgreSQL, fixed-width ISO text on SQLite.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _serial(name: str) -> sa.Column[int]:
    # BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (with the table's
    # sqlite_autoincrement), so a number is never handed out twice.
    return sa.Column(
        name, sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(start=1), nullable=False
    )


def upgrade() -> None:
    """Create every table, constraint and index of 0.1.0."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("plan", sa.String(16), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.CheckConstraint(PLAN_CHECK, name="ck_accounts_plan"),
    )
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        _utc("applied_at"),
        sa.PrimaryKeyConstraint("version", name="pk_schema_version"),
    )
    op.create_table(
        "api_secrets",
        sa.Column("secret_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("secret_key_enc", sa.Text(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("zones", sa.Text(), nullable=True),
        _utc("created_at"),
        _utc("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("secret_id", name="pk_api_secrets"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_api_secrets_account_id_accounts"),
    )
    op.create_index("ix_api_secrets_account_id", "api_secrets", ["account_id"])
    op.create_table(
        "global_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_global_keys"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_global_keys_account_id_accounts"),
        sa.UniqueConstraint("email", name="uq_global_keys_email"),
        sa.UniqueConstraint("key_hash", name="uq_global_keys_key_hash"),
    )
    op.create_index("ix_global_keys_account_id", "global_keys", ["account_id"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("zones", sa.Text(), nullable=True),
        _utc("created_at"),
        _utc("expires_at", nullable=True),
        _utc("revoked_at", nullable=True),
        _utc("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_tokens_account_id_accounts"),
        sa.UniqueConstraint("secret_hash", name="uq_tokens_secret_hash"),
    )
    op.create_index("ix_tokens_account_id", "tokens", ["account_id"])
    op.create_table(
        "zones",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("plan", sa.String(16), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_zones"),
        sa.CheckConstraint(PLAN_CHECK, name="ck_zones_plan"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_zones_account_id_accounts"),
    )
    op.create_index("ix_zones_account_id", "zones", ["account_id"])
    op.create_table(
        "purge_ledger",
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
        sqlite_autoincrement=True,
    )
    op.create_index("ix_purge_ledger_job_id", "purge_ledger", ["job_id"])
    op.create_table(
        "tasks",
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
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tasks_job", "tasks", ["job_id", "zone_id", "kind", "created_at"])
    processing = sa.text("status = 'processing'")
    op.create_index(
        "ix_tasks_processing", "tasks", ["created_at"], sqlite_where=processing, postgresql_where=processing
    )
    op.create_index("ix_tasks_seq", "tasks", ["seq"])
    op.create_index("ix_tasks_zone_kind_created", "tasks", ["zone_id", "kind", "created_at"])
    op.create_index("ix_tasks_zone_kind_status_created", "tasks", ["zone_id", "kind", "status", "created_at"])
    op.create_index("ix_tasks_zone_kind_type_created", "tasks", ["zone_id", "kind", "type", "created_at"])
