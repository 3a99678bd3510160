"""Does the memory tier's byte budget bound the memory it really uses?

Run: ``.venv/bin/python bench/tier_accounting.py [--budget MB]`` (about half a minute). For each
entry shape below, a fresh ``MemoryTier`` with a budget of ``--budget`` MB (default 64) is filled
until it has evicted as many entries again as it holds, with entries built the way the proxy builds
them (key and head strings and bytes of their own, tags parsed from a Cache-Tag field by
``parse_tags``). ``tracemalloc`` measures every byte allocated and still alive afterwards (entries,
their keys, heads, bodies and tag strings, the tier's dict, ring and indexes) against the budget,
which is what ``bytes_used`` claims to bound. The figure that matters is "real / budget": within 5%
is the target (docs/decisions/0002-memory-tier-eviction.md). tracemalloc counts what Python asked
of the allocator; malloc's own headers and rounding (~8-16 B a block on glibc; jemalloc's size
classes, up to 25% on a large block) come on top in RSS, so ``--rss`` measures that instead: each
shape in a fresh process on the allocator this one runs on (run it with jemalloc preloaded, as
``edgecache serve`` runs, decision 0019, and without), its resident set after the fill and churn
(freed pages given back first: ``malloc_trim`` on glibc, a purge of every arena on jemalloc) less
before, against the budget.

Printed: per shape, entries stored, real bytes per entry, charged bytes per entry (``Entry.size``),
their difference, and real / budget. Process time; nothing here depends on the machine's load.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from edgecache.allocator import running
from edgecache.httpcache.tags import parse_tags
from edgecache.memtrim import trim_now
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier


@dataclass(frozen=True)
class Shape:
    name: str
    body: int
    tags: int
    head: int


SHAPES = (
    Shape("1 KiB body, 2 tags", 1024, 2, 100),
    Shape("1 KiB body, no tags", 1024, 0, 100),
    Shape("empty body, 2 tags", 0, 2, 100),
    Shape("16 KiB body, 1 tag", 16384, 1, 300),
    Shape("1 KiB body, 6 tags", 1024, 6, 100),
    Shape("100 B body, 2 tags, long key", 100, 2, 250),
)


def make(shape: Shape, i: int) -> Entry:
    tag_field = ", ".join(
        [f"tag{i % 97:02d}", "site", *(f"t{k}-{i % 1000}" for k in range(shape.tags))][: shape.tags]
    )
    key = f"http://bench.test/obj/{i:08d}" + ("?q=" + "x" * 60 if "long" in shape.name else "")
    head = (
        f'content-type: text/html\r\netag: "{i:08d}"\r\n' + "x-pad: " + "p" * shape.head + "\r\n"
    ).encode()
    return Entry(
        zone="bench",
        key=key,
        status=200,
        head=head,
        body=bytes(shape.body),
        tags=parse_tags([("cache-tag", tag_field)]) if tag_field else (),
        stored_seq=0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=300.0,
    )


def measure(shape: Shape, budget: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tier = MemoryTier(budget)
    i = 0
    while tier.evictions < len(tier) or tier.evictions == 0:
        tier.put(make(shape, i))
        i += 1
    gc.collect()
    real = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n = len(tier)
    charged = tier.bytes_used
    del tier
    return {"n": n, "real": real, "charged": charged}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def give_back() -> None:
    """Return freed pages to the OS, so that RSS counts what is in use (and its fragmentation)."""
    if running() == "jemalloc":
        # MALLCTL_ARENAS_ALL (4096): every arena's dirty and muzzy pages.
        ctypes.CDLL(None).mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))
    else:
        trim_now()


def measure_rss(shape: Shape, budget: int) -> dict[str, float]:
    """``measure`` by the resident set (run in a process of its own)."""
    gc.collect()
    give_back()
    base = rss()
    tier = MemoryTier(budget)
    i = 0
    while tier.evictions < len(tier) or tier.evictions == 0:
        tier.put(make(shape, i))
        i += 1
    gc.collect()
    give_back()
    return {"n": len(tier), "real": rss() - base, "charged": tier.bytes_used}


def in_child(shape: Shape, budget: int) -> dict[str, float]:
    """``measure_rss`` in a fresh interpreter with this one's environment (and allocator)."""
    call = f"t.measure_rss(t.SHAPES[{SHAPES.index(shape)}], {budget})"
    code = f"import json, tier_accounting as t; print(json.dumps({call}))"
    bench = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [bench, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=64, help="MB")
    p.add_argument("--rss", action="store_true", help="measure the resident set, not tracemalloc")
    args = p.parse_args()
    budget = args.budget << 20
    how: Callable[[Shape, int], dict[str, float]] = in_child if args.rss else measure
    what = f"RSS on {running()}" if args.rss else "tracemalloc"
    print(f"budget {budget:,} B; {what} after filling and churning through as many entries again\n")
    print("| entry shape | entries | real B/entry | charged B/entry | real - charged | real / budget |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        m = how(shape, budget)
        n = m["n"]
        print(
            f"| {shape.name} | {n:,.0f} | {m['real'] / n:,.0f} | {m['charged'] / n:,.0f}"
            f" | {(m['real'] - m['charged']) / n:+,.0f} | {m['real'] / budget:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
