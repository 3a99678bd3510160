"""Every query the task and ledger stores send is served by an index, on SQLite and on a real
PostgreSQL: the listing of DescribePurgeTasks with each of its filters, the Cloudflare and CLI
lookups by job, retention, the timeout sweep, the restart's resume, and the acknowledgements
(decision 0022 dropped two indexes of ``tasks`` for one; a query left without an index would walk
the whole table, a million rows in ``bench/tasks_api.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import Engine

from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.prepared import Prepared
from edgecache.db.schema import tasks as tasks_table
from edgecache.db.tasks import NewTask, TaskQuery, TaskStore
from zoned_db import ZONE, engine_fixture, postgres_server_fixture  # noqa: F401

JOB = "1" * 32
LEADING = {"pk_tasks": "id", "pk_purge_ledger": "seq"} | {
    ix.name: next(iter(ix.columns)).name for ix in tasks_table.indexes
}
"""The first column of each index of ``tasks`` and ``purge_ledger``."""
TABLES = r"\b(tasks|purge_ledger)\b"


def run_every_query(engine: Engine) -> None:
    """What the APIs, the CLI and the node's housekeeping ask of the stores."""
    ledger, tasks = LedgerStore(engine), TaskStore(engine)
    now = datetime.now(UTC)
    seq = ledger.append(
        NewPurge(
            ZONE,
            "delete",
            {"files": ["https://example.com/a"]},
            "token:x",
            "cloudflare",
            JOB,
            now,
            [
                NewTask("https://example.com/a", "purge_url", "example.com", "delete"),
                NewTask("t", "purge_cache_tag", None),
            ],
        )
    )
    tasks.create_job(
        job_id="2" * 32,
        kind="prefetch",
        zone_id=ZONE,
        items=[NewTask("https://example.com/b", "prefetch_url", "example.com")],
        principal="secret:x",
        dialect="edgeone",
        created_at=now,
    )
    hour = timedelta(hours=1)
    for q in (
        TaskQuery(ZONE, "purge"),
        TaskQuery(ZONE, "purge", start=now - hour, end=now + hour),
        TaskQuery(ZONE, "purge", start=now - hour, end=now + hour, job_id=JOB),
        TaskQuery(ZONE, "purge", target="https://example.com/a"),
        TaskQuery(ZONE, "purge", target="example", target_fuzzy=True),
        TaskQuery(ZONE, "purge", domains=("example.com",)),
        TaskQuery(ZONE, "purge", statuses=("failed", "timeout")),
        TaskQuery(ZONE, "purge", types=("purge_url",)),
        TaskQuery(ZONE, "prefetch", start=now - hour, statuses=("invalid",), types=("prefetch_url",)),
    ):
        tasks.query(q)
    tasks.by_job(JOB)
    ledger.after(seq - 1)
    ledger.position()
    tasks.count_since(ZONE, "purge", "purge_url", now - hour)
    tasks.processing_purge_seqs()
    tasks.finish_purge(seq, {"https://example.com/a": 1, "t": 0}, now)
    [prefetched] = tasks.by_job("2" * 32)
    tasks.finish_task(prefetched.id, "success", now)
    tasks.expire(now - hour, now)
    tasks.finished_jobs([ZONE], "purge", now - hour)
    tasks.forget(now - 24 * hour, [ZONE])


def statements_sent(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every statement on ``tasks`` and ``purge_ledger`` the stores send but inserts, with its bound
    values, as the driver receives it: through SQLAlchemy, and the prepared ones (the
    acknowledgements) as ``Prepared`` compiles and binds them for this engine's dialect."""
    sent: list[tuple[str, Any]] = []

    def keep(statement: str, parameters: Any) -> None:
        if re.search(TABLES, statement) and not statement.lstrip().upper().startswith("INSERT"):
            sent.append((statement, parameters))

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        keep(statement, parameters)

    def recorded(method: Callable[[Prepared, Connection, Mapping[str, Any]], Any]) -> Callable[..., Any]:
        def run(self: Prepared, conn: Connection, params: Mapping[str, Any]) -> Any:
            compiled = self._compiled(conn.dialect)
            keep(compiled.sql, compiled.bind(params))
            return method(self, conn, params)

        return run

    monkeypatch.setattr(Prepared, "run", recorded(Prepared.run))
    monkeypatch.setattr(Prepared, "rows", recorded(Prepared.rows))
    event.listen(engine, "before_cursor_execute", record)
    try:
        run_every_query(engine)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return sent


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A PostgreSQL JSON plan node and every node under it."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_every_task_query_uses_an_index(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = statements_sent(engine, monkeypatch)
    assert {sql.split()[0].upper() for sql, _params in sent} == {"SELECT", "UPDATE", "DELETE"}
    # Both acknowledgement statements, as ``Prepared`` sends them (only they set ``matched``).
    assert len({sql for sql, _params in sent if sql.startswith("UPDATE") and "matched" in sql}) == 2
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            for sql, params in sent:
                plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
                on_tables = [d for d in plan if re.search(r"\b(SCAN|SEARCH) " + TABLES, d)]
                assert on_tables, (sql, plan)
                for detail in on_tables:
                    # SEARCH: by an index's (or the rowid's) leading columns; the one walk allowed
                    # is of the partial index, which holds only the processing tasks.
                    walk = detail == "SCAN tasks USING INDEX ix_tasks_processing_seq"
                    assert detail.startswith("SEARCH") or walk, (sql, params, plan)
        return
    with engine.connect() as conn:
        # A table this small is cheaper to scan: make scans dearest, so the plan shows what the
        # indexes can serve.
        conn.execute(text("SET enable_seqscan = off"))
        for sql, params in sent:
            found = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar_one()
            root = json.loads(found) if isinstance(found, str) else found
            used = []
            for node in plan_nodes(root[0]["Plan"]):
                scan = node["Node Type"] == "Seq Scan" and node.get("Relation Name") in (
                    "tasks",
                    "purge_ledger",
                )
                assert not scan, (sql, params, root)
                name = node.get("Index Name")
                if name not in LEADING:
                    continue
                used.append(name)
                # A walk of the partial index reads only the processing tasks; any other index
                # must be searched by its leading column, in this node's own condition
                # (PostgreSQL also walks a whole index checking later columns: a scan of the
                # table in index order).
                if name != "ix_tasks_processing_seq":
                    assert re.search(rf"\b{LEADING[name]}\b", node.get("Index Cond", "")), (sql, params, node)
            assert used, (sql, params, root)


def test_a_listing_of_unsuccessful_tasks_reads_their_own_index(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day's listing of failed (timed out, canceled, invalid) tasks reads the partial index of
    them, not the zone's whole day (decision 0034); one naming a success walks the day."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans; PostgreSQL's index use is checked above")
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        now = datetime.now(UTC)
        start = now - timedelta(days=1)
        TaskStore(engine).query(TaskQuery(ZONE, "purge", statuses=("failed",), start=start, end=now))
        unsuccessful = list(sent)
        sent.clear()
        TaskStore(engine).query(
            TaskQuery(ZONE, "purge", statuses=("failed", "success"), start=start, end=now)
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as conn:

        def plans(statements: list[tuple[str, Any]]) -> list[str]:
            return [
                " ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
                for sql, params in statements
            ]

        assert all("ix_tasks_unsuccessful" in plan for plan in plans(unsuccessful)), plans(unsuccessful)
        assert all("ix_tasks_listing" in plan for plan in plans(sent)), plans(sent)
