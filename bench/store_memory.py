"""What the purge indexes of the memory tier cost (docs/decisions/0002-memory-tier-eviction.md).

Run: ``.venv/bin/python bench/store_memory.py`` (about a minute on a quiet box; ``--quick``: 100k
entries only). Each size is measured in a fresh child process, so that its RSS is its own.

The cache holds n entries, put in random key order, each with a 1 KiB body, a ~100-byte header
block and an ETag of its own, and two tags parsed from a Cache-Tag field (``tagNN`` out of 99, and
``site`` on every entry: 100 tags in all). Keys are ``http://bench.test/obj/NNNNNN`` in zone
``bench``, except the highest 1% of the numbers: zone ``small``, over ten hosts ``sN.small.test``.
A further n/10 entries (at most 50k), drawn from the same numbers, are kept out for the misses.
Printed, as a markdown table:

- RSS B/entry: process RSS growth while building the cache (entries and tier), divided by n, minus
  the 1024 body bytes: everything a cached 1 KiB object costs beyond its body, in all.
- index B/entry: every byte the tier allocates for its bookkeeping (entry dict, SIEVE ring, key,
  tag and zone indexes; not the entries), measured with tracemalloc while the same entries are put
  into an empty tier; then the key, tag and zone indexes alone (``sys.getsizeof`` of their parts).
- put: ns a ``put`` while filling; put+evict: ns a ``put`` of a kept-out entry into the full cache
  (each evicts one), after the gets below have marked most entries visited.
- get: ns a ``get`` of a stored key, 200k of them in random order (the hit path).
- prefix, tag, zone: ms for ``keys_with_prefix("http://bench.test/obj/001")`` (``/01`` at 1M),
  ``keys_for_tag("bench", "tag07")`` and ``keys_for_zone("small")``, each about 1% of the cache (the
  counts are printed below the table), best of five.

Timings are process time with the collector off, best of three passes (of one for the 1M fill).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from edgecache.httpcache.tags import parse_tags
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

SIZES = (100_000, 1_000_000)
SMALL_ZONE_SHARE = 100
"""The highest 1/this of the entry numbers are in the small zone."""


def make_entry(i: int, total: int) -> Entry:
    """Entry number ``i`` of ``total``."""
    if i >= total - total // SMALL_ZONE_SHARE:
        zone, host = "small", f"s{i % 10}.small.test"
    else:
        zone, host = "bench", "bench.test"
    etag = f'"obj-{i:06d}"'
    head = f"content-type: text/html; charset=utf-8\r\ncache-control: public, max-age=300\r\netag: {etag}\r\n"
    return Entry(
        zone=zone,
        key=f"http://{host}/obj/{i:06d}",
        status=200,
        head=head.encode(),
        body=bytes(1024),
        tags=parse_tags([("cache-tag", f"tag{i % 99:02d}, site")]),
        stored_seq=0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=300.0,
    )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def best(passes: int, run: Callable[[], object]) -> float:
    """Least process time of ``passes`` runs of ``run``, with the collector off."""
    times = []
    gc.disable()
    try:
        for _ in range(passes):
            t = time.process_time()
            run()
            times.append(time.process_time() - t)
    finally:
        gc.enable()
    return min(times)


def fill(tier: MemoryTier, entries: Iterable[Entry]) -> None:
    for e in entries:
        tier.put(e)


def timed_fill(budget: int, entries: list[Entry], passes: int) -> tuple[MemoryTier, float]:
    """A tier filled with ``entries``, and the least ns a put over ``passes`` fills of a new tier."""
    least = float("inf")
    for _ in range(passes):
        tier = MemoryTier(budget)
        least = min(least, best(1, partial(fill, tier, entries)))
    return tier, least * 1e9 / len(entries)


def get_all(tier: MemoryTier, keys: list[str]) -> None:
    for k in keys:
        tier.get(k)


def index_bytes(tier: MemoryTier) -> tuple[int, int, int]:
    """Bytes of the key, tag and zone indexes (containers and the strings only they hold)."""
    # The tier types its SortedList by the methods it calls; its sublists are what holds the keys.
    keys: Any = tier._keys
    key_bytes = sys.getsizeof(keys._lists) + sys.getsizeof(keys._maxes)
    key_bytes += sum(sys.getsizeof(sub) for sub in keys._lists)
    tag_bytes = sys.getsizeof(tier._tags)
    for by_tag in tier._tags.values():
        tag_bytes += sys.getsizeof(by_tag)
        tag_bytes += sum(sys.getsizeof(ks) for ks in by_tag.values() if isinstance(ks, set))
    zone_bytes = sys.getsizeof(tier._zones)
    for by_range in tier._zones.values():
        zone_bytes += sys.getsizeof(by_range) + sum(sys.getsizeof(r) for r in by_range)
    zone_bytes += sys.getsizeof(tier._zones_of_range)
    return key_bytes, tag_bytes, zone_bytes


def measure(n: int) -> dict[str, Any]:
    """Everything for one cache size (run in a fresh process)."""
    big = 1 << 60
    # Keys arrive in no particular order; the entries left out make the misses of put+evict.
    rng = random.Random(1)
    total = n + min(n // 10, 50_000)
    order = list(range(total))
    rng.shuffle(order)
    gc.collect()
    before = rss()
    tier = MemoryTier(big)
    for i in order[:n]:
        tier.put(make_entry(i, total))
    out: dict[str, Any] = {"n": n, "rss": (rss() - before) / n - 1024}

    entries = list(tier)
    del tier
    gc.collect()
    tracemalloc.start()
    tier = MemoryTier(big)
    fill(tier, entries)
    out["index"] = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    out["keys"], out["tags"], out["zones"] = (b / n for b in index_bytes(tier))
    out["zone_set"] = sys.getsizeof(set(tier.keys_for_zone("bench"))) / n
    out["zone_big"] = best(3, lambda: tier.keys_for_zone("bench")) * 1e3

    del tier
    # Budgeted to hold exactly these entries, so that each further put evicts.
    tier, out["put"] = timed_fill(sum(e.size for e in entries), entries, 3 if n <= 100_000 else 1)
    probe = [e.key for e in rng.sample(entries, min(n, 200_000))]
    out["get"] = best(3, lambda: get_all(tier, probe)) * 1e9 / len(probe)

    prefix = "http://bench.test/obj/" + ("001" if n < 1_000_000 else "01")
    queries: dict[str, Callable[[], list[str]]] = {
        "prefix": lambda: tier.keys_with_prefix(prefix),
        "tag": lambda: tier.keys_for_tag("bench", "tag07"),
        "zone": lambda: tier.keys_for_zone("small"),
    }
    for name, query in queries.items():
        out[name] = best(5, query) * 1e3
        out[name + "_n"] = len(query())

    extra = [make_entry(i, total) for i in order[n:]]
    out["evict"] = best(1, lambda: fill(tier, extra)) * 1e9 / len(extra)
    assert tier.evictions >= len(extra)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k entries only")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    started = time.perf_counter()
    rows = []
    for n in SIZES[:1] if args.quick else SIZES:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(child.stdout))
    print(
        "| entries | RSS B/entry | index B/entry | key idx | tag idx | zone idx | put ns | put+evict ns "
        "| get ns | prefix ms | tag ms | zone ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['rss']:.0f} | {r['index']:.1f} | {r['keys']:.1f} | {r['tags']:.1f} "
            f"| {r['zones']:.2f} | {r['put']:.0f} | {r['evict']:.0f} | {r['get']:.0f} "
            f"| {r['prefix']:.2f} | {r['tag']:.2f} | {r['zone']:.2f} |"
        )
    print()
    for r in rows:
        print(
            f"- {r['n']:,}: the queries returned {r['prefix_n']:,}, {r['tag_n']:,} and {r['zone_n']:,} keys; "
            f"keys_for_zone of the 99% zone took {r['zone_big']:.0f} ms; a per-zone key set instead of "
            f"the zone index would add {r['zone_set']:.1f} B/entry."
        )
    print(f"\n{time.perf_counter() - started:.0f} s (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
