"""``cache_reserve``: each zone's Cache Reserve setting and its latest clear (issue 7)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table (no row: the zone's reserve is off and was never cleared)."""
    op.create_table(
        "cache_reserve",
        sa.Column("zone_id", sa.String(32), nullable=False),
        sa.Column("value", sa.String(3), nullable=False),
        sa.Column("modified_on", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_state", sa.String(16), nullable=True),
        sa.Column("clear_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_objects", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("clear_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("zone_id", name="pk_cache_reserve"),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"], name="fk_cache_reserve_zone_id_zones"),
        sa.CheckConstraint("value IN ('on', 'off')", name="ck_cache_reserve_value"),
        sa.CheckConstraint(
            "clear_state IS NULL OR clear_state IN ('In-progress', 'Completed')",
            name="ck_cache_reserve_clear_state",
        ),
    )
