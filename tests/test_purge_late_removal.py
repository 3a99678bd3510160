"""A purge's removal that reaches the shared disk tier late never takes another worker's newer fill.

With worker processes, each one's reclaimer (and each lookup that finds a purged entry) queues
the removal of the purged key on its own disk writer. Another worker may meanwhile have fetched the
object again and stored it, numbered past the purge; the late removal must leave that record,
which the purge does not cover (decision 0009, addendum on late purge removals). The ordering is
made deterministic by holding this process's writer behind a fill-ring fence (decision 0020: a
change queued after ring fills waits for them) while a second real process stores the new fill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cloudflare

from conftest import ZONE_ID, Route, Stack
from edgecache.edge.reclaimer import Reclaimer
from edgecache.edge.writeback import still_valid
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Mode, Purge, Selector, Url
from edgecache.store.chain import TierChain
from edgecache.store.disk import DiskStore, WriteView
from edgecache.store.entry import Entry
from edgecache.store.fillring import FillRing
from edgecache.store.memory import MemoryTier

ZONE = "z"
KEY = "http://h.example/hot"
KEY_OF_HOT = "http://test.example/late/hot"

_OTHER_WORKER = """
import sys
from pathlib import Path
from edgecache.store.disk import DiskStore, WriteView
from edgecache.store.entry import Entry

store = DiskStore(Path(sys.argv[1]), budget=1 << 30, position=0, map_size=1 << 28, zones=("z",))
seq = int(sys.argv[3])
store.put(Entry("z", sys.argv[2], 200, b"", b"refetched", (), seq, 1000.0, 0.0, 600.0))
assert store.flush(10)
store.close()
"""


def entry(key: str, stored_seq: int, body: bytes = b"old") -> Entry:
    return Entry(
        zone=ZONE,
        key=key,
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=body,
        tags=(),
        stored_seq=stored_seq,
        response_time=1000.0,
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


def other_worker_stores(path: Path, key: str, stored_seq: int) -> None:
    """Another worker process stores its refetched copy of ``key`` in the shared environment."""
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_WORKER, str(path / "disk"), key, str(stored_seq)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


@contextmanager
def writer_held(disk: DiskStore, path: Path) -> Iterator[None]:
    """Hold ``disk``'s writer thread (outside any transaction, so other processes still write):
    a fill sits in a ring no fill writer serves, and every change queued after it waits for it.
    On exit the fill is given up, as a dead fill writer's are, and the writer goes on."""
    ring = FillRing.create(path / "ring")
    disk.attach_fills(ring)
    disk.put(entry("http://h.example/fence", 0))
    try:
        yield
    finally:
        ring.skip()
        assert disk.flush(10)
        disk.attach_fills(None)
        ring.close(unlink=True)


def chain(path: Path, index: EpochIndex) -> tuple[TierChain, DiskStore]:
    disk = DiskStore(path / "disk", budget=1 << 30, position=0, map_size=1 << 28, zones=(ZONE,))
    tiers = TierChain(
        MemoryTier(1 << 24),
        disk,
        reserve_on=lambda zone: False,
        reserve_eligible=lambda e: False,
        still_valid=still_valid(index),
    )
    return tiers, disk


async def until(check: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline
        await asyncio.sleep(0.002)


def test_a_lookups_late_removal_keeps_the_refill_that_follows_it(fresh: Stack) -> None:
    """A real node (its fill writer process, decision 0020): a request finds the purged object,
    queues its removal, fetches it again and stores the refill. The removal waits behind the fills
    the ring held before it (a fence), and the fill writer commits the refill, appended after it,
    in the same batch: the removal then reaches the disk after the refill, which the purge does
    not cover. Across worker processes the same late removal met another worker's refill."""
    fw = fresh.node.fill_writer
    disk = fresh.node.disk
    assert fw is not None and fw.pid is not None and disk is not None
    for path in ("/late/hot", "/late/other"):
        fresh.origin.routes[path] = Route(body=b"b" * 2000, headers={"Cache-Control": "max-age=600"})
    assert fresh.request("/late/hot")[1]["cf-cache-status"] == "MISS"
    assert disk.flush(10)
    cf = cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{fresh.node.control_port}/client/v4",
        max_retries=0,
        api_token=fresh.token(),
    )
    fresh.call(fresh.node.reclaimer.hold)  # the request, not the reclaimer, meets the purge
    os.kill(fw.pid, signal.SIGSTOP)
    try:
        assert fresh.request("/late/other")[1]["cf-cache-status"] == "MISS"  # a fill left in the ring
        cf.cache.purge(zone_id=ZONE_ID, files=[KEY_OF_HOT])
        assert fresh.request("/late/hot")[1]["cf-cache-status"] == "MISS"
        assert fresh.node.stats.purged_on_lookup == 1
    finally:
        os.kill(fw.pid, signal.SIGCONT)
        fresh.call(fresh.node.reclaimer.release)
    assert disk.flush(10)
    fresh.run(fresh.node.reclaimer.drain())
    found = disk.get(KEY_OF_HOT)
    assert found is not None, "the purge's late removal took the refill"
    fresh.restart()
    assert fresh.request("/late/hot")[1]["cf-cache-status"] == "HIT", "the refill survives a restart"


