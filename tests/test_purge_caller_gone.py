"""A purge whose caller goes away: before its write runs, nothing is written, charged or put in
effect; once its write runs, the purge is committed and put in effect all the same (the answer
then goes nowhere). The purge service hands the ledger writer its own taker of the outcome, not a
future (decision 0025's addendum)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from edgecache.config import Zone
from edgecache.control.purges import PurgeRequest, PurgeService
from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import PLAN_LIMITS, RateLimiter
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.identity import IdentityStore
from edgecache.db.ledger import LedgerStore
from edgecache.db.tasks import TaskStore
from edgecache.edge.zones import ZoneTable
from edgecache.purge.selectors import Mode, Purge

ACCOUNT = "a" * 32
ZONE = Zone(
    id="b" * 32, account_id=ACCOUNT, name="example.com", hostnames=("example.com",), origin="http://o"
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = open_database(sqlite_url(tmp_path))
    now = datetime.now(UTC)
    ids = IdentityStore(eng)
    ids.upsert_account(ACCOUNT, "a", "enterprise", now)
    ids.upsert_zone(ZONE.id, ACCOUNT, ZONE.name, "enterprise", now)
    yield eng
    eng.dispose()


class _Service:
    """A purge service whose quota's first read of the day waits for ``gate`` (so a write can be
    held while it runs), with what it put in effect."""

    def __init__(self, engine: Engine, hold_in_write: bool) -> None:
        self.gate = threading.Event()
        self.in_write = threading.Event()
        self.applied: list[Purge] = []
        tasks = TaskStore(engine)

        def count_since(zone_id: str, kind: str, type_: str, since: datetime) -> int:
            if hold_in_write:
                self.in_write.set()
                assert self.gate.wait(30)
            return tasks.count_since(zone_id, kind, type_, since)

        self.quotas = QuotaService(count_since)
        limits = PLAN_LIMITS["enterprise"]
        self.service = PurgeService(
            ledger_store=LedgerStore(engine),
            task_store=tasks,
            quotas=self.quotas,
            limiter=RateLimiter(lambda _: limits),
            limits_for=lambda _: limits,
            apply=self.applied.append,
        )


async def _submit(svc: PurgeService, tag: str) -> None:
    zone = ZoneTable((ZONE,)).by_id[ZONE.id]
    req = PurgeRequest(tags=(tag,))
    await svc.submit(
        zone, Mode.DELETE, svc.items(zone, req), req, principal="p", dialect="cloudflare", rate_limited=True
    )


def test_a_caller_gone_before_its_write_runs_leaves_nothing(engine: Engine) -> None:
    held = _Service(engine, hold_in_write=False)
    running = threading.Event()

    def hold(_conn: Connection) -> None:
        running.set()
        assert held.gate.wait(30)

    async def main() -> None:
        blocker = held.service._writer.submit(hold)
        assert await asyncio.to_thread(running.wait, 30)
        task = asyncio.create_task(_submit(held.service, "gone"))
        await asyncio.sleep(0.05)  # the write is queued behind the held one
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        held.gate.set()
        await asyncio.wrap_future(blocker)
        await _submit(held.service, "after")  # the writer goes on with the next purge

    asyncio.run(main())
    held.service.close()
    rows = LedgerStore(engine).after(0)
    assert [r.selectors for r in rows] == [{"tags": ["after"]}]
    assert [p.seq for p in held.applied] == [rows[0].seq]
    quota = held.quotas.state(ZONE, "purge_cache_tag")
    assert quota.daily - quota.daily_available == 1  # the gone purge's tag was not charged


def test_a_caller_gone_while_its_write_runs_still_has_the_purge_committed_and_in_effect(
    engine: Engine,
) -> None:
    held = _Service(engine, hold_in_write=True)

    async def main() -> None:
        task = asyncio.create_task(_submit(held.service, "running"))
        assert await asyncio.to_thread(held.in_write.wait, 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        held.gate.set()
        for _ in range(500):  # the commit's settle runs on this loop
            if held.applied:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    held.service.close()
    rows = LedgerStore(engine).after(0)
    assert [r.selectors for r in rows] == [{"tags": ["running"]}]
    assert [p.seq for p in held.applied] == [rows[0].seq]


def test_a_purge_committed_but_not_applied_here_is_no_success_for_its_caller(engine: Engine) -> None:
    """The caller is woken as its purge commits and the purge is applied in the same loop callback:
    when the apply fails, the caller gets an error (its API answers 500), never an accepted purge
    that this node does not enforce, and it is not left waiting either."""
    limits = PLAN_LIMITS["enterprise"]

    def apply(purge: Purge) -> None:
        raise RuntimeError("the index refused it")

    svc = PurgeService(
        ledger_store=LedgerStore(engine),
        task_store=TaskStore(engine),
        quotas=QuotaService(TaskStore(engine).count_since),
        limiter=RateLimiter(lambda _: limits),
        limits_for=lambda _: limits,
        apply=apply,
    )

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        with pytest.raises(RuntimeError, match="not applied"):
            await asyncio.wait_for(_submit(svc, "t"), 10)

    try:
        asyncio.run(go())
    finally:
        svc.close()
