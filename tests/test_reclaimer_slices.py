"""The reclaimer never holds the event loop for a whole large purge: it reads candidates page by page,
yields between slices of work, compacts the epoch index in slices, and still reclaims exactly what
each purge covers. The loop-lag probe sees a stall when one happens."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from edgecache.edge import reclaimer as reclaimer_module
from edgecache.edge.reclaimer import Reclaimer
from edgecache.looplag import LoopLag
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Tag
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier


def entry(zone: str, key: str, tags: tuple[str, ...] = ()) -> Entry:
    return Entry(
        zone=zone,
        key=key,
        status=200,
        head=b"",
        body=b"x",
        tags=tags,
        stored_seq=0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=60.0,
    )


def filled(n: int) -> MemoryTier:
    """Zone ``a`` on three hosts (more keys than a page), zone ``b`` on a host sorting in between."""
    tier = MemoryTier(1 << 30)
    for i in range(n):
        host = ("a1.test", "a2.test", "c.test")[i % 3]
        tier.put(entry("a", f"http://{host}/o/{i:06d}", (f"t{i % 7}",)))
    for i in range(50):
        tier.put(entry("b", f"http://b.test/o/{i:06d}", ("t1",)))
    return tier


class Ticker:
    """Counts how often the loop ran something else: the data plane's view of a long task."""

    def __init__(self) -> None:
        self.ticks = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.ticks += 1
            self._handle = loop.call_soon(tick)

        self._handle = loop.call_soon(tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def run_purge(tier: MemoryTier, purge: Purge) -> tuple[dict[object, int], int]:
    async def go() -> tuple[dict[object, int], int]:
        index = EpochIndex()
        index.apply(purge)
        rec = Reclaimer(tier, index, lambda: None)
        ticker = Ticker()
        ticker.start()
        counts = await rec.reclaim(purge)
        ticker.stop()
        return dict(counts), ticker.ticks

    return asyncio.run(go())


def test_purge_everything_over_many_pages_removes_the_zone_and_nothing_else() -> None:
    n = 3 * reclaimer_module.PAGE + 17
    tier = filled(n)
    counts, _ = run_purge(tier, Purge(1, "a", Mode.DELETE, (Everything(),), time.time()))
    assert counts == {Everything(): n}
    assert len(tier) == 50 and {e.zone for e in tier} == {"b"}


def test_host_and_prefix_purges_over_many_pages_remove_exactly_their_keys() -> None:
    n = 3 * reclaimer_module.PAGE
    tier = filled(n)
    purge = Purge(1, "a", Mode.DELETE, (Host("a2.test"), Prefix("c.test/o/0001")), time.time())
    counts, _ = run_purge(tier, purge)
    assert counts[Host("a2.test")] == n // 3
    gone_c = sum(1 for i in range(n) if i % 3 == 2 and f"{i:06d}".startswith("0001"))
    assert counts[Prefix("c.test/o/0001")] == gone_c
    left = {e.key for e in tier}
    assert not any(k.startswith("http://a2.test/") for k in left)
    assert len(left) == n - n // 3 - gone_c + 50


def test_soft_purge_marks_every_page_stale_and_keeps_the_entries() -> None:
    n = 2 * reclaimer_module.PAGE + 5
    tier = filled(n)
    counts, _ = run_purge(tier, Purge(1, "a", Mode.INVALIDATE, (Everything(),), 1234.0))
    assert counts == {Everything(): n}
    assert len(tier) == n + 50
    assert all(e.stale_since == 1234.0 for e in tier if e.zone == "a")
    assert all(e.stale_since is None for e in tier if e.zone == "b")


def test_a_large_reclaim_lets_the_loop_run_other_work_in_between() -> None:
    tier = filled(30_000)
    counts, ticks = run_purge(tier, Purge(1, "a", Mode.DELETE, (Everything(), Tag("t1")), time.time()))
    assert counts[Everything()] == 30_000
    # Hundreds of slices of work (every page, and every 2 ms); the other callback ran in each gap.
    assert ticks >= 30_000 // reclaimer_module.PAGE


def test_compaction_of_a_long_backlog_is_done_in_slices_and_forgets_every_row() -> None:
    async def go() -> tuple[int, int, int]:
        index = EpochIndex()
        purges = 5 * reclaimer_module.COMPACT_PURGES
        for seq in range(1, purges + 1):
            index.apply(Purge(seq, "a", Mode.DELETE, (Tag(f"t{seq}"),), 0.0))
        rec = Reclaimer(MemoryTier(1 << 20), index, lambda: None)
        rec.reclaimed_upto = purges
        ticker = Ticker()
        ticker.start()
        removed = await rec.compact()
        ticker.stop()
        return removed, len(index), ticker.ticks

    removed, rows, ticks = asyncio.run(go())
    assert removed == 5 * reclaimer_module.COMPACT_PURGES and rows == 0
    assert ticks >= 4


def test_the_loop_lag_probe_reports_a_stall() -> None:
    async def go() -> LoopLag:
        probe = LoopLag(0.002)
        task = asyncio.get_running_loop().create_task(probe.run())
        await asyncio.sleep(0.02)
        time.sleep(0.05)  # one callback holding the loop for 50 ms
        await asyncio.sleep(0.02)
        task.cancel()
        return probe

    probe = asyncio.run(go())
    assert probe.longest >= 0.045 - 0.002 and probe.stalls >= 1
    longest, _ = probe.reset()
    assert longest >= 0.043 and probe.longest == 0.0


def test_the_probe_counts_cpu_work_that_held_the_loop() -> None:
    async def go() -> LoopLag:
        probe = LoopLag(0.002)
        task = asyncio.get_running_loop().create_task(probe.run())
        await asyncio.sleep(0.02)
        end = time.thread_time() + 0.03
        while time.thread_time() < end:  # 30 ms of CPU in one callback
            pass
        await asyncio.sleep(0.02)
        task.cancel()
        return probe

    probe = asyncio.run(go())
    assert probe.longest_cpu >= 0.03


def test_the_probe_tells_a_loop_blocked_on_a_lock_from_one_computing() -> None:
    """A lock another thread holds (as glibc's arena lock during a trim) stalls the loop without
    CPU: with ``schedstat`` the probe shows the stall, and that the loop neither computed nor waited
    for a CPU through it."""
    held = threading.Lock()

    def holder(ready: threading.Event) -> None:
        with held:
            ready.set()
            time.sleep(0.05)

    async def go() -> LoopLag:
        probe = LoopLag(0.002, schedstat=True)
        task = asyncio.get_running_loop().create_task(probe.run())
        await asyncio.sleep(0.02)
        ready = threading.Event()
        thread = threading.Thread(target=holder, args=(ready,))
        thread.start()
        ready.wait()
        with held:  # the loop's thread blocks here for the rest of the 50 ms
            pass
        await asyncio.sleep(0.02)
        task.cancel()
        thread.join()
        return probe

    probe = asyncio.run(go())
    late, cpu, _ = probe.worst
    assert probe.longest_unqueued >= 0.03 and late >= probe.longest_unqueued
    assert cpu < 0.02 and probe.longest_cpu < 0.02


def test_a_tag_on_more_entries_than_a_snapshot_is_reclaimed_through_the_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reclaimer_module, "TAG_SNAPSHOT_MAX", 100)
    n = 2 * reclaimer_module.PAGE
    tier = filled(n)
    assert tier.tag_size("a", "t3") > 100
    counts, _ = run_purge(tier, Purge(1, "a", Mode.DELETE, (Tag("t3"),), time.time()))
    assert counts == {Tag("t3"): sum(1 for i in range(n) if i % 7 == 3)}
    assert not any("t3" in e.tags for e in tier) and len(tier) == n - counts[Tag("t3")] + 50
    assert tier.tag_size("b", "t1") == 50