def test_a_late_lookup_removal_keeps_the_other_workers_refill(tmp_path: Path) -> None:
    """The lookup that finds a purged entry first (before the reclaimer) removes it with the same
    bound: the purge's position."""
    index = EpochIndex()
    tiers, disk = chain(tmp_path, index)
    tiers.put(entry(KEY, 0))
    tiers.put(entry(KEY + "/other", 0))
    assert disk.flush(10)
    index.apply(Purge(1, ZONE, Mode.DELETE, (Url(KEY),), 1.0))
    with writer_held(disk, tmp_path):
        verdict = index.check(ZONE, KEY, (), 0)
        assert verdict is not None and verdict.hard
        tiers.delete(KEY, verdict.seq)
        assert disk.get(KEY) is None, "hidden from this process's readers while queued"
        other_worker_stores(tmp_path, KEY, 1)
        # An unbounded delete (a replaced object) still removes whatever is there.
        tiers.delete(KEY + "/other")
        other_worker_stores(tmp_path, KEY + "/other", 1)
    found = disk.get(KEY)
    assert found is not None and found[0].body == b"refetched"
    assert disk.get(KEY + "/other") is None
    disk.close()


def test_a_covered_record_is_still_removed_and_counted_once(tmp_path: Path) -> None:
    """What the bound keeps is only what the purge does not cover: a fill the other worker
    fetched before it learnt of the purge (numbered below it) is removed by the purge's disk job
    (the node's reclaimer works on the memory tier, its job on the disk), counted once."""
    acked: list[dict[Selector, int]] = []

    async def go() -> None:
        index = EpochIndex()
        tiers, disk = chain(tmp_path, index)
        tiers.put(entry(KEY, 0))
        assert disk.flush(10)
        rec = Reclaimer(
            tiers.memory, index, lambda: None, on_reclaimed=lambda p, m: acked.append(dict(m)), disk=disk
        )
        rec.start()
        purge = Purge(2, ZONE, Mode.DELETE, (Everything(),), 1.0)
        with writer_held(disk, tmp_path):
            index.apply(purge)
            rec.enqueue(purge)
            await until(lambda: tiers.memory.peek(KEY) is None)
            # Fetched before the purge reached that worker: covered.
            await asyncio.to_thread(other_worker_stores, tmp_path, KEY, 1)
        await rec.drain()
        await rec.stop()
        assert disk.get(KEY) is None
        assert len(disk) == 0
        disk.close()

    asyncio.run(go())
    assert acked == [{Everything(): 1}]


def test_a_job_counts_a_record_a_queued_bounded_delete_leaves(tmp_path: Path) -> None:
    """While a lookup's bounded delete is queued, a removal job leaves uncounted (the lookup's
    credit counts it) only a record that delete removes: one stored before its bound."""
    _, disk = chain(tmp_path, EpochIndex())
    with writer_held(disk, tmp_path):
        disk.delete(KEY, 5)
        disk.delete_primary("http://h.example/all")
        with disk.env.begin() as txn:
            view = WriteView(disk, txn)
            assert view.removing(KEY, 4)
            assert not view.removing(KEY, 5), "stored at the purge: the delete keeps it"
            assert view.removing("http://h.example/all", 9), "a URL's invalidation takes every record"
            assert not view.removing("http://h.example/else", 0)
    with disk.env.begin() as txn:
        assert not WriteView(disk, txn).removing(KEY, 4), "committed: no longer queued"
    disk.close()
