"""A purge task's ``matched`` count is the number of stored objects the purge covered, whether the
reclaimer removed them or a request reached them first (the lookup-time check removes a covered
entry at once). The reclaimer is held so that the requests certainly come first. Through the
official Cloudflare SDK on a real node, with and without the persistent tier."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.config import DiskStorage, Storage


@pytest.fixture(params=["memory", "memory and disk"], scope="module")
def node(request: pytest.FixtureRequest) -> Iterator[Stack]:
    storage = Storage() if request.param == "memory and disk" else Storage(disk=DiskStorage(enabled=False))
    stack = Stack(storage=storage)
    yield stack
    stack.close()


def cached(stack: Stack, path: str, tag: str) -> None:
    stack.origin.routes[path] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": tag})
    stack.request(path)
    assert stack.request(path)[1]["cf-cache-status"] == "HIT"


def matched(stack: Stack, job: str) -> dict[str, int | None]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tasks = stack.node.tasks.by_job(job)
        if all(t.status == "success" for t in tasks):
            return {t.target: t.matched for t in tasks}
        time.sleep(0.05)
    raise AssertionError("the purge's tasks did not succeed in time")


def test_objects_a_request_removed_first_are_counted_for_their_purge_and_target(node: Stack) -> None:
    for path in ("/credit/a1", "/credit/a2", "/credit/a3"):
        cached(node, path, "credit-a")
    for path in ("/credit/b1", "/credit/b2"):
        cached(node, path, "credit-b")
    cf = cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{node.node.control_port}/client/v4", max_retries=0, api_token=node.token()
    )
    node.call(node.node.reclaimer.hold)
    try:
        job = cf.cache.purge(zone_id=ZONE_ID, tags=["credit-a", "credit-b"])
        assert job is not None
        # Before the reclaimer runs: these requests find the purged entries and remove them.
        for path in ("/credit/a1", "/credit/a2", "/credit/b1"):
            assert node.request(path)[1]["cf-cache-status"] == "MISS"
        assert node.node.stats.purged_on_lookup >= 3
    finally:
        node.call(node.node.reclaimer.release)
    assert matched(node, job.id) == {"credit-a": 3, "credit-b": 2}


def test_every_object_removed_by_requests_is_still_counted(node: Stack) -> None:
    cached(node, "/credit/c1", "credit-c")
    cached(node, "/credit/c2", "credit-c")
    cf = cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{node.node.control_port}/client/v4", max_retries=0, api_token=node.token()
    )
    node.call(node.node.reclaimer.hold)
    try:
        first = cf.cache.purge(zone_id=ZONE_ID, tags=["credit-c"])
        # A later purge covers the same objects; the first one, in order, is the one that had them.
        second = cf.cache.purge(zone_id=ZONE_ID, files=[f"http://127.0.0.1/credit/c{n}" for n in (1, 2)])
        assert first is not None and second is not None
        for path in ("/credit/c1", "/credit/c2"):
            assert node.request(path)[1]["cf-cache-status"] == "MISS"
    finally:
        node.call(node.node.reclaimer.release)
    assert matched(node, first.id) == {"credit-c": 2}
    assert set(matched(node, second.id).values()) == {0}
    assert len(node.node.proxy.credits) == 0


def test_a_soft_purged_object_revalidated_before_the_reclaimer_is_still_counted(node: Stack) -> None:
    for path in ("/credit/s1", "/credit/s2"):
        cached(node, path, "credit-s")
    node.call(node.node.reclaimer.hold)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", node.node.control_port, timeout=20)
        conn.request(
            "POST",
            f"/client/v4/zones/{ZONE_ID}/invalidate_cache",
            body=json.dumps({"tags": ["credit-s"]}),
            headers={"Authorization": f"Bearer {node.token()}", "Content-Type": "application/json"},
        )
        answer = json.loads(conn.getresponse().read())
        conn.close()
        assert answer["success"], answer
        # Marked stale on this lookup, then replaced by the revalidated response: the reclaimer
        # will find only the new entry, stored after the purge.
        assert node.request("/credit/s1")[1]["cf-cache-status"] in ("REVALIDATED", "EXPIRED")
    finally:
        node.call(node.node.reclaimer.release)
    assert matched(node, answer["result"]["id"]) == {"credit-s": 2}
