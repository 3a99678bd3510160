"""How long the reclaimer holds the event loop, in process, at a million entries.

Run: ``.venv/bin/python bench/reclaim_stalls.py [--n N]`` (about a minute at 1M; ~2.5 GB). The
memory tier is filled with n entries shaped like ``bench/store_memory.py``'s (1 KiB body, tags
``tagNN`` on 1/99 each and ``site`` on every entry of zone ``bench``), with a budget 5% above what
they are charged. The reclaimer runs on uvloop as in the node (with its ``malloc_trim`` after large
reclaims), next to a loop-lag probe with a 1 ms period (``edgecache.looplag``). Four hard purges,
one after the other: a 1% tag, a 1% URL prefix, the ``site`` tag (every entry of the zone: more than
a tag snapshot, so reclaimed by paging through the zone), and everything of the zone (refilled first).

Printed: per purge, entries removed, reclaim wall time, and the longest stall: loop-thread CPU
time within one probe period (independent of the machine's other load) and wall lateness; the
longest task step (``edgecache.looplag.StepTimer``: which task held the loop, with its CPU); and the
longest lateness less the time the loop thread waited for a CPU (the kernel's per-thread
scheduler statistics: what the process caused, computing or blocked on a lock), with that period's
CPU and how much of it a ``malloc_trim`` was running (a loop blocked on glibc's arena lock). And the
trims (``malloc_trim`` in a worker thread, as the node runs it): how many, the longest one's CPU time
(glibc holds an arena's lock while it returns that arena's pages; the time it holds it is at least
this), and the longest the loop waited for one 4 KiB allocation (a ``bytearray`` every 1 ms on the
loop: what a response being stored waits for while a trim holds the lock; wall time, so noisy on a
shared machine). ``--trim-after-mb`` sets the reclaimer's trim step (``TRIM_AFTER_BYTES``). To
compare allocators, run it with jemalloc preloaded (``LD_PRELOAD=/lib/x86_64-linux-gnu/libjemalloc.so.2
MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0``): ``edgecache.memtrim``
then trims nothing (decision 0002, addendum 5).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import uvloop
from store_memory import make_entry

from edgecache.edge import reclaimer as reclaimer_module
from edgecache.edge.reclaimer import Reclaimer
from edgecache.looplag import LoopLag, StepTimer
from edgecache.memtrim import JEMALLOC, trim_now
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Mode, Prefix, Purge, Selector, Tag
from edgecache.store.memory import MemoryTier


class Trims:
    """``release_memory`` for the reclaimer: ``trim_now`` in a worker thread, timed there."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.spans: list[tuple[float, float]] = []
        """Each trim's (start, end), ``time.perf_counter()``."""

    async def release(self) -> bool:
        if JEMALLOC:
            # Nothing to trim, and no thread either, as ``memtrim.release_freed_memory`` does: a
            # worker thread started in the middle of a mass purge made jemalloc set up an arena for
            # it, waiting (with the GIL held) while jemalloc's background thread returned pages: the
            # loop waited ~10 ms for the GIL (docs/benchmarks.md, 2026-11-30, branch `stall`).
            return False
        return await asyncio.to_thread(self._trim)

    def _trim(self) -> bool:
        t0, c0 = time.perf_counter(), time.thread_time()
        released = trim_now()
        self.cpu.append(time.thread_time() - c0)
        self.spans.append((t0, time.perf_counter()))
        return released

    def overlapping(self, start: float, end: float) -> float:
        """Seconds of trimming between ``start`` and ``end``."""
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.spans)


class AllocProbe:
    """The longest the loop waited for one 4 KiB allocation (malloc, not pymalloc)."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            block = bytearray(4096)
            took = time.perf_counter() - t0
            del block
            self.longest = max(self.longest, took)
            await asyncio.sleep(0.001)


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


async def run(n: int) -> None:
    steps = StepTimer()
    steps.install(asyncio.get_running_loop())
    tier = MemoryTier(int(n * make_entry(0, n).size * 1.05))

    def fill() -> None:
        gc.disable()
        for i in range(n):
            tier.put(make_entry(i, n))
        gc.enable()
        gc.collect()
        gc.freeze()

    fill()
    index = EpochIndex()
    trims = Trims()
    rec = Reclaimer(tier, index, lambda: None, release_memory=trims.release)
    rec.start()
    probe = LoopLag(0.001, schedstat=True)
    alloc = AllocProbe()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(probe.run()), loop.create_task(alloc.run())]
    plan: list[tuple[str, Selector]] = [
        ("one tag (1%)", Tag("tag07")),
        ("one prefix (1%)", Prefix("bench.test/obj/01")),
        ("tag on every entry of the zone", Tag("site")),
        ("everything (after a refill)", Everything()),
    ]
    step = reclaimer_module.TRIM_AFTER_BYTES >> 20
    print(f"n = {n:,}, trim step {step} MB\n")
    print(
        "| purge | removed | reclaim s (wall) | longest stall, loop-thread CPU ms | wall ms | ≤ 10 ms (CPU) "
        "| longest task step: task, CPU / wall ms "
        "| longest stall not queued for a CPU, ms: late / CPU / of it trimming | ≤ 10 ms (not queued) "
        "| trims | trim CPU ms, median / longest | longest 4 KiB allocation on the loop, wall ms "
        "| RSS MB before → after |"
    )
    print("|---|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---|")
    for seq, (label, selector) in enumerate(plan, start=1):
        if isinstance(selector, Everything):
            fill()
        await asyncio.sleep(0.2)
        probe.reset()
        steps.reset()
        alloc.longest = 0.0
        trims.cpu.clear()
        trims.spans.clear()
        rss0 = rss_mb()
        before = len(tier)
        purge = Purge(seq, "bench", Mode.DELETE, (selector,), time.time())
        t0 = time.perf_counter()
        index.apply(purge)
        rec.enqueue(purge)
        await rec.drain()
        took = time.perf_counter() - t0
        await asyncio.sleep(1.2)  # compaction and the trim, in the background
        own, (late, busy, _) = probe.longest_unqueued, probe.worst
        trimming = trims.overlapping(probe.worst_end - late - probe.every, probe.worst_end)
        wall, cpu = probe.reset()
        step, step_cpu, step_wall = steps.reset()
        print(
            f"| {label} | {before - len(tier):,} | {took:.2f} | {cpu * 1e3:.2f} | {wall * 1e3:.1f}"
            f" | {'yes' if cpu <= 0.010 else '**no**'}"
            f" | {step}, {step_cpu * 1e3:.2f} / {step_wall * 1e3:.1f}"
            f" | {own * 1e3:.1f} / {busy * 1e3:.1f} / {trimming * 1e3:.1f}"
            f" | {'yes' if own <= 0.010 else '**no**'}"
            f" | {len(trims.cpu)} | {statistics.median(trims.cpu or [0.0]) * 1e3:.1f}"
            f" / {max(trims.cpu, default=0.0) * 1e3:.1f} | {alloc.longest * 1e3:.1f}"
            f" | {rss0:,} → {rss_mb():,} |",
            flush=True,
        )
    for task in tasks:
        task.cancel()
    await rec.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--trim-after-mb", type=int, help="the reclaimer's trim step (default: the shipped one)")
    args = p.parse_args()
    if args.trim_after_mb is not None:
        reclaimer_module.TRIM_AFTER_BYTES = args.trim_after_mb << 20
    uvloop.run(run(args.n))


if __name__ == "__main__":
    main()
