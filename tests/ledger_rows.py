"""Reading the purge ledger by job id, for tests: no product code reads it so (the ledger's
``job_id`` has no index, decision 0022); the job's tasks carry its seq."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from edgecache.db.ledger import LedgerRow, LedgerStore
from edgecache.db.tasks import TaskStore


def ledger_row_of_job(engine: Engine, job_id: str) -> LedgerRow | None:
    """The ledger row of the purge with this job id; None for a job with no purge (a prefetch job)
    and also once retention has deleted the job's tasks, although the ledger row is still there."""
    seqs = [t.seq for t in TaskStore(engine).by_job(job_id) if t.kind == "purge" and t.seq is not None]
    if not seqs:
        return None
    rows = LedgerStore(engine).after(seqs[0] - 1)
    return rows[0] if rows and rows[0].seq == seqs[0] and rows[0].job_id == job_id else None