def test_a_large_reclaim_releases_memory_in_steps_as_it_goes_and_a_small_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tier = filled(3000)
    step = tier.bytes_used // 5
    monkeypatch.setattr(reclaimer_module, "TRIM_AFTER_BYTES", step)
    calls: list[tuple[int, int]] = []

    async def release() -> bool:
        calls.append((len(tier), tier.bytes_used))
        return True

    async def go() -> None:
        index = EpochIndex()
        rec = Reclaimer(tier, index, lambda: None, release_memory=release)
        rec.start()
        for seq, selector in enumerate((Tag("t1"), Everything()), start=1):
            purge = Purge(seq, "a", Mode.DELETE, (selector,), time.time())
            index.apply(purge)
            rec.enqueue(purge)
            await rec.drain()
            await asyncio.sleep(0.05)
            if seq == 1:
                assert calls == [], "a seventh of the tier is under the step"
        await rec.stop()

    before = tier.bytes_used
    asyncio.run(go())
    assert len(calls) >= 3, "several trims while zone a was being emptied"
    assert calls[0][0] > 50, "the first trim ran before the reclaim had finished"
    assert calls[-1][0] == 50, "and the last one for its rest, once it had"
    freed = [before - calls[0][1]] + [a[1] - b[1] for a, b in itertools.pairwise(calls)]
    assert all(f < 2 * step for f in freed[:-1]), f"each trim returns about one step: {freed}"


