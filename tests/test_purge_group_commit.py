"""Purges that arrive together share one durable commit, and one that fails is undone alone: the
others are answered, recorded and in effect; the failed one leaves no ledger row, no task, and no
quota charged. Through the official Cloudflare SDK on a real node, with SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import cloudflare
import pytest
from sqlalchemy import Connection

from conftest import ZONE_ID, Route, Stack
from edgecache.control import purges as purges_module
from edgecache.control.purges import AcceptedPurge, FileTarget, PurgeRequest
from edgecache.db.ledger import LedgerStore
from edgecache.db.writer import GroupWriter, TransactionLost
from edgecache.purge.selectors import Mode
from pg import PostgresServer, postgres_server_fixture  # noqa: F401


def _hold(writer: GroupWriter) -> tuple[threading.Event, Future[None]]:
    """Occupy ``writer`` until the gate returned is set: what is submitted meanwhile waits, and is
    taken as one group."""
    gate, running = threading.Event(), threading.Event()

    def hold(_conn: Connection) -> None:
        running.set()
        gate.wait(30)

    held = writer.submit(hold)
    assert running.wait(30)
    return gate, held


@pytest.fixture(params=["sqlite", "postgresql"])
def any_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A node of its own on either database (the writer is held below: not the shared one)."""
    url = None
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    stack = Stack(database_url=url)
    try:
        yield stack
    finally:
        stack.close()


def test_concurrent_purges_share_a_commit_and_a_failing_one_is_undone_alone(any_stack: Stack) -> None:
    stack = any_stack
    node = stack.node
    zone = node.zones.by_id[ZONE_ID]
    cf = cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{node.control_port}/client/v4", max_retries=0, api_token=stack.token()
    )
    for i in range(5):
        stack.origin.routes[f"/group/{i}"] = Route(
            headers={"Cache-Control": "max-age=600", "Cache-Tag": f"group-{i}"}
        )
        stack.request(f"/group/{i}")
        assert stack.request(f"/group/{i}")[1]["cf-cache-status"] == "HIT"
    # The token is verified now (a write of its last use), not while the writer holds the lock.
    warm_up = cf.cache.purge(zone_id=ZONE_ID, tags=["group-warm-up"])
    assert warm_up is not None
    # And its acknowledgement is written now (its own commit, ACK_DELAY after the reclaim): queued
    # while the writer is held, it would count as one of the six below and let the gate open early.
    deadline = time.monotonic() + 30
    while any(t.status == "processing" for t in node.tasks.by_job(warm_up.id)):
        assert time.monotonic() < deadline, "the warm-up purge was never acknowledged"
        time.sleep(0.01)
    url_quota = node.quotas.state(zone.config, "purge_url").daily_available

    # Hold the writer so that everything below is waiting when it next looks at its queue.
    writer = node.purges._writer
    gate, held = _hold(writer)
    commits = writer.commits
    ledger_rows = len(LedgerStore(node.database).after(0))

    # A URL the database cannot encode (a lone surrogate): its ledger row is written first, then
    # its task fails. The wire formats refuse such a body; this reaches the service directly.
    bad = PurgeRequest(files=(FileTarget("http://test.example/group/\ud800"),))

    async def submit_bad() -> None:
        items = node.purges.items(zone, bad)
        await node.purges.submit(zone, Mode.DELETE, items, bad, principal="test", dialect="test")

    failed = asyncio.run_coroutine_threadsafe(submit_bad(), stack.loop)
    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(cf.cache.purge, zone_id=ZONE_ID, tags=[f"group-{i}"]) for i in range(5)]
        while writer._queue.qsize() < 6:
            threading.Event().wait(0.01)
        # Queued after the six: committed with them. What the writer has committed is read as this
        # group's futures are resolved, on the writer thread, before it can take another group
        # (the purges' own acknowledgements follow them in a commit of their own).
        committed: list[int] = []
        probe = writer.submit(
            lambda conn: conn.exec_driver_sql("SELECT count(*) FROM purge_ledger").scalar_one()
        )
        probe.add_done_callback(lambda _fut: committed.append(writer.commits))
        gate.set()
        jobs = [a.result(30) for a in answers]
    held.result(30)
    probe.result(30)

    assert all(job is not None for job in jobs)
    assert committed == [commits + 2], "the holder's transaction, then one for all six purges"
    assert probe.result() == ledger_rows + 5, "the five good purges were written before the probe"
    try:
        failed.result(30)
        raise AssertionError("the purge of an unencodable URL was accepted")
    except UnicodeEncodeError:
        pass
    for i, job in enumerate(jobs):
        assert job is not None
        assert [t.target for t in node.tasks.by_job(job.id)] == [f"group-{i}"]
        assert stack.request(f"/group/{i}")[1]["cf-cache-status"] == "MISS"
    rows = LedgerStore(node.database).after(0)
    assert not any("files" in r.selectors for r in rows), "the failed purge's row was rolled back"
    assert node.quotas.state(zone.config, "purge_url").daily_available == url_quota


