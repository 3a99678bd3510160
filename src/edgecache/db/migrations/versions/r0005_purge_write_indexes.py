"""Fewer indexes written by every purge: one of the tasks still processing, by ledger position,
instead of two; none on the ledger's job id.

``ix_tasks_seq`` (every task, by seq) and ``ix_tasks_processing`` (the processing tasks, by
creation time) become ``ix_tasks_processing_seq``: the processing tasks by seq. Every query that
used either names ``status = 'processing'`` (the acknowledgements by seq, the timeout sweep, the
purges to resume at start), and a task leaves the index once it is final, so the sweep reads it
whole; each purge's task row goes into five indexes instead of six. ``ix_purge_ledger_job_id``
served no query of the product: a purge is found by job through its tasks (``ix_tasks_job``),
which carry its seq (decision 0022).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Replace the two task indexes by the one; drop the ledger's job index."""
    op.drop_index("ix_purge_ledger_job_id", table_name="purge_ledger")
    op.drop_index("ix_tasks_seq", table_name="tasks")
    op.drop_index("ix_tasks_processing", table_name="tasks")
    processing = sa.text("status = 'processing'")
    op.create_index(
        "ix_tasks_processing_seq", "tasks", ["seq"], sqlite_where=processing, postgresql_where=processing
    )
