"""The purge ledger and the task store on both engines: SQLite (embedded) and a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.tasks import NewTask, TaskQuery, TaskStore
from ledger_rows import ledger_row_of_job
from zoned_db import ZONE, engine_fixture, postgres_server_fixture  # noqa: F401


def purge(ledger: LedgerStore, job: str, targets: list[str], at: datetime) -> int:
    return ledger.append(
        NewPurge(
            zone_id=ZONE,
            mode="delete",
            selectors={"files": targets},
            principal="token:x",
            dialect="cloudflare",
            job_id=job,
            created_at=at,
            tasks=[NewTask(t, "purge_url", "example.com", "delete") for t in targets],
        )
    )


def test_ledger_numbers_purges_and_tasks_follow_them(engine: Engine) -> None:
    ledger, tasks = LedgerStore(engine), TaskStore(engine)
    now = datetime.now(UTC)
    first = purge(ledger, "1" * 32, ["https://example.com/a", "https://example.com/b"], now)
    second = purge(ledger, "2" * 32, ["https://example.com/c"], now)
    assert second > first and ledger.position() == second
    assert [t.status for t in tasks.by_job("1" * 32)] == ["processing", "processing"]
    assert tasks.finish_purge(first, {"https://example.com/a": 3}, now) == 2
    done = {t.target: t for t in tasks.by_job("1" * 32)}
    assert done["https://example.com/a"].matched == 3 and done["https://example.com/b"].matched == 0
    assert {t.status for t in done.values()} == {"success"}
    row = ledger_row_of_job(engine, "2" * 32)
    assert row is not None and row.seq == second and row.selectors == {"files": ["https://example.com/c"]}


def test_ledger_by_job_finds_nothing_once_retention_deleted_the_tasks(engine: Engine) -> None:
    ledger, tasks = LedgerStore(engine), TaskStore(engine)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    seq = purge(ledger, "3" * 32, ["https://example.com/old"], long_ago)
    assert tasks.forget(long_ago + timedelta(seconds=1), [ZONE]) == 1
    assert ledger_row_of_job(engine, "3" * 32) is None
    assert [row.seq for row in ledger.after(seq - 1)] == [seq]  # the ledger row itself is kept


def test_timeout_is_final_and_late_acknowledgements_do_not_undo_it(engine: Engine) -> None:
    ledger, tasks = LedgerStore(engine), TaskStore(engine)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    seq = purge(ledger, "3" * 32, ["https://example.com/slow"], long_ago)
    assert tasks.expire(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC)) == 1
    assert tasks.finish_purge(seq, {}, datetime.now(UTC)) == 0
    [task] = tasks.by_job("3" * 32)
    assert (task.status, task.fail_type) == ("timeout", "taskFailed")


def test_queries_filter_page_and_search(engine: Engine) -> None:
    ledger, tasks = LedgerStore(engine), TaskStore(engine)
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(30):
        purge(ledger, f"{i:032x}", [f"https://example.com/p/{i}_x%"], base + timedelta(seconds=i))
    total, page = tasks.query(TaskQuery(zone_id=ZONE, kind="purge", start=base, limit=10, offset=5))
    assert total == 30 and page[0].target == "https://example.com/p/24_x%"
    total, found = tasks.query(TaskQuery(zone_id=ZONE, kind="purge", target="/1_x%", target_fuzzy=True))
    assert total == 1 and found[0].target == "https://example.com/p/1_x%"  # % and _ are literal
    total, _ = tasks.query(TaskQuery(zone_id=ZONE, kind="purge", target="/P/1_X%", target_fuzzy=True))
    assert total == 1  # fuzzy search ignores case on both engines
    total, _ = tasks.query(TaskQuery(zone_id=ZONE, kind="purge", statuses=("success",)))
    assert total == 0
    assert tasks.count_since(ZONE, "purge", "purge_url", base) == 30
    assert tasks.forget(base + timedelta(seconds=10), [ZONE]) == 10
