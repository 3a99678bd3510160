"""The queue service on its own, on SQLite and PostgreSQL: retention, the sweeper, and pullers on
two nodes (two engines, two writers) sharing one database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from edgecache.control.credentials import CredentialService
from edgecache.control.queue_rules import ConsumerSpec, DeliveryPaused, Message, QueueSettings
from edgecache.control.queues import QueueService
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.schema import queue_messages
from pg import postgres_server_fixture  # noqa: F401

ACCOUNT = "ab" * 16


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_server").create_database())
    return sqlite_url(tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_database(db_url)
    CredentialService(e).ensure_account(ACCOUNT, "queues", "enterprise")
    yield e
    e.dispose()


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(queue_messages)).scalar_one())


def text(body: str, delay: int | None = None) -> Message:
    return Message(body.encode(), "text", delay)


def test_retention_removes_expired_messages_only(engine: Engine) -> None:
    clock = Clock(1_800_000_000.0)
    service = QueueService(engine, clock=clock)

    async def run() -> list[str]:
        q = await service.create_queue(ACCOUNT, "short")
        await service.update_queue(
            ACCOUNT, q.row.id, name=None, settings=QueueSettings(retention_seconds=60), replace_all=False
        )
        await service.create_consumer(ACCOUNT, q.row.id, ConsumerSpec("http_pull"))
        await service.push(ACCOUNT, q.row.id, [text("old"), text("old-delayed", 3600)])
        clock.now += 59
        await service.push(ACCOUNT, q.row.id, [text("young")])
        clock.now += 2
        await service.sweep()
        delivered, backlog = await service.pull(ACCOUNT, q.row.id, 10)
        assert backlog.count == 1
        return [d.message.body.decode() for d in delivered]

    try:
        assert asyncio.run(run()) == ["young"]
        assert stored(engine) == 1
    finally:
        service.close()


def test_deleted_queue_messages_are_swept_and_the_name_is_free(engine: Engine) -> None:
    service = QueueService(engine)

    async def run() -> None:
        q = await service.create_queue(ACCOUNT, "gone")
        await service.push(ACCOUNT, q.row.id, [text(str(i)) for i in range(100)])
        await service.delete_queue(ACCOUNT, q.row.id)
        again = await service.create_queue(ACCOUNT, "gone")
        await service.push(ACCOUNT, again.row.id, [text("new")])
        await service.sweep()

    try:
        asyncio.run(run())
        assert stored(engine) == 1
    finally:
        service.close()


def test_pullers_on_two_nodes_get_disjoint_batches(engine: Engine, db_url: str) -> None:
    other = open_database(db_url)
    services = [QueueService(engine), QueueService(other)]
    q = asyncio.run(services[0].create_queue(ACCOUNT, "shared"))
    asyncio.run(services[0].create_consumer(ACCOUNT, q.row.id, ConsumerSpec("http_pull")))
    for start in range(0, 1000, 100):
        asyncio.run(services[0].push(ACCOUNT, q.row.id, [text(str(i)) for i in range(start, start + 100)]))
    seen: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def puller(n: int) -> None:
        service = services[n % 2]

        async def loop() -> None:
            barrier.wait()
            while True:
                delivered, _ = await service.pull(ACCOUNT, q.row.id, 7, 60_000)
                if not delivered:
                    return
                seen[n] += [d.message.body.decode() for d in delivered]

        asyncio.run(loop())

    threads = [threading.Thread(target=puller, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in services:
            s.close()
        other.dispose()
    everything = [b for part in seen for b in part]
    assert sorted(everything, key=int) == [str(i) for i in range(1000)]


def test_concurrent_pushes_share_commits_and_fail_alone(engine: Engine) -> None:
    """Pushes waiting together are stored together; one to a missing queue, or to another
    account's queue, fails alone and writes nothing."""
    other_account = "cd" * 16
    CredentialService(engine).ensure_account(other_account, "other", "enterprise")
    service = QueueService(engine)

    async def run() -> tuple[list[object], list[str], int]:
        q = await service.create_queue(ACCOUNT, "shared-commits", QueueSettings(delivery_delay=0))
        await service.create_consumer(ACCOUNT, q.row.id, ConsumerSpec("http_pull"))
        commits = service.commits
        pushes = [service.push(ACCOUNT, q.row.id, [text(str(i))]) for i in range(200)]
        pushes.append(service.push(ACCOUNT, "0" * 32, [text("nowhere")]))
        pushes.append(service.push(other_account, q.row.id, [text("not yours")]))
        outcomes = await asyncio.gather(*pushes, return_exceptions=True)
        used = service.commits - commits
        delivered, _ = await service.pull(ACCOUNT, q.row.id, 100)
        more, _ = await service.pull(ACCOUNT, q.row.id, 100)
        return outcomes, [d.message.body.decode() for d in delivered + more], used

    try:
        outcomes, bodies, used = asyncio.run(run())
    finally:
        service.close()
    assert outcomes[:200] == [None] * 200
    assert [type(o).__name__ for o in outcomes[200:]] == ["QueueNotFound", "QueueNotFound"]
    assert sorted(bodies, key=int) == [str(i) for i in range(200)]
    assert stored(engine) == 200
    assert used < 20


