"""The persistent tier in process: disk hits next to memory hits, start-up, clear and purge rates.

One command, prints a table:

    .venv/bin/python bench/disk_tier.py [--objects N]

- hit µs: ``TierChain``-style read of one object from the disk store (LMDB read transaction, decode,
  body copy) next to ``MemoryTier.get``, 1 KiB and 64 KiB bodies, pages in the page cache. This is
  the store's share of a disk hit, not a whole HTTP response (no server, no network).
- open s: opening the store with N objects on disk and reading ``reclaimed_upto`` (what a node does
  before it serves; nothing is rebuilt), with the process's RSS after it.
- clear objects/s: a Cache Reserve clear of N objects; purge-everything objects/s: a hard purge of
  the zone through the reclaimer's disk job. Both run on the writer thread while an event loop in
  the main thread measures its own lag (how late a 1 ms timer fires): what the data plane would
  feel, p99 and max.
The machine is shared with other work: the figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Everything, Mode, Purge
from edgecache.store.disk import DiskStore, Job, JobProgress, clear_reserve_job
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

ZONE = "z"


def entry(i: int, size: int) -> Entry:
    return Entry(
        zone=ZONE,
        key=f"http://bench.example/o/{i}",
        status=200,
        head=b"Content-Type: text/plain\r\nCache-Control: max-age=86400\r\n",
        body=b"x" * size,
        tags=(f"t{i % 100}",),
        stored_seq=0,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=86400.0,
    )


def fill(store: DiskStore, n: int, size: int, reserve: bool) -> None:
    for i in range(n):
        store.put(entry(i, size), reserve=reserve)
        if i % 5000 == 4999:
            store.flush()
    store.flush()


def hits(root: Path, size: int, n: int, reads: int) -> tuple[float, float]:
    store = DiskStore(root, budget=1 << 34, position=0)
    fill(store, n, size, reserve=False)
    memory = MemoryTier(1 << 34)
    for i in range(n):
        memory.put(entry(i, size))
    keys = [f"http://bench.example/o/{random.randrange(n)}" for _ in range(reads)]
    for k in keys:
        store.get(k)
    t = time.perf_counter()
    for k in keys:
        store.get(k)
    disk_us = (time.perf_counter() - t) / reads * 1e6
    t = time.perf_counter()
    for k in keys:
        memory.get(k)
    mem_us = (time.perf_counter() - t) / reads * 1e6
    store.close()
    return disk_us, mem_us


async def _lag_while(work: Future[None]) -> tuple[float, float]:
    """p99 and max lateness (ms) of a 1 ms timer on this loop until ``work`` is done."""
    late: list[float] = []
    done = asyncio.wrap_future(work)
    while not done.done():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - t - 0.001) * 1000)
    await done
    late.sort()
    return late[int(len(late) * 0.99)] if late else 0.0, late[-1] if late else 0.0


def timed_job(store: DiskStore, job: Job) -> tuple[float, float, float, float]:
    """Wall seconds and process CPU seconds the job took, and the loop's p99 and max lag (ms)
    meanwhile (the loop's own timer wake-ups are in the CPU figure too: a few ms per second)."""
    t = time.perf_counter()
    c = time.process_time()
    p99, worst = asyncio.run(_lag_while(store.run_job(job)))
    return time.perf_counter() - t, time.process_time() - c, p99, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100_000, help="objects for start-up, clear and purge")
    args = ap.parse_args()
    n = args.objects
    base = Path(tempfile.mkdtemp(prefix="edgecache-disk-bench-"))
    try:
        print(f"{'measure':<34}{'value':>14}")
        for size in (1024, 65536):
            d, m = hits(base / f"hits{size}", size, 20_000 if size == 1024 else 2_000, 50_000)
            print(f"{'disk hit µs, ' + str(size // 1024) + ' KiB':<34}{d:>14.2f}")
            print(f"{'memory hit µs, ' + str(size // 1024) + ' KiB':<34}{m:>14.2f}")
        root = base / "big"
        store = DiskStore(root, budget=1 << 34, position=0, reserve_budget=lambda z: 1 << 34)
        fill(store, n, 1024, reserve=True)
        store.close()
        t = time.perf_counter()
        store = DiskStore(root, budget=1 << 34, position=0, reserve_budget=lambda z: 1 << 34)
        _ = store.reclaimed_upto
        opened = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{f'open with {n} objects x2 areas, s':<34}{opened:>14.4f}")
        print(f"{'max RSS so far, MiB':<34}{rss:>14.1f}")
        idle: Future[None] = Future()
        threading.Timer(1.0, idle.set_result, (None,)).start()
        p99, worst = asyncio.run(_lag_while(idle))
        print(f"{'idle loop lag p99 / max, ms':<34}{f'{p99:.2f} / {worst:.2f}':>14}")
        progress = JobProgress()
        took, cpu, p99, worst = timed_job(store, clear_reserve_job(ZONE, progress))
        print(f"{'reserve clear, objects/s (wall)':<34}{progress.objects / took:>14.0f}")
        print(f"{'  objects per CPU second':<34}{progress.objects / cpu:>14.0f}")
        print(f"{'  loop lag p99 / max, ms':<34}{f'{p99:.2f} / {worst:.2f}':>14}")
        job = DiskReclaim(Purge(1, ZONE, Mode.DELETE, (Everything(),), time.time()))
        took, cpu, p99, worst = timed_job(store, job)
        removed = job.counts[Everything()]
        print(f"{'purge everything, objects/s (wall)':<34}{removed / took:>14.0f}")
        print(f"{'  objects per CPU second':<34}{removed / cpu:>14.0f}")
        print(f"{'  loop lag p99 / max, ms':<34}{f'{p99:.2f} / {worst:.2f}':>14}")
        store.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
