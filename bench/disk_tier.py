"""The persistent tier in process: disk hits, start-up, kill -9, and whole-zone removal at N objects.

One command, prints a table:

    .venv/bin/python bench/disk_tier.py [--objects N]

- hit µs: one object read from the disk store (LMDB read transaction, decode, body copy) next to
  ``MemoryTier.get``, 1 KiB and 64 KiB bodies, pages in the page cache. The store's share of a disk
  hit, not a whole HTTP response.
- The store is filled with N 1 KiB objects of zone ``z`` in both areas (disk cache and Cache
  Reserve), 20k of zone ``gone`` and 20k of zone ``live``.
- start-up: a new process opens the store, reads ``reclaimed_upto`` and serves one read (what a node
  does before it listens; nothing is rebuilt); its wall time and RSS (anonymous and file-backed
  resident pages apart: the mapped file's pages are the page cache, not the process's own memory).
- kill -9: a child process opens the store and runs, on its writer, fills of zone ``z`` (newer
  positions), a tag purge of zone ``z`` (1% of its objects, record by record) and a purge of
  everything of zone ``gone`` (a drop), printing each purge when its job has finished (what the node
  acknowledges); it is killed with SIGKILL while the fills go on. The store is then reopened (timed)
  and every record read back: unreadable records and records an acknowledged purge covered must
  both be 0, and the counters must equal the records found.
- clear, purge everything: a Cache Reserve clear of zone ``z`` (N records) and then a hard purge of
  everything of zone ``z`` through the reclaimer's disk job (N disk-cache records), each on the
  writer thread while the event loop (uvloop) serves a request every millisecond: a disk read of one
  of zone ``live``'s objects. Reported: objects/s on the wall clock and per CPU second of the
  process, the loop's longest stall (how late a request was started), and the requests' latency p99
  (from when it was due to its answer) while the job ran, against the idle second just before it.
  ``mdb_drop`` and the commit run with the GIL released (py-lmdb's ``UNLOCKED``), so what the
  writer holds the loop back by is the Python around them.
- fills after: 20k puts once the zone has been dropped (LMDB reuses the freed pages).
The machine is shared with other work: wall-clock figures are noisy, the CPU figures less so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import uvloop

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Everything, Mode, Purge
from edgecache.store.disk import DiskStore, Job, JobProgress, clear_reserve_job, decode_entry
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

ZONE = "z"
LIVE = "live"
GONE = "gone"
SIDE = 20_000
TAGS = 100


def entry(i: int, size: int, zone: str = ZONE, seq: int = 0) -> Entry:
    return Entry(
        zone=zone,
        key=f"http://{zone}.example/o/{i}",
        status=200,
        head=b"Content-Type: text/plain\r\nCache-Control: max-age=86400\r\n",
        body=b"x" * size,
        tags=(f"t{i % TAGS}",),
        stored_seq=seq,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=86400.0,
    )


def open_store(root: Path) -> DiskStore:
    return DiskStore(root, budget=1 << 36, position=0, reserve_budget=lambda z: 1 << 36)


def fill(store: DiskStore, n: int, size: int, reserve: bool, zone: str = ZONE) -> None:
    for i in range(n):
        store.put(entry(i, size, zone), reserve=reserve)
        if i % 5000 == 4999:
            store.flush()
    store.flush()


def hits(root: Path, size: int, n: int, reads: int) -> tuple[float, float]:
    store = open_store(root)
    fill(store, n, size, reserve=False)
    memory = MemoryTier(1 << 34)
    for i in range(n):
        memory.put(entry(i, size))
    keys = [f"http://{ZONE}.example/o/{random.randrange(n)}" for _ in range(reads)]
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


_STARTUP = """
import resource, sys, time
from pathlib import Path
t = time.perf_counter()
from edgecache.store.disk import DiskStore
store = DiskStore(Path(sys.argv[1]), budget=1 << 36, position=0)
store.reclaimed_upto
assert store.get("http://live.example/o/1") is not None
took = time.perf_counter() - t
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = lambda name: int(status[name].split()[0])
print(took, kib("RssAnon"), kib("RssFile") + kib("RssShmem"))
store.close()
"""


def startup(root: Path) -> tuple[float, float, float]:
    """Seconds to open and serve one read in a new process, its anonymous and file RSS (MiB)."""
    cmd = [sys.executable, "-c", _STARTUP, str(root)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    took, anon, file = out.stdout.split()
    return float(took), int(anon) / 1024, int(file) / 1024


_CRASHER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from disk_tier import entry, open_store, DiskReclaim, Purge, Mode, Everything
from edgecache.purge.selectors import Tag
store = open_store(Path(sys.argv[1]))
for seq, zone, selector in ((5, "z", Tag("t7")), (6, "gone", Everything())):
    store.run_job(DiskReclaim(Purge(seq, zone, Mode.DELETE, (selector,), time.time()))).result()
    print("acked", seq, zone, flush=True)
i = 0
while True:
    store.put(entry(i, 1024, "z", seq=10))
    i += 1
    if i % 2000 == 0:
        print("filled", i, flush=True)
"""


