"""How long CPython's full garbage collection stops a node holding a million cached entries.

Run: ``.venv/bin/python bench/gc_pause.py [--sizes N ...]`` (about a minute at 1M; needs ~2.5 GB of
memory). Each size runs in a fresh child process. The memory tier is filled with n entries shaped
like ``bench/store_memory.py``'s (1 KiB body, a head and an ETag of their own, two tags parsed from
Cache-Tag, 1% in a second zone), then, as ``edgecache.gcpolicy`` does, everything is frozen and the
hourly sweep is replayed three times: ``gc.unfreeze()`` + ``gc.collect()`` + ``gc.freeze()``. The
event loop stops for the whole sweep, so its length is the longest pause the policy causes
(docs/decisions/0006-gc-policy.md). Also printed: a plain ``gc.collect()`` of the young objects
while frozen (what the periodic collections cost), and how many objects the collector tracks.

Times are process time (the machine is shared: wall time also counts other processes' turns) and
wall time, worst of the three sweeps.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

from store_memory import make_entry

from edgecache.store.memory import MemoryTier


def child(n: int) -> dict[str, float]:
    gc.disable()  # a bulk fill; the node's own policy keeps the collector out of its way too
    tier = MemoryTier(1 << 42)
    for i in range(n):
        tier.put(make_entry(i, n))
    gc.enable()
    gc.collect()
    gc.freeze()
    tracked = len(gc.get_objects()) + gc.get_freeze_count()
    sweeps_cpu, sweeps_wall = [], []
    for _ in range(3):
        c, w = time.process_time(), time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        sweeps_cpu.append(time.process_time() - c)
        sweeps_wall.append(time.perf_counter() - w)
    c = time.process_time()
    gc.collect()
    young = time.process_time() - c
    return {
        "n": len(tier),
        "tracked": tracked,
        "sweep_cpu_ms": max(sweeps_cpu) * 1e3,
        "sweep_wall_ms": max(sweeps_wall) * 1e3,
        "young_cpu_ms": young * 1e3,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    print(
        "| entries | objects the collector tracks | hourly sweep, CPU ms (worst of 3) | wall ms | ≤ 50 ms"
        " | collection while frozen, CPU ms |"
    )
    print("|---:|---:|---:|---:|---|---:|")
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        r = json.loads(out.stdout)
        print(
            f"| {r['n']:,.0f} | {r['tracked']:,.0f} | {r['sweep_cpu_ms']:.1f} | {r['sweep_wall_ms']:.1f}"
            f" | {'yes' if r['sweep_cpu_ms'] <= 50 else '**no**'} | {r['young_cpu_ms']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
