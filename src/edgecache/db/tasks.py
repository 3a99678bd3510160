"""Purge and prefetch tasks: one row per target of a job, queried by both dialects.

Rules:
- A job is one request (one ledger row for a purge); it has one task per target, all sharing the
  job id. Purge tasks are written in the same transaction as their ledger row, so an accepted
  purge always has its tasks.
- Status moves only forward from ``processing`` to a final status (``success``, ``failed``,
  ``timeout``, ``canceled``, and ``invalid`` for prefetch); updates name the expected current
  status, so a late acknowledgement cannot overwrite a timeout.
- Queries always name a zone and a time range or a job id, and are served by the
  ``(zone_id, kind, created_at, type, status)`` and ``job_id`` indexes; the type and status
  filters are read from the first within the range (decision 0034); ``target`` filters may be
  fuzzy (substring) and are evaluated within that range. What reads only processing tasks (the
  acknowledgements by seq, the timeout sweep, the restart's resume) uses the partial index of
  processing tasks by seq (decision 0022; ``tests/test_tasks_query_plans.py`` reads every plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from edgecache.db.engine import read_transaction, write_transaction
from edgecache.db.ids import above_high_water
from edgecache.db.prepared import Prepared
from edgecache.db.schema import TASK_KINDS, UNSUCCESSFUL, tasks

PROCESSING = "processing"
MAX_OFFSET = 2**63 - 1
"""The largest ``TaskQuery.offset`` the database takes (a signed 64-bit integer on both engines)."""


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create."""

    target: str
    type: str
    domain: str | None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A stored task."""

    id: int
    job_id: str
    kind: str
    zone_id: str
    seq: int | None
    target: str
    domain: str | None
    type: str
    method: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    fail_type: str | None
    fail_message: str | None
    principal: str
    dialect: str
    matched: int | None


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Filters of a task listing; every given filter must hold (values within one are ORed)."""

    zone_id: str
    kind: str
    start: datetime | None = None
    end: datetime | None = None
    job_id: str | None = None
    target: str | None = None
    target_fuzzy: bool = False
    domains: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    offset: int = 0
    limit: int = 20


_IS_PROCESSING = tasks.c.status == literal_column(f"'{PROCESSING}'")
"""The status in the SQL text, not bound: SQLite re-prepares a statement at each execution when a
bound value decides whether a partial index applies (``ix_tasks_processing_seq``), about two
thirds of an acknowledgement's statement (decision 0025's addendum)."""
_SUCCEED_TARGET = Prepared(
    update(tasks)
    .where(tasks.c.seq == bindparam("seq"), tasks.c.target == bindparam("target"), _IS_PROCESSING)
    .values(status="success", matched=bindparam("n"), updated_at=bindparam("now"))
)
_SUCCEED_REST = Prepared(
    update(tasks)
    .where(tasks.c.seq == bindparam("seq"), _IS_PROCESSING)
    .values(status="success", matched=0, updated_at=bindparam("now"))
)
_TASK_COLUMNS = (
    "job_id",
    "kind",
    "zone_id",
    "seq",
    "target",
    "domain",
    "type",
    "method",
    "status",
    "created_at",
    "updated_at",
    "principal",
    "dialect",
)
_INSERT = Prepared(insert(tasks), column_keys=_TASK_COLUMNS)
_INSERT_SQLITE = Prepared(
    insert(tasks).values(id=above_high_water(tasks, tasks.c.id)), column_keys=_TASK_COLUMNS
)
"""SQLite's: ids above any deleted (``edgecache.db.ids``); PostgreSQL's identity never goes back."""


def finish_purges_in(conn: Connection, acks: Sequence[tuple[int, dict[str, int]]], now: datetime) -> int:
    """:meth:`TaskStore.finish_purges` inside the caller's transaction (the ledger folds the
    acknowledgements gathered since its last write into its next one)."""
    done = 0
    for seq, matched in acks:
        # The targets that matched something first, then the rest of the purge's tasks at 0: one
        # statement for the common acknowledgement (nothing matched), none to read the tasks.
        for target, n in matched.items():
            if n:
                done += _SUCCEED_TARGET.run(conn, {"seq": seq, "target": target, "n": n, "now": now})
        done += _SUCCEED_REST.run(conn, {"seq": seq, "now": now})
    return done


