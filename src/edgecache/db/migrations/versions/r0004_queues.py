"""Queues: queues, their consumers and messages, deleted-queue tombstones, event subscriptions and
the log of published events (docs/decisions/0010-queues.md).

Frozen: written out table by table, as ``schema.py`` had them when queues arrived.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool = False) -> sa.Column[object]:
    # schema.UTCDateTime's storage: timestamptz on PostgreSQL, fixed-width ISO text on SQLite.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the six queue tables and their indexes."""
    op.create_table(
        "queues",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        _utc("created_at"),
        _utc("modified_at"),
        sa.Column("delivery_delay", sa.Integer(), nullable=False),
        sa.Column("delivery_paused", sa.Boolean(), nullable=False),
        sa.Column("retention_seconds", sa.Integer(), nullable=False),
        _utc("purge_started_at", nullable=True),
        sa.Column("purge_through", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _utc("purge_completed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queues"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_queues_account_id_accounts"),
        sa.UniqueConstraint("account_id", "name", name="uq_queues_account_id_name"),
    )
    op.create_table(
        "queue_consumers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        _utc("created_at"),
        sa.Column("dead_letter_queue", sa.String(63), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay", sa.Integer(), nullable=False),
        sa.Column("visibility_timeout_ms", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("secret_enc", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queue_consumers"),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], name="fk_queue_consumers_queue_id_queues"),
        sa.UniqueConstraint("queue_id", name="uq_queue_consumers_queue_id"),
        sa.CheckConstraint("type IN ('http_pull', 'http_push')", name="ck_queue_consumers_type"),
    )
    op.create_table(
        "queue_messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(start=1),
            nullable=False,
        ),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("visible_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_queue_messages"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_queue_messages_ready", "queue_messages", ["queue_id", "visible_ms", "seq"])
    op.create_index("ix_queue_messages_age", "queue_messages", ["queue_id", "created_ms", "size"])
    op.create_table(
        "queue_tombstones",
        sa.Column("queue_id", sa.String(32), nullable=False),
        _utc("deleted_at"),
        sa.PrimaryKeyConstraint("queue_id", name="pk_queue_tombstones"),
    )
    op.create_table(
        "queue_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _utc("created_at"),
        _utc("modified_at"),
        sa.PrimaryKeyConstraint("id", name="pk_queue_subscriptions"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_queue_subscriptions_account_id_accounts"
        ),
    )
    op.create_index("ix_queue_subscriptions_account_id", "queue_subscriptions", ["account_id"])
    op.create_table(
        "queue_event_log",
        sa.Column("key", sa.String(200), nullable=False),
        _utc("published_at"),
        sa.PrimaryKeyConstraint("key", name="pk_queue_event_log"),
    )
    op.create_index("ix_queue_event_log_published_at", "queue_event_log", ["published_at"])