def test_a_group_commit_that_fails_gives_every_charge_back(stack: Stack) -> None:
    node = stack.node
    zone = node.zones.by_id[ZONE_ID]
    tags_left = node.quotas.state(zone.config, "purge_cache_tag").daily_available
    writer = node.purges._writer

    def fail_the_commit(conn: Connection) -> None:
        # Checked at COMMIT: every operation of the group succeeds, then the commit fails.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        now = datetime.now(UTC).isoformat()
        conn.exec_driver_sql(
            "INSERT INTO tasks (job_id, kind, zone_id, target, type, status, created_at, updated_at, "
            "principal, dialect) VALUES ('x', 'purge', 'no-such-zone', 't', 'purge_url', 'processing', "
            f"'{now}', '{now}', 'p', 'd')"
        )

    gate, held = _hold(writer)
    failing = writer.submit(fail_the_commit, atomic=True)
    req = PurgeRequest(tags=("never-committed",))

    async def submit() -> None:
        items = node.purges.items(zone, req)
        await node.purges.submit(zone, Mode.DELETE, items, req, principal="test", dialect="test")

    pending = asyncio.run_coroutine_threadsafe(submit(), stack.loop)
    while writer._queue.qsize() < 2:
        threading.Event().wait(0.01)
    gate.set()
    held.result(30)
    for fut in (failing, pending):
        try:
            fut.result(30)
            raise AssertionError("an operation whose commit failed was answered as done")
        except Exception as exc:  # the database's error, as the API would see it
            assert "FOREIGN KEY" in str(exc)
    assert node.quotas.state(zone.config, "purge_cache_tag").daily_available == tags_left
    rows = LedgerStore(node.database).after(0)
    assert not any(r.selectors.get("tags") == ["never-committed"] for r in rows)


def test_a_purge_that_fails_alone_in_its_transaction_leaves_nothing(any_stack: Stack) -> None:
    # A paced stream is groups of one, which run without a savepoint: the failed purge's ledger
    # row, written before its task failed, goes with the whole transaction.
    stack = any_stack
    node = stack.node
    zone = node.zones.by_id[ZONE_ID]
    url_quota = node.quotas.state(zone.config, "purge_url").daily_available
    commits = node.purges.commits
    bad = PurgeRequest(files=(FileTarget("http://test.example/alone/\ud800"),))

    async def submit_bad() -> None:
        items = node.purges.items(zone, bad)
        await node.purges.submit(zone, Mode.DELETE, items, bad, principal="test", dialect="test")

    with pytest.raises(UnicodeEncodeError):
        stack.run(submit_bad())
    assert node.purges.commits == commits
    assert not any("files" in r.selectors for r in LedgerStore(node.database).after(0))
    assert node.quotas.state(zone.config, "purge_url").daily_available == url_quota
    cf = cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{node.control_port}/client/v4", max_retries=0, api_token=stack.token()
    )
    job = cf.cache.purge(zone_id=ZONE_ID, files=["http://test.example/alone/next"])
    assert job is not None
    assert [t.target for t in node.tasks.by_job(job.id)] == ["http://test.example/alone/next"]