def insert_task_rows(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Insert a job's task rows (:func:`task_rows`) inside the caller's transaction, bound as
    tuples (no mapping a task: every purge's)."""
    if rows:
        (_INSERT_SQLITE if conn.dialect.name == "sqlite" else _INSERT).run_rows(conn, rows)


def task_rows(
    *,
    job_id: str,
    kind: str,
    zone_id: str,
    seq: int | None,
    items: Sequence[NewTask],
    principal: str,
    dialect: str,
    created_at: datetime,
) -> list[tuple[Any, ...]]:
    """The rows :func:`insert_task_rows` writes for a job's tasks, one tuple a task, its values in
    ``_TASK_COLUMNS``' order."""
    return [
        (
            job_id,
            kind,
            zone_id,
            seq,
            item.target,
            item.domain,
            item.type,
            item.method,
            PROCESSING,
            created_at,
            created_at,
            principal,
            dialect,
        )
        for item in items
    ]


def _row(r: Any) -> TaskRow:
    return TaskRow(
        id=r.id,
        job_id=r.job_id,
        kind=r.kind,
        zone_id=r.zone_id,
        seq=r.seq,
        target=r.target,
        domain=r.domain,
        type=r.type,
        method=r.method,
        status=r.status,
        created_at=r.created_at,
        updated_at=r.updated_at,
        fail_type=r.fail_type,
        fail_message=r.fail_message,
        principal=r.principal,
        dialect=r.dialect,
        matched=r.matched,
    )


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job none of whose tasks is still processing."""

    job_id: str
    kind: str
    zone_id: str
    statuses: dict[str, int]
    """How many of its tasks ended in each status."""
    ended_at: datetime


class TaskStore:
    """Task rows: creation (with a job), completion, expiry, retention and queries."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_job(
        self,
        *,
        job_id: str,
        kind: str,
        zone_id: str,
        items: Sequence[NewTask],
        principal: str,
        dialect: str,
        created_at: datetime,
    ) -> None:
        """Insert a job that has no ledger row (prefetch)."""
        with write_transaction(self._engine) as conn:
            insert_task_rows(
                conn,
                task_rows(
                    job_id=job_id,
                    kind=kind,
                    zone_id=zone_id,
                    seq=None,
                    items=items,
                    principal=principal,
                    dialect=dialect,
                    created_at=created_at,
                ),
            )

    def finished_jobs(self, zone_ids: Sequence[str], kind: str, since: datetime) -> list[FinishedJob]:
        """Jobs of ``kind`` created since ``since`` in these zones whose tasks all reached a final
        status, with their count per status (one range of the (zone, kind, created_at) index per
        zone; jobs end within the task timeout of their creation, so a short window finds them)."""
        out: list[FinishedJob] = []
        with read_transaction(self._engine) as conn:
            for zone_id in zone_ids:
                rows = conn.execute(
                    select(tasks.c.job_id, tasks.c.status, func.count(), func.max(tasks.c.updated_at))
                    .where(tasks.c.zone_id == zone_id, tasks.c.kind == kind, tasks.c.created_at >= since)
                    .group_by(tasks.c.job_id, tasks.c.status)
                ).all()
                by_job: dict[str, dict[str, int]] = {}
                ended: dict[str, datetime] = {}
                for job_id, status, n, last in rows:
                    by_job.setdefault(job_id, {})[status] = int(n)
                    ended[job_id] = max(ended.get(job_id, last), last)
                for job_id, counts in by_job.items():
                    if PROCESSING not in counts:
                        out.append(FinishedJob(job_id, kind, zone_id, counts, ended[job_id]))
        return out

    def finish_purges(self, acks: Sequence[tuple[int, dict[str, int]]], now: datetime) -> int:
        """Mark the tasks of several purges successful, with how many entries each target matched,
        in one transaction (acknowledgements arrive in bursts; one commit each would queue them
        behind each other on the writer)."""
        with write_transaction(self._engine) as conn:
            return finish_purges_in(conn, acks, now)

    def finish_purge(self, seq: int, matched: dict[str, int], now: datetime) -> int:
        """Mark one purge's tasks successful (see :meth:`finish_purges`)."""
        return self.finish_purges([(seq, matched)], now)

    def finish_task(
        self,
        task_id: int,
        status: str,
        now: datetime,
        *,
        fail_type: str | None = None,
        fail_message: str | None = None,
    ) -> bool:
        """Move one processing task to a final status."""
        with write_transaction(self._engine) as conn:
            done = conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == PROCESSING)
                .values(status=status, updated_at=now, fail_type=fail_type, fail_message=fail_message)
            )
            return bool(done.rowcount)

    def expire(self, older_than: datetime, now: datetime) -> int:
        """Tasks still processing after their deadline become ``timeout``."""
        with write_transaction(self._engine) as conn:
            done = conn.execute(
                update(tasks)
                .where(tasks.c.status == PROCESSING, tasks.c.created_at < older_than)
                .values(
                    status="timeout",
                    updated_at=now,
                    fail_type="taskFailed",
                    fail_message="not acknowledged by every node in time",
                )
            )
            return int(done.rowcount)

    def forget(self, before: datetime, zone_ids: Sequence[str]) -> int:
        """Retention: delete the zones' tasks created before ``before``, one range of the
        (zone, kind, created_at) index per zone and kind rather than a scan of the table."""
        removed = 0
        with write_transaction(self._engine) as conn:
            for zone_id in zone_ids:
                for kind in TASK_KINDS:
                    removed += int(
                        conn.execute(
                            delete(tasks).where(
                                tasks.c.zone_id == zone_id, tasks.c.kind == kind, tasks.c.created_at < before
                            )
                        ).rowcount
                    )
        return removed

    def by_job(self, job_id: str) -> list[TaskRow]:
        """Every task of a job, in creation order."""
        with read_transaction(self._engine) as conn:
            rows = conn.execute(select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.id)).all()
        return [_row(r) for r in rows]

    def processing_purge_seqs(self) -> list[int]:
        """Ledger positions of purges with tasks still processing (to resume after a restart)."""
        with read_transaction(self._engine) as conn:
            rows = conn.execute(
                select(tasks.c.seq).where(tasks.c.status == PROCESSING, tasks.c.seq.is_not(None)).distinct()
            ).all()
        return sorted(int(r.seq) for r in rows)

    def count_since(self, zone_id: str, kind: str, type_: str, since: datetime) -> int:
        """Tasks of one type created in a zone since an instant (daily quota accounting)."""
        with read_transaction(self._engine) as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        tasks.c.zone_id == zone_id,
                        tasks.c.kind == kind,
                        tasks.c.created_at >= since,
                        tasks.c.type == type_,
                    )
                ).scalar_one()
            )

    def query(self, q: TaskQuery) -> tuple[int, list[TaskRow]]:
        """Total matching, and one page of tasks, newest first."""
        conds: list[ColumnElement[bool]] = [tasks.c.zone_id == q.zone_id, tasks.c.kind == q.kind]
        if q.start is not None:
            conds.append(tasks.c.created_at >= q.start)
        if q.end is not None:
            conds.append(tasks.c.created_at <= q.end)
        if q.job_id is not None:
            conds.append(tasks.c.job_id == q.job_id)
        if q.target is not None:
            if q.target_fuzzy:
                # lower() on both sides: LIKE is case-insensitive on SQLite but not on PostgreSQL.
                escaped = q.target.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                conds.append(func.lower(tasks.c.target).like(f"%{escaped}%", escape="\\"))
            else:
                conds.append(tasks.c.target == q.target)
        if q.domains:
            conds.append(or_(*(tasks.c.domain == d for d in q.domains)))
        if q.statuses:
            conds.append(tasks.c.status.in_(q.statuses))
            if not {PROCESSING, "success"} & set(q.statuses):
                # The partial index's own condition, so that both planners see it applies.
                conds.append(literal_column(UNSUCCESSFUL))
        if q.types:
            conds.append(tasks.c.type.in_(q.types))
        where = and_(*conds)
        with read_transaction(self._engine) as conn:
            total = int(conn.execute(select(func.count()).select_from(tasks).where(where)).scalar_one())
            rows = conn.execute(
                select(tasks)
                .where(where)
                .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
                .offset(q.offset)
                .limit(q.limit)
            ).all()
        return total, [_row(r) for r in rows]
