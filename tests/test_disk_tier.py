"""The persistent tier through the data plane: what a restarted node serves from disk, and what it
must not (purged objects, including purges the disk had not reclaimed when the node went away)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import cloudflare

from conftest import ZONE_ID, Route, Stack
from edgecache.config import DiskStorage, Storage
from edgecache.control.livestats import read
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Mode, Purge, Tag
from edgecache.store.disk import MAX_BATCH_OPS


def flush(stack: Stack) -> None:
    stack.run(stack.node.reclaimer.drain())
    assert stack.node.disk is not None
    assert stack.node.disk.flush(10)


def record_purge(stack: Stack, tag: str, mode: str, job: str) -> None:
    """Commit a ledger row purging ``tag``, as the control plane does before it applies a purge."""
    LedgerStore(stack.node.database).append(
        NewPurge(
            zone_id=ZONE_ID,
            mode=mode,
            selectors={"tags": [tag]},
            principal="test",
            dialect="cli",
            job_id=job * 32,
            created_at=datetime.now(UTC),
        )
    )


def test_restart_serves_from_disk_then_from_memory(fresh: Stack) -> None:
    fresh.origin.routes["/kept"] = Route(body=b"x" * 5000, headers={"Cache-Control": "max-age=600"})
    assert fresh.request("/kept")[1]["cf-cache-status"] == "MISS"
    flush(fresh)
    fresh.restart()
    status, headers, body = fresh.request("/kept")
    assert (status, body) == (200, b"x" * 5000)
    assert headers["cf-cache-status"] == "HIT"
    assert headers["cache-status"].endswith("; detail=disk")
    again = fresh.request("/kept")[1]
    assert again["cf-cache-status"] == "HIT" and "detail" not in again["cache-status"]
    assert fresh.origin.hits["/kept"] == 1


def test_vary_variants_are_found_after_restart(fresh: Stack) -> None:
    fresh.origin.routes["/v"] = Route(
        body=b"en", headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"}
    )
    fresh.request("/v", headers={"Accept-Language": "en"})
    flush(fresh)
    fresh.restart()
    headers = fresh.request("/v", headers={"Accept-Language": "en"})[1]
    assert headers["cache-status"].endswith("detail=disk")
    assert fresh.request("/v", headers={"Accept-Language": "fr"})[1]["cf-cache-status"] == "MISS"


def test_purges_reach_the_disk(fresh: Stack) -> None:
    for p in ("/t1", "/t2", "/other"):
        tag = "red" if p.startswith("/t") else "blue"
        fresh.origin.routes[p] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": tag})
        fresh.request(p)
    flush(fresh)
    purge = Purge(fresh.node.index.position + 1, ZONE_ID, Mode.DELETE, (Tag("red"),), 0.0)
    record_purge(fresh, "red", "delete", "a")
    fresh.call(lambda: fresh.node.apply_purge(purge))
    flush(fresh)
    assert fresh.node.disk is not None and fresh.node.disk.reclaimed_upto == purge.seq
    fresh.restart()
    assert fresh.request("/t1")[1]["cf-cache-status"] == "MISS"
    assert fresh.request("/t2")[1]["cf-cache-status"] == "MISS"
    assert fresh.request("/other")[1]["cache-status"].endswith("detail=disk")


def test_a_purge_committed_but_never_reclaimed_is_replayed(fresh: Stack) -> None:
    """The crash window: the ledger row is durable, the node died before its reclaimer ran."""
    fresh.origin.routes["/doomed"] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": "doomed"})
    fresh.origin.routes["/safe"] = Route(headers={"Cache-Control": "max-age=600"})
    fresh.request("/doomed")
    fresh.request("/safe")
    flush(fresh)
    record_purge(fresh, "doomed", "delete", "b")
    fresh.restart()
    assert fresh.request("/doomed")[1]["cf-cache-status"] == "MISS"
    assert fresh.request("/safe")[1]["cache-status"].endswith("detail=disk")
    flush(fresh)
    assert fresh.node.disk is not None
    assert fresh.node.disk.reclaimed_upto == fresh.node.index.position


def test_unsafe_method_invalidation_reaches_the_disk(fresh: Stack) -> None:
    fresh.origin.routes["/form"] = Route(headers={"Cache-Control": "max-age=600"})
    fresh.request("/form")
    fresh.request("/form", method="POST", body=b"x")
    flush(fresh)
    fresh.restart()
    assert fresh.request("/form")[1]["cf-cache-status"] == "MISS"


def test_a_soft_purge_on_disk_survives_a_restart(fresh: Stack) -> None:
    fresh.origin.routes["/soft"] = Route(
        body=b"old", headers={"Cache-Control": "max-age=600", "Cache-Tag": "soft", "ETag": '"v1"'}
    )
    fresh.request("/soft")
    flush(fresh)
    fresh.call(lambda: fresh.node.store.delete("http://test.example/soft"))  # only the disk has it now
    purge = Purge(fresh.node.index.position + 1, ZONE_ID, Mode.INVALIDATE, (Tag("soft"),), 1.0)
    record_purge(fresh, "soft", "invalidate", "c")
    fresh.call(lambda: fresh.node.apply_purge(purge))
    flush(fresh)
    fresh.restart()
    # Stale on disk: revalidated with the origin (304), not served as a fresh hit, not refetched.
    headers, body = fresh.request("/soft")[1:]
    assert headers["cf-cache-status"] == "REVALIDATED" and body == b"old"
    assert fresh.origin.requests[-1][2].get("If-None-Match") == '"v1"'
    assert fresh.request("/soft")[1]["cf-cache-status"] == "HIT"


def test_a_memory_eviction_writes_back_what_the_disk_lost(fresh: Stack) -> None:
    fresh.origin.routes["/back"] = Route(body=b"b" * 100, headers={"Cache-Control": "max-age=600"})
    fresh.request("/back")
    flush(fresh)
    disk = fresh.node.disk
    assert disk is not None
    key = "http://test.example/back"
    # As a disk eviction would: the disk cache's record (the first handle) goes.
    disk.run_job(lambda view: view.delete(view.scan_prefix(key, None, 1)[0]) > 0).result(10)
    assert not disk.has(key)
    entry = fresh.call(lambda: fresh.node.store.peek(key))
    assert entry is not None
    fresh.call(lambda: fresh.node.store.on_evict(entry))  # type: ignore[misc]
    flush(fresh)
    assert disk.has(key)
    fresh.restart()
    assert fresh.request("/back")[1]["cache-status"].endswith("detail=disk")


def test_the_live_page_counts_the_disk_tier(fresh: Stack) -> None:
    fresh.origin.routes["/counted"] = Route(body=b"y" * 3000, headers={"Cache-Control": "max-age=600"})
    fresh.request("/counted")
    flush(fresh)
    tiers = read(fresh.node.registry).tiers
    assert tiers["memory"][0] >= 1 and tiers["disk"][0] >= 1
    assert tiers["disk"][1] >= 3000


def test_purge_everything_counts_each_disk_object_once_when_requests_reach_them_first(fresh: Stack) -> None:
    """Memory is cold (a restart), the purge's disk job waits behind the writer, and requests find
    covered objects on disk first: they remove them and credit them to the purge, and the job's
    whole-zone drop must not count them a second time (the task's matched count, via the SDK)."""
    paths = [f"/every/{i}" for i in range(6)]
    for p in paths:
        fresh.origin.routes[p] = Route(headers={"Cache-Control": "max-age=600"})
        fresh.request(p)
    flush(fresh)
    fresh.restart()
    disk = fresh.node.disk
    assert disk is not None
    api = f"http://127.0.0.1:{fresh.node.control_port}/client/v4"
    cf = cloudflare.Cloudflare(base_url=api, max_retries=0, api_token=fresh.token())
    gate, busy = threading.Event(), threading.Event()
    disk.run_job(lambda view: busy.set() or gate.wait(20))  # the purge's disk job queues behind this
    assert busy.wait(10)
    # Changes that do nothing fill the writer's next batch up to the purge's job, so that the
    # requests' deletes land in the batch after it: the job's drop finds their records still there.
    for i in range(MAX_BATCH_OPS - 1):
        disk.set_vary(f"http://filler.invalid/{i}", ("accept",))
    try:
        job = cf.cache.purge(zone_id=ZONE_ID, purge_everything=True)
        assert job is not None
        deadline = time.monotonic() + 10
        while disk.queue_depth < MAX_BATCH_OPS + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert disk.queue_depth == MAX_BATCH_OPS + 1  # the blocking job, the fillers, the purge's
        for p in paths[:4]:
            assert fresh.request(p)[1]["cf-cache-status"] == "MISS"
        assert fresh.node.stats.purged_on_lookup >= 4
    finally:
        gate.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tasks = fresh.node.tasks.by_job(job.id)
        if tasks and all(t.status == "success" for t in tasks):
            break
        time.sleep(0.05)
    assert [t.matched for t in fresh.node.tasks.by_job(job.id)] == [len(paths)]


def test_a_purged_entry_evicted_from_memory_after_the_disk_reclaim_stays_purged_after_a_restart(
    fresh: Stack,
) -> None:
    """The race: a purge's disk job has removed the object and moved the reclaimed position past
    the purge, but the memory pass has not run yet when memory evicts the object. Written back to
    disk with its old position, it would be served fresh after a restart, since the restarted node
    replays only the purges after the reclaimed position."""
    fresh.origin.routes["/raced"] = Route(
        body=b"version 1", headers={"Cache-Control": "max-age=600", "Cache-Tag": "raced"}
    )
    assert fresh.request("/raced")[1]["cf-cache-status"] == "MISS"
    flush(fresh)
    disk = fresh.node.disk
    assert disk is not None
    key = "http://test.example/raced"
    fresh.call(fresh.node.reclaimer.hold)
    purge = Purge(fresh.node.index.position + 1, ZONE_ID, Mode.DELETE, (Tag("raced"),), time.time())
    record_purge(fresh, "raced", "delete", "d")
    fresh.call(lambda: fresh.node.apply_purge(purge))
    # The purge's disk job runs (the memory pass is held): the object leaves the disk.
    disk.run_job(DiskReclaim(purge)).result(10)
    assert disk.reclaimed_upto == purge.seq and not disk.has(key)
    entry = fresh.call(lambda: fresh.node.store.peek(key))
    assert entry is not None  # still in memory, as the memory pass has not reached it
    fresh.call(lambda: fresh.node.store.on_evict(entry))  # type: ignore[misc]
    assert disk.flush(10)
    assert not disk.has(key)
    fresh.origin.routes["/raced"] = Route(
        body=b"version 2", headers={"Cache-Control": "max-age=600", "Cache-Tag": "raced"}
    )
    fresh.restart()
    status, headers, body = fresh.request("/raced")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", b"version 2")


def test_a_memory_eviction_of_an_entry_no_purge_covers_is_written_back_after_a_purge_elsewhere(
    fresh: Stack,
) -> None:
    """The eviction checks the entry against the purges: one that no purge covers is written back
    at the current position, so that the disk does not drop it as older than what it reclaimed."""
    fresh.origin.routes["/kept"] = Route(body=b"kept", headers={"Cache-Control": "max-age=600"})
    fresh.request("/kept")
    flush(fresh)
    disk = fresh.node.disk
    assert disk is not None
    key = "http://test.example/kept"
    purge = Purge(fresh.node.index.position + 1, ZONE_ID, Mode.DELETE, (Tag("other"),), time.time())
    record_purge(fresh, "other", "delete", "e")
    fresh.call(lambda: fresh.node.apply_purge(purge))
    flush(fresh)
    assert disk.reclaimed_upto == purge.seq
    # As a disk eviction would: the disk cache's record goes, memory still has the object.
    disk.run_job(lambda view: view.delete(view.scan_prefix(key, None, 1)[0]) > 0).result(10)
    entry = fresh.call(lambda: fresh.node.store.peek(key))
    assert entry is not None and entry.stored_seq < purge.seq
    fresh.call(lambda: fresh.node.store.on_evict(entry))  # type: ignore[misc]
    assert disk.flush(10) and disk.has(key)
    fresh.restart()
    status, headers, body = fresh.request("/kept")
    assert (status, body) == (200, b"kept") and headers["cache-status"].endswith("detail=disk")


def test_with_second_fill_admission_only_an_object_fetched_twice_survives_a_restart() -> None:
    """``storage.disk.admission = "second_fill"``: memory serves every object from its first fill,
    the disk keeps only what was filled twice (here: fetched again after it went stale)."""
    stack = Stack(storage=Storage(disk=DiskStorage(admission="second_fill")))
    try:
        stack.origin.routes["/once"] = Route(headers={"Cache-Control": "max-age=600"})
        stack.origin.routes["/twice"] = Route(headers={"Cache-Control": "max-age=1"})
        assert stack.request("/once")[1]["cf-cache-status"] == "MISS"
        assert stack.request("/once")[1]["cf-cache-status"] == "HIT"
        assert stack.request("/twice")[1]["cf-cache-status"] == "MISS"
        time.sleep(1.1)
        stack.origin.routes["/twice"] = Route(headers={"Cache-Control": "max-age=600"})
        assert stack.request("/twice")[1]["cf-cache-status"] in ("EXPIRED", "REVALIDATED")
        flush(stack)
        stack.restart()
        assert stack.request("/twice")[1]["cache-status"].endswith("; detail=disk")
        assert stack.request("/once")[1]["cf-cache-status"] == "MISS"
        assert stack.origin.hits["/once"] == 2
    finally:
        stack.close()