def test_purges_in_a_transaction_the_database_rolled_back_are_not_accepted(stack: Stack) -> None:
    """SQLite rolls back a whole transaction on some errors (a full disk, an I/O error; here a
    trigger's ``RAISE(ROLLBACK)`` on one purge's task stands in for them): the purges grouped with
    that one are answered as failed, none is recorded, and their charges are given back. Before
    the writer looked, the purge ahead of it was answered as accepted and lost, and the one after
    it committed outside the transaction."""
    node = stack.node
    zone = node.zones.by_id[ZONE_ID]
    tags_left = node.quotas.state(zone.config, "purge_cache_tag").daily_available
    with node.database.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER doomed_task BEFORE INSERT ON tasks WHEN NEW.target = 'doomed' "
            "BEGIN SELECT RAISE(ROLLBACK, 'the transaction is gone'); END"
        )
    writer = node.purges._writer
    gate = threading.Event()

    async def submit(tag: str) -> None:
        req = PurgeRequest(tags=(tag,))
        items = node.purges.items(zone, req)
        await node.purges.submit(zone, Mode.DELETE, items, req, principal="test", dialect="test")

    try:
        gate, held = _hold(writer)
        pending = []
        for n, tag in enumerate(("lost-before", "doomed", "lost-after"), start=1):
            pending.append(asyncio.run_coroutine_threadsafe(submit(tag), stack.loop))
            while writer._queue.qsize() < n:
                threading.Event().wait(0.01)
        gate.set()
        held.result(30)
        for fut in (pending[0], pending[2]):
            with pytest.raises(TransactionLost):
                fut.result(30)
        with pytest.raises(sqlite3.IntegrityError, match="the transaction is gone"):
            pending[1].result(30)
        assert node.quotas.state(zone.config, "purge_cache_tag").daily_available == tags_left
        recorded = {tag for r in LedgerStore(node.database).after(0) for tag in r.selectors.get("tags", ())}
        assert not recorded & {"lost-before", "doomed", "lost-after"}
    finally:
        gate.set()
        with node.database.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER doomed_task")


def test_acknowledgements_written_in_a_transaction_the_database_rolled_back_are_written_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reclaimed purge's acknowledgement is written by a flush of its own; when that flush ran
    but a purge grouped after it lost the transaction (SQLite's rollback, as above), the flush
    fails with the group and its acknowledgements are written by a later one: the purge's task
    ends as success, not as a timeout while the purge was applied."""
    # Long enough for the writer to be held before the acknowledgement's flush is queued.
    monkeypatch.setattr(purges_module, "ACK_DELAY", 1.0)
    node = stack.node
    zone = node.zones.by_id[ZONE_ID]
    with node.database.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER doomed_task BEFORE INSERT ON tasks WHEN NEW.target = 'doomed' "
            "BEGIN SELECT RAISE(ROLLBACK, 'the transaction is gone'); END"
        )
    writer = node.purges._writer
    gate = threading.Event()

    async def submit(tag: str) -> AcceptedPurge:
        req = PurgeRequest(tags=(tag,))
        items = node.purges.items(zone, req)
        return await node.purges.submit(zone, Mode.DELETE, items, req, principal="test", dialect="test")

    try:
        acked = stack.run(submit("acked"))
        gate, held = _hold(writer)
        deadline = time.monotonic() + 30
        while writer._queue.qsize() < 1:  # the acknowledgement's flush
            assert time.monotonic() < deadline, "the acknowledgement was never flushed"
            threading.Event().wait(0.01)
        assert [t.status for t in node.tasks.by_job(acked.job_id)] == ["processing"]
        doomed = asyncio.run_coroutine_threadsafe(submit("doomed"), stack.loop)
        while writer._queue.qsize() < 2:
            threading.Event().wait(0.01)
        gate.set()
        held.result(30)
        with pytest.raises(sqlite3.IntegrityError, match="the transaction is gone"):
            doomed.result(30)
        deadline = time.monotonic() + 15
        while [t.status for t in node.tasks.by_job(acked.job_id)] == ["processing"]:
            assert time.monotonic() < deadline, "the acknowledgement was lost with the transaction"
            time.sleep(0.05)
        assert [t.status for t in node.tasks.by_job(acked.job_id)] == ["success"]
    finally:
        gate.set()
        with node.database.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER doomed_task")