def test_drain_waits_for_the_trim_that_follows_a_large_reclaim(monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark that drains before its next purge must not have the last purge's trim (glibc's
    arena lock held: every allocation of the loop waits) fall into the next one's measurement."""
    tier = filled(3000)
    monkeypatch.setattr(reclaimer_module, "TRIM_AFTER_BYTES", tier.bytes_used * 2 // 3)
    trims: list[str] = []

    async def release() -> bool:
        trims.append("started")
        await asyncio.sleep(0.05)
        trims.append("done")
        return True

    async def go() -> list[str]:
        index = EpochIndex()
        rec = Reclaimer(tier, index, lambda: None, release_memory=release)
        rec.start()
        purge = Purge(1, "a", Mode.DELETE, (Everything(),), time.time())
        index.apply(purge)
        rec.enqueue(purge)
        await rec.drain()
        seen = list(trims)
        await rec.stop()
        return seen

    seen = asyncio.run(go())
    assert seen == ["started", "done"] * 2, "a trim on the way and one for the rest, both over by then"


@pytest.mark.parametrize("spacing", [0.0, 0.05])
def test_a_backlog_of_purges_that_find_nothing_is_reclaimed_in_slices(
    monkeypatch: pytest.MonkeyPatch, spacing: float
) -> None:
    """A replay at start-up or a follower catching up enqueues thousands of purges at once, and in
    an empty memory tier none of them reaches a step: the loop must still run between slices (here
    every purge is a slice's worth), not once for the whole backlog."""
    monkeypatch.setattr(reclaimer_module, "SLICE", 0.0)
    tier = MemoryTier(1 << 20)
    backlog = 2000
    reclaimed: list[int] = []
    most = 0

    async def go() -> None:
        nonlocal most
        index = EpochIndex()
        rec = Reclaimer(
            tier, index, lambda: None, on_reclaimed=lambda p, m: reclaimed.append(p.seq), spacing=spacing
        )
        rec.start()
        for seq in range(1, backlog + 1):
            purge = Purge(seq, "a", Mode.DELETE, (Tag(f"gone{seq}"),), time.time())
            index.apply(purge)
            rec.enqueue(purge)
        seen = 0
        while len(reclaimed) < backlog:
            await asyncio.sleep(0)
            most = max(most, len(reclaimed) - seen)
            seen = len(reclaimed)
        await rec.stop()

    asyncio.run(go())
    assert reclaimed == list(range(1, backlog + 1))
    assert most <= 2, f"{most} purges reclaimed while the loop ran nothing else"
