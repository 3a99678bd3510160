"""Drop ``schema_version``: Alembic's ``alembic_version`` records the revision from now on.

Its one row (version 1, written when 0.1.0 created the database) says nothing the stamp at
revision 0001 does not.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the table 0.1.0 kept its version in."""
    op.drop_table("schema_version")