def test_pause_and_purge_through_another_node_apply_to_the_next_pull(engine: Engine, db_url: str) -> None:
    """A node that has just pulled (and keeps the queue's settings for a moment) still sees a pause
    or a purge made through another node on its very next pull."""
    other = open_database(db_url)
    node, admin = QueueService(engine), QueueService(other)

    async def run() -> None:
        q = await node.create_queue(ACCOUNT, "elsewhere")
        await node.create_consumer(ACCOUNT, q.row.id, ConsumerSpec("http_pull"))
        await node.push(ACCOUNT, q.row.id, [text(str(i)) for i in range(10)])
        first, _ = await node.pull(ACCOUNT, q.row.id, 1)
        assert [d.message.body for d in first] == [b"0"]
        await admin.update_queue(
            ACCOUNT, q.row.id, name=None, settings=QueueSettings(delivery_paused=True), replace_all=False
        )
        with pytest.raises(DeliveryPaused):
            await node.pull(ACCOUNT, q.row.id, 1)
        await admin.update_queue(
            ACCOUNT, q.row.id, name=None, settings=QueueSettings(delivery_paused=False), replace_all=False
        )
        second, _ = await node.pull(ACCOUNT, q.row.id, 1)
        assert [d.message.body for d in second] == [b"1"]
        await admin.start_purge(ACCOUNT, q.row.id)
        after, _ = await node.pull(ACCOUNT, q.row.id, 10)
        assert after == []
        await node.push(ACCOUNT, q.row.id, [text("new")])
        fresh, _ = await node.pull(ACCOUNT, q.row.id, 10)
        assert [d.message.body for d in fresh] == [b"new"]

    try:
        asyncio.run(run())
    finally:
        node.close()
        admin.close()
        other.dispose()


def test_acks_during_a_purge_all_succeed(engine: Engine) -> None:
    """Acks of leased messages and a purge of the same messages run together: on PostgreSQL, with
    several writers, an ack group locking rows in one order and a purge step locking them in
    another must not deadlock (which fails the whole group); every ack answers, and the purge
    completes with nothing left."""
    service = QueueService(engine)

    async def run() -> tuple[list[object], bool]:
        q = await service.create_queue(ACCOUNT, "ack-vs-purge")
        await service.create_consumer(ACCOUNT, q.row.id, ConsumerSpec("http_pull"))
        for start in range(0, 6000, 100):
            await service.push(ACCOUNT, q.row.id, [text(str(i)) for i in range(start, start + 100)])
        batches: list[list[str]] = []
        while True:
            delivered, _ = await service.pull(ACCOUNT, q.row.id, 100, 600_000)
            if not delivered:
                break
            batches.append([d.lease_id for d in delivered])
        assert sum(map(len, batches)) == 6000
        purging = await service.start_purge(ACCOUNT, q.row.id)
        # Newest batches first: a writer's group then locks high numbers before low ones, while
        # the purge deletes from the lowest up.
        acks = [service.ack(ACCOUNT, q.row.id, leases, []) for leases in reversed(batches)]
        outcomes = await asyncio.gather(service.finish_purge(purging.row), *acks, return_exceptions=True)
        status = await service.purge_status(ACCOUNT, q.row.id)
        return outcomes, status.completed

    try:
        outcomes, completed = asyncio.run(run())
    finally:
        service.close()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    assert completed
    assert stored(engine) == 0
