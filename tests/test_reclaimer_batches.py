"""A reclaimer that gathers purges (as a worker process's does) hands their disk part to the disk
writer as one job: each purge still removes what it covers, in order, and is acknowledged with its
own counts, also when one of them empties the whole zone."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path

from edgecache.edge.reclaimer import Reclaimer
from edgecache.edge.writeback import still_valid
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Mode, Purge, Selector, Url
from edgecache.store.chain import TierChain
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

ZONE = "z"


def entry(path: str, stored_seq: int) -> Entry:
    return Entry(
        zone=ZONE,
        key=f"http://h.example{path}",
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=b"x" * 100,
        tags=(),
        stored_seq=stored_seq,
        response_time=1000.0,
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


def _gathering(
    disk: DiskStore, acked: list[tuple[int, dict[Selector, int]]]
) -> tuple[EpochIndex, TierChain, Reclaimer]:
    """A worker's reclaimer (it gathers purges) over memory and ``disk``, noting its acknowledgements."""
    index = EpochIndex()
    tiers = TierChain(
        MemoryTier(1 << 24),
        disk,
        reserve_on=lambda zone: False,
        reserve_eligible=lambda e: False,
        still_valid=still_valid(index),
    )
    rec = Reclaimer(
        tiers,
        index,
        lambda: None,
        on_reclaimed=lambda purge, matched: acked.append((purge.seq, dict(matched))),
        disk=disk,
        gather=0.05,
    )
    return index, tiers, rec


def test_a_gathered_batch_with_two_zone_removals_acknowledges_each_purge(tmp_path: Path) -> None:
    acked: list[tuple[int, dict[Selector, int]]] = []

    async def go() -> None:
        disk = DiskStore(tmp_path, budget=1 << 30, position=0, map_size=1 << 28)
        index, tiers, rec = _gathering(disk, acked)
        for i in range(3):
            tiers.put(entry(f"/old/{i}", 0))
        disk.flush(10)
        rec.start()
        purges = [
            Purge(1, ZONE, Mode.DELETE, (Url("http://h.example/old/0"),), 1.0),
            Purge(2, ZONE, Mode.DELETE, (Everything(),), 2.0),
            Purge(3, ZONE, Mode.DELETE, (Everything(),), 3.0),
        ]
        # Stored between the second and third purge: the third removes it, the second must not.
        late = entry("/late", 2)
        tiers.put(late)
        disk.flush(10)
        for purge in purges:  # within the gathering window: one pass, one disk job
            index.apply(purge)
            rec.enqueue(purge)
        await rec.drain()
        await rec.stop()
        assert len(disk) == 0
        disk.close()

    asyncio.run(go())
    assert [seq for seq, _ in acked] == [1, 2, 3]
    assert acked[0][1] == {Url("http://h.example/old/0"): 1}
    assert acked[1][1] == {Everything(): 2}
    assert acked[2][1] == {Everything(): 1}


class _FailingDisk(DiskStore):
    """A disk tier whose writer cannot run removal jobs (as when a job raises on it)."""

    def run_job(self, job: object) -> Future[None]:  # type: ignore[override]
        failed: Future[None] = Future()
        failed.set_exception(OSError("disk job failed"))
        return failed


def test_a_failed_disk_job_acknowledges_its_purges_with_nothing_and_keeps_their_rows(
    tmp_path: Path,
) -> None:
    """Every purge of a batch whose disk part failed is acknowledged (with no counts, so its tasks
    end), in order, and the epoch index keeps their rows: a restart replays them."""
    acked: list[tuple[int, dict[Selector, int]]] = []

    async def go() -> tuple[int, int]:
        disk = _FailingDisk(tmp_path, budget=1 << 30, position=0, map_size=1 << 28)
        index, tiers, rec = _gathering(disk, acked)
        tiers.put(entry("/old/0", 0))
        disk.flush(10)
        rec.start()
        for seq in (1, 2):
            purge = Purge(seq, ZONE, Mode.DELETE, (Url(f"http://h.example/old/{seq - 1}"),), float(seq))
            index.apply(purge)
            rec.enqueue(purge)
        await rec.drain()
        await rec.compact()
        await rec.stop()
        disk.close()
        return rec.compacted_upto, index.rows

    compacted, rows = asyncio.run(go())
    assert acked == [(1, {}), (2, {})]
    assert compacted == 0
    assert rows == 2
