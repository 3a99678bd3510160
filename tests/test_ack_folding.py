"""A purge stream costs one commit per purge: the acknowledgement of a reclaimed purge (its tasks
become ``success``, with counts) rides in the next purge's ledger transaction, and is committed on
its own only when no purge follows within ``ACK_DELAY``. Through the official Cloudflare SDK on a
real node with SQLite."""

from __future__ import annotations

import time

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.control import purges


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
        time.sleep(0.2)
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
