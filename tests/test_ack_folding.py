"""A purge stream costs one commit per purge: the acknowledgement of a reclaimed purge (its tasks
become ``success``, with counts) rides in the first purge's ledger transaction that comes once it
is ``ACK_FOLD_AGE`` old, and is committed on its own only when no purge follows within
``ACK_DELAY``. Through the official Cloudflare SDK on a real node with SQLite."""

from __future__ import annotations

import threading
import time

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.control import purges
from edgecache.purge.selectors import Mode, Purge, Tag


def client(stack: Stack) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
        api_token=stack.token(),
    )


def cached(stack: Stack, path: str, tag: str) -> None:
    stack.origin.routes[path] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": tag})
    stack.request(path)
    assert stack.request(path)[1]["cf-cache-status"] == "HIT"


def statuses(stack: Stack, job: str) -> list[tuple[str, int | None]]:
    return [(t.status, t.matched) for t in stack.node.tasks.by_job(job)]


def test_an_acknowledgement_rides_in_the_next_purge_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(purges, "ACK_DELAY", 3600.0)  # no commit of its own within the test
    stack = Stack()  # its own node: the hour-long timer must not hold up other tests' acknowledgements
    try:
        cf = client(stack)
        cached(stack, "/fold/a", "fold-a")
        first = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-a"])
        assert first is not None
        stack.run(stack.node.reclaimer.drain())
        time.sleep(0.2)  # past ACK_FOLD_AGE: the next purge's write takes the acknowledgement
        assert statuses(stack, first.id) == [("processing", None)], "reclaimed, not yet committed"
        second = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-nothing"])
        assert second is not None
        # The second purge's commit, made before its answer, carried the first's acknowledgement.
        assert statuses(stack, first.id) == [("success", 1)]
    finally:
        stack.close()


def test_without_a_following_purge_the_acknowledgement_is_committed_on_its_own(stack: Stack) -> None:
    cf = client(stack)
    cached(stack, "/fold/b", "fold-b")
    job = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-b"])
    assert job is not None
    stack.run(stack.node.reclaimer.drain())
    deadline = time.monotonic() + 10
    while statuses(stack, job.id) != [("success", 1)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses(stack, job.id) == [("success", 1)]


def test_a_stream_of_purges_spends_no_commit_on_acknowledgements(monkeypatch: pytest.MonkeyPatch) -> None:
    # The timer of the first acknowledgement fires while purges keep coming: each purge's write has
    # taken the acknowledgements gathered before it, so the timer finds only younger ones and waits
    # for them instead of committing a transaction of its own.
    monkeypatch.setattr(purges, "ACK_DELAY", 1.0)
    stack = Stack()  # its own node: nothing else may commit to its ledger meanwhile
    try:
        cf = client(stack)
        cached(stack, "/fold/stream", "fold-stream")
        before = stack.node.purges.commits
        jobs: list[str] = []
        start = time.monotonic()
        while time.monotonic() - start < 3.5:
            tag = "fold-stream" if not jobs else f"fold-stream-{len(jobs)}"
            job = cf.cache.purge(zone_id=ZONE_ID, tags=[tag])
            assert job is not None
            jobs.append(job.id)
            time.sleep(0.1)
        during = stack.node.purges.commits - before
        assert during == len(jobs), f"{during} commits for {len(jobs)} purges"
        deadline = time.monotonic() + 10
        while any(statuses(stack, j)[0][0] != "success" for j in jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses(stack, jobs[0]) == [("success", 1)]
        assert all(statuses(stack, j) == [("success", 0)] for j in jobs[1:])
        assert stack.node.purges.commits - before == len(jobs) + 1  # the last acknowledgement's own
    finally:
        stack.close()


def test_an_acknowledgement_that_comes_while_a_flush_is_queued_rides_in_that_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The writer is busy when the first acknowledgement's timer queues its flush, and another
    # acknowledgement comes before that flush runs. The queued flush takes both: no second timer,
    # and no second flush that would find nothing and commit an empty transaction of its own.
    monkeypatch.setattr(purges, "ACK_DELAY", 0.05)
    stack = Stack()
    gate, held = threading.Event(), threading.Event()
    try:
        service = stack.node.purges
        cf = client(stack)
        cached(stack, "/fold/queued", "fold-queued")
        job = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-queued"])
        assert job is not None
        service._writer.submit(lambda conn: held.set() or gate.wait(10))
        assert held.wait(10)
        taken: list[int] = []
        take = service._take_acks

        def counted() -> list[tuple[int, dict[str, int]]]:
            acks = take()
            taken.append(len(acks))
            return acks

        monkeypatch.setattr(service, "_take_acks", counted)
        stack.run(stack.node.reclaimer.drain())  # the purge's acknowledgement: its timer queues a flush
        time.sleep(0.2)
        later = Purge(10**9, ZONE_ID, Mode.DELETE, (Tag("none"),), time.time())
        stack.call(lambda: service.reclaimed(later, {}))
        time.sleep(0.2)  # a second timer, if one were armed, would have fired and queued a flush
        gate.set()
        deadline = time.monotonic() + 10
        while statuses(stack, job.id) != [("success", 1)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses(stack, job.id) == [("success", 1)]
        time.sleep(0.2)
        assert taken == [2], "one flush took both acknowledgements"
    finally:
        gate.set()
        stack.close()


def test_acknowledgements_younger_than_the_fold_age_wait_and_then_ride_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A purge that comes right after another's acknowledgement leaves it waiting; the first write
    # once it is ACK_FOLD_AGE old takes every acknowledgement gathered by then, in one transaction.
    monkeypatch.setattr(purges, "ACK_DELAY", 3600.0)
    monkeypatch.setattr(purges, "ACK_FOLD_AGE", 2.0)
    stack = Stack()
    try:
        cf = client(stack)
        cached(stack, "/fold/young", "fold-young")
        first = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-young"])
        assert first is not None
        stack.run(stack.node.reclaimer.drain())
        second = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-young-2"])
        assert second is not None
        assert statuses(stack, first.id) == [("processing", None)], "too young to ride"
        stack.run(stack.node.reclaimer.drain())
        time.sleep(2.1)
        third = cf.cache.purge(zone_id=ZONE_ID, tags=["fold-young-3"])
        assert third is not None
        assert statuses(stack, first.id) == [("success", 1)]
        assert statuses(stack, second.id) == [("success", 0)]
        assert statuses(stack, third.id) == [("processing", None)]
    finally:
        stack.close()