def crash(root: Path) -> dict[str, float]:
    """Kill -9 a process in the middle of fills after its purges; reopen and read every record."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(root), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[tuple[int, str]] = []
    kill_after = 2000 * random.randint(2, 10)
    for line in child.stdout:
        word, a, *zone = line.split()
        if word == "acked":
            acked.append((int(a), zone[0]))
        elif int(a) >= kill_after:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    t = time.perf_counter()
    store = open_store(root)
    upto = store.reclaimed_upto
    opened = time.perf_counter() - t
    corrupt = purged = records = 0
    with store.env.begin() as txn:
        for db in list(store._dbs.values()):
            cur = txn.cursor(db=db)
            if not cur.set_range(b"e"):
                continue
            for k, v in cur.iternext():
                if bytes(k[:1]) != b"e":
                    break
                records += 1
                try:
                    e = decode_entry(v).entry
                except Exception:
                    corrupt += 1
                    continue
                if e.key != bytes(k[1:]).decode("utf-8", "surrogatepass"):
                    corrupt += 1
                for seq, zone in acked:
                    covered = zone == GONE or "t7" in e.tags
                    if e.zone == zone and covered and e.stored_seq < seq:
                        purged += 1
    counted = store.usage()[1] + sum(store.reserve_usage(z)[1] for z in (ZONE, GONE, LIVE))
    store.close()
    return {
        "acked": len(acked),
        "reclaimed_upto": upto,
        "open": opened,
        "records": records,
        "corrupt": corrupt,
        "purged": purged,
        "counters_off": counted - records,
    }


async def _serve_while(store: DiskStore, work: Future[None] | None, idle: float) -> tuple[float, float, int]:
    """A request every 1 ms (a disk read of a ``live`` object) until ``work`` is done, or for
    ``idle`` seconds: p99 latency (ms, from when it was due), the longest stall (ms), requests."""
    done = asyncio.wrap_future(work) if work is not None else None
    keys = [f"http://{LIVE}.example/o/{i}" for i in range(SIDE)]
    late: list[float] = []
    stall = 0.0
    due = start = time.perf_counter()
    while (done is not None and not done.done()) or (done is None and due - start < idle):
        now = time.perf_counter()
        if now < due:
            await asyncio.sleep(due - now)
        now = time.perf_counter()
        stall = max(stall, now - due)
        while due <= now:
            assert store.get(keys[random.randrange(SIDE)]) is not None
            late.append(time.perf_counter() - due)
            due += 0.001
    if done is not None:
        await done
    late.sort()
    return late[int(len(late) * 0.99)] * 1000 if late else 0.0, stall * 1000, len(late)


def timed_job(store: DiskStore, job: Job) -> tuple[float, float, float, float, int]:
    """Wall and CPU seconds the job took, the requests' p99 and the longest stall (ms) meanwhile."""
    t = time.perf_counter()
    c = time.process_time()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        p99, stall, n = runner.run(_serve_while(store, store.run_job(job), 0))
    return time.perf_counter() - t, time.process_time() - c, p99, stall, n


def idle_serving(store: DiskStore) -> tuple[float, float, int]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve_while(store, None, 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000, help="objects of the zone removed")
    args = ap.parse_args()
    n = args.objects
    base = Path(tempfile.mkdtemp(prefix="edgecache-disk-bench-"))
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"{name:<52}{value:>20}", flush=True)

    try:
        print(f"{'measure':<52}{'value':>20}")
        for size in (1024, 65536):
            d, m = hits(base / f"hits{size}", size, 20_000 if size == 1024 else 2_000, 50_000)
            row(f"disk hit, {size // 1024} KiB, µs", f"{d:.2f}")
            row(f"memory hit, {size // 1024} KiB, µs", f"{m:.2f}")
        root = base / "big"
        store = open_store(root)
        t, c = time.perf_counter(), time.process_time()
        fill(store, n, 1024, reserve=True)
        rate, cpu_s = n / (time.perf_counter() - t), time.process_time() - c
        row(f"fill {n} objects x2 areas, objects/s (CPU s)", f"{rate:,.0f} ({cpu_s:.0f})")
        fill(store, SIDE, 1024, reserve=False, zone=GONE)
        fill(store, SIDE, 1024, reserve=False, zone=LIVE)
        store.close()
        took, anon, file = startup(root)
        row("start-up: open, first read, s", f"{took:.3f}")
        row("  its RSS: anonymous / file-backed, MiB", f"{anon:.0f} / {file:.0f}")
        result = crash(root)
        row("kill -9: purges acknowledged before the kill", f"{result['acked']:.0f}")
        row("  reopen after the kill, s", f"{result['open']:.3f}")
        row("  records read back", f"{result['records']:,.0f}")
        bad = f"{result['corrupt']:.0f} / {result['purged']:.0f}"
        row("  corrupt records / covered by an acked purge", bad)
        row("  counters minus records found", f"{result['counters_off']:.0f}")
        store = open_store(root)
        for name, job_of in (
            ("Cache Reserve clear", lambda p: clear_reserve_job(ZONE, p)),
            ("purge everything", None),
        ):
            progress = JobProgress()
            p99, stall, reqs = idle_serving(store)
            row(f"{name}: the second before, request p99 / stall, ms", f"{p99:.2f} / {stall:.2f}")
            if job_of is None:
                reclaim = DiskReclaim(Purge(20, ZONE, Mode.DELETE, (Everything(),), time.time()))
                took, cpu, p99, stall, reqs = timed_job(store, reclaim)
                removed = reclaim.counts[Everything()]
            else:
                took, cpu, p99, stall, reqs = timed_job(store, job_of(progress))
                removed = progress.objects
            row("  objects removed", f"{removed:,}")
            row("  objects/s wall (per CPU second)", f"{removed / took:,.0f} ({removed / cpu:,.0f})")
            row("  wall s / CPU s", f"{took:.3f} / {cpu:.3f}")
            row("  meanwhile: request p99 / longest stall, ms", f"{p99:.2f} / {stall:.2f} ({reqs} req)")
            row("  load average (1 min)", f"{os.getloadavg()[0]:.1f}")
        t, c = time.perf_counter(), time.process_time()
        fill(store, SIDE, 1024, reserve=False)
        row(f"fills after the drop, {SIDE}, objects/s", f"{SIDE / (time.perf_counter() - t):,.0f}")
        store.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process, MiB: {peak:.0f}")
        print(f"load average: {os.getloadavg()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
