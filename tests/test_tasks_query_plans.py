"""Every query the task and ledger stores send is served by an index, on SQLite and on a real
PostgreSQL: the listing of DescribePurgeTasks with each of its filters, the Cloudflare and CLI
lookups by job, retention, the timeout sweep, the restart's resume, and the acknowledgements
(decision 0022 dropped two indexes of ``tasks`` for one; a query left without an index would walk
the whole table, a million rows in ``bench/tasks_api.py``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.identity import IdentityStore
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.schema import tasks as tasks_table
from edgecache.db.tasks import NewTask, TaskQuery, TaskStore
from pg import PostgresServer, postgres_server_fixture  # noqa: F401

ACCOUNT = "a" * 32
ZONE = "b" * 32
JOB = "1" * 32
LEADING = {"pk_tasks": "id", "pk_purge_ledger": "seq"} | {
    ix.name: next(iter(ix.columns)).name for ix in tasks_table.indexes
}
"""The first column of each index of ``tasks`` and ``purge_ledger``."""
TABLES = r"\b(tasks|purge_ledger)\b"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    eng = open_database(url)
    now = datetime.now(UTC)
    ids = IdentityStore(eng)
    ids.upsert_account(ACCOUNT, "acme", "enterprise", now)
    ids.upsert_zone(ZONE, ACCOUNT, "example.com", "enterprise", now)
    yield eng
    eng.dispose()


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
    assert ledger.by_job(JOB) is not None
    assert ledger.by_job("2" * 32) is None  # a prefetch job: tasks, no ledger row
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


def sqlite_statements(engine: Engine) -> list[str]:
    """Every statement on ``tasks`` the stores send (SQLite's trace: bound values written in, and
    the statements run on the driver's cursor as well)."""
    sent: list[str] = []
    event.listen(engine, "connect", lambda dbapi, _record: dbapi.set_trace_callback(sent.append))
    engine.dispose()  # connections from here on are traced
    run_every_query(engine)
    return [s for s in sent if re.search(TABLES, s) and not s.lstrip().upper().startswith("INSERT")]


def test_every_task_query_uses_an_index(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        statements = sqlite_statements(engine)
        kinds = {s.split()[0].upper() for s in statements}
        assert kinds == {"SELECT", "UPDATE", "DELETE"}, kinds
        with engine.connect() as conn:
            for sql in statements:
                plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
                on_tables = [d for d in plan if re.search(r"\b(SCAN|SEARCH) " + TABLES, d)]
                assert on_tables, (sql, plan)
                for detail in on_tables:
                    # SEARCH: by an index's (or the rowid's) leading columns; the one walk allowed
                    # is of the partial index, which holds only the processing tasks.
                    walk = detail == "SCAN tasks USING INDEX ix_tasks_processing_seq"
                    assert detail.startswith("SEARCH") or walk, (sql, plan)
        return
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if re.search(TABLES, statement) and not statement.lstrip().upper().startswith("INSERT"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    run_every_query(engine)
    event.remove(engine, "before_cursor_execute", record)
    # The acknowledgement's statements run on the driver's cursor, outside SQLAlchemy's events.
    sent += [
        (
            "UPDATE tasks SET status = 'success' WHERE seq = 1 AND target = 'x' AND status = 'processing'",
            None,
        ),
        ("UPDATE tasks SET status = 'success' WHERE seq = 1 AND status = 'processing'", None),
    ]
    with engine.connect() as conn:
        # A table this small is cheaper to scan: make scans dearest, so the plan shows what the
        # indexes can serve.
        conn.execute(text("SET enable_seqscan = off"))
        for sql, params in sent:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql, params))
            assert not re.search("Seq Scan on " + TABLES, plan), (sql, plan)
            used = [name for name, _table in re.findall(r"using (\w+) on " + TABLES, plan)]
            used += re.findall(r"Bitmap Index Scan on (\w+)", plan)
            assert used, (sql, plan)
            for name in used:
                # A walk of the partial index reads only the processing tasks; any other index
                # must be searched by its leading column (PostgreSQL also checks later columns
                # of an index in a walk of all of it: a scan of the table in index order).
                if name != "ix_tasks_processing_seq":
                    assert re.search(rf"Index Cond: .*\b{LEADING[name]}\b", plan), (sql, plan)
