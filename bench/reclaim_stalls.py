"""How long the reclaimer holds the event loop, in process, at a million entries.

Run: ``.venv/bin/python bench/reclaim_stalls.py [--n N]`` (about a minute at 1M; ~2.5 GB). The
memory tier is filled with n entries shaped like ``bench/store_memory.py``'s (1 KiB body, tags
``tagNN`` on 1/99 each and ``site`` on every entry of zone ``bench``), with a budget 5% above what
they are charged. The reclaimer runs on uvloop as in the node (with its ``malloc_trim`` after large
reclaims), next to a loop-lag probe with a 1 ms period (``edgecache.looplag``). Four hard purges,
one after the other: a 1% tag, a 1% URL prefix, the ``site`` tag (every entry of the zone: more than
a tag snapshot, so reclaimed by paging through the zone), and everything of the zone (refilled first).

Printed: per purge, entries removed, reclaim wall time, and the longest stall: loop-thread CPU
time within one probe period (independent of the machine's other load) and wall lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

import uvloop
from store_memory import make_entry

from edgecache.edge.reclaimer import Reclaimer
from edgecache.looplag import LoopLag
from edgecache.memtrim import release_freed_memory
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Mode, Prefix, Purge, Selector, Tag
from edgecache.store.memory import MemoryTier


async def run(n: int) -> None:
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
    rec = Reclaimer(tier, index, lambda: None, release_memory=release_freed_memory)
    rec.start()
    probe = LoopLag(0.001)
    task = asyncio.get_running_loop().create_task(probe.run())
    plan: list[tuple[str, Selector]] = [
        ("one tag (1%)", Tag("tag07")),
        ("one prefix (1%)", Prefix("bench.test/obj/01")),
        ("tag on every entry of the zone", Tag("site")),
        ("everything (after a refill)", Everything()),
    ]
    print(f"n = {n:,}\n")
    print(
        "| purge | removed | reclaim s (wall) | longest stall, loop-thread CPU ms | wall ms | ≤ 10 ms (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for seq, (label, selector) in enumerate(plan, start=1):
        if isinstance(selector, Everything):
            fill()
        await asyncio.sleep(0.2)
        probe.reset()
        before = len(tier)
        purge = Purge(seq, "bench", Mode.DELETE, (selector,), time.time())
        t0 = time.perf_counter()
        index.apply(purge)
        rec.enqueue(purge)
        await rec.drain()
        took = time.perf_counter() - t0
        await asyncio.sleep(1.2)  # compaction and the trim, in the background
        wall, cpu = probe.reset()
        print(
            f"| {label} | {before - len(tier):,} | {took:.2f} | {cpu * 1e3:.2f} | {wall * 1e3:.1f}"
            f" | {'yes' if cpu <= 0.010 else '**no**'} |",
            flush=True,
        )
    task.cancel()
    await rec.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    uvloop.run(run(p.parse_args().n))


if __name__ == "__main__":
    main()
