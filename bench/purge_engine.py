"""Micro-benchmark of the pure invalidation engine (``edgecache.purge``).

Run: ``.venv/bin/python bench/purge_engine.py`` (under a minute; ``--quick`` skips the 1M-row fill).
Prints markdown tables:

1. ``EpochIndex.apply`` cost per selector type (one selector per purge, each naming a new scope, so
   every apply adds a row), starting from an index already holding 0, 100k and 1M rows. The target:
   purge cost independent of the index (and cache) size.
2. ``EpochIndex.check`` cost for an entry with 3 tags and path depth 4: (a) nothing newer than the
   entry (the common hit), (b) 100k outstanding rules newer than the entry, none matching it (tags,
   URLs, hosts, and prefixes under other paths of the entry's host), (b') the same with the prefixes
   crowding the entry's own path (the trie walk's worst case), (c) with a matching soft rule, (d) with
   a matching hard rule. The target: a hit with
   100k outstanding rules keeps >= 0.95x the throughput of one without; the table shows the check's
   share of a hit path of ``--hit-us`` microseconds (default 31: edgecache's hot 1 KiB hit in
   bench/out/results.md).

Times are the best of 5 runs of a tight loop, loop overhead included, in ns per operation.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable

from edgecache.purge import EpochIndex, Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url

ZONE = "zone"
ENTRY_KEY = "https://www.example.com/shop/shoes/red/item-42.html?size=9\x00dt=mobile"
ENTRY_TAGS = ("product-42", "category-shoes", "brand-acme")


def best_ns(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` ns per call of ``fn`` over ``n`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def filler_selector(i: int, crowded: bool) -> Selector:
    """The i-th non-matching selector: a mix weighted toward what real purges name (tags, URLs).

    ``crowded``: the prefixes are siblings along the entry's own path, at every depth, many sharing
    the first characters of its segments, so every trie node on the entry's walk carries thousands of
    partials (the worst case). Otherwise they sit under other top-level paths of the same host.
    """
    kind = i % 10
    if kind < 4:
        return Tag(f"tag-{i}")
    if kind < 7:
        return Url(f"https://www.example.com/shop/shoes/red/other-{i}.html")
    if kind < 9:
        if not crowded:
            return Prefix(f"www.example.com/blog/{i % 100}/post-{i}")
        depth = i % 4
        if depth == 0:
            return Prefix(f"www.example.com/shop/shoes/red/item-{i}")
        base = ("www.example.com/shop/s", "www.example.com/shop/shoes/r", "www.example.com/shop/shoes/red/i")
        return Prefix(f"{base[depth - 1]}x{i}")
    return Host(f"host-{i}.example.com")


class Filler:
    """Applies batches of non-matching purges, numbering them from the index position."""

    def __init__(self, index: EpochIndex, crowded: bool = True) -> None:
        self.index = index
        self.crowded = crowded
        self.next_name = 0

    def fill(self, rows: int, mode: Mode = Mode.INVALIDATE, batch: int = 1000) -> None:
        while rows > 0:
            k = min(batch, rows)
            sels = tuple(filler_selector(self.next_name + j, self.crowded) for j in range(k))
            self.next_name += k
            self.index.apply(Purge(self.index.position + 1, ZONE, mode, sels, 0.0))
            rows -= k


def new_selectors(kind: str, n: int) -> list[Selector]:
    """``n`` distinct selectors of one kind, none seen before (each apply creates a row)."""
    if kind == "url":
        return [Url(f"https://api.example.org/v1/items/{i}?page=2") for i in range(n)]
    if kind == "tag":
        return [Tag(f"new-tag-{i}") for i in range(n)]
    if kind == "host":
        return [Host(f"h{i}.example.org") for i in range(n)]
    if kind == "prefix (depth 4)":
        return [Prefix(f"cdn.example.org/a{i % 97}/b{i % 89}/c/d{i}") for i in range(n)]
    return [Everything() for _ in range(n)]


KINDS = ("url", "tag", "host", "prefix (depth 4)", "everything")


def bench_apply(fills: list[int], n: int) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for fill in fills:
        index = EpochIndex()
        Filler(index).fill(fill)
        gc.collect()
        for kind in KINDS:
            sels = new_selectors(kind, n)
            start = index.position + 1
            purges = [Purge(start + i, ZONE, Mode.DELETE, (s,), 0.0) for i, s in enumerate(sels)]
            apply = index.apply
            best = float("inf")
            chunk = n // 5
            for c in range(0, n, chunk):  # best of 5 chunks, like the checks
                t0 = time.perf_counter_ns()
                for p in purges[c : c + chunk]:
                    apply(p)
                best = min(best, (time.perf_counter_ns() - t0) / chunk)
            out[(kind, fill)] = best
        print(f"  apply, fill {fill:>9,}: rows now {index.rows:,}", file=sys.stderr)
        del index
        gc.collect()
    return out


def bench_check(outstanding: int, n: int) -> list[tuple[str, float]]:
    key, tags = ENTRY_KEY, ENTRY_TAGS
    rows: list[tuple[str, float]] = []
    spread = EpochIndex()
    check = spread.check
    rows.append(("empty index", best_ns(lambda: check(ZONE, key, tags, 0), n)))
    Filler(spread, crowded=False).fill(outstanding)
    assert check(ZONE, key, tags, 0) is None and spread.rows == outstanding
    pos = spread.position
    rows.append(
        (
            f"(a) nothing newer than the entry, {outstanding:,} rows",
            best_ns(lambda: check(ZONE, key, tags, pos), n),
        )
    )
    rows.append(
        (f"(b) {outstanding:,} newer rules, none matching", best_ns(lambda: check(ZONE, key, tags, 0), n))
    )
    del spread, check
    index = EpochIndex()
    check = index.check
    Filler(index, crowded=True).fill(outstanding)
    assert check(ZONE, key, tags, 0) is None and index.rows == outstanding
    rows.append(
        (
            f"(b') {outstanding:,} newer rules, none matching, prefixes crowding the entry's path",
            best_ns(lambda: check(ZONE, key, tags, 0), n),
        )
    )
    index.apply(Purge(index.position + 1, ZONE, Mode.INVALIDATE, (Tag("brand-acme"),), 1.0))
    assert check(ZONE, key, tags, 0) is not None
    rows.append(("(c) (b') plus a matching soft tag rule", best_ns(lambda: check(ZONE, key, tags, 0), n)))
    index.apply(Purge(index.position + 1, ZONE, Mode.DELETE, (Prefix("www.example.com/shop/sh"),), 2.0))
    verdict = check(ZONE, key, tags, 0)
    assert verdict is not None and verdict.hard
    rows.append(("(d) (c) plus a matching hard prefix rule", best_ns(lambda: check(ZONE, key, tags, 0), n)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 1M-row fill")
    ap.add_argument("--hit-us", type=float, default=31.0, help="cost of a cache hit without purges, in µs")
    args = ap.parse_args()
    t0 = time.monotonic()
    fills = [0, 100_000] if args.quick else [0, 100_000, 1_000_000]
    applied = bench_apply(fills, 20_000)
    checked = bench_check(100_000, 200_000)

    print(f"# edgecache purge engine micro-benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"Python {platform.python_version()}, {platform.platform()}; ns/op, best of 5 runs.\n")
    print("### apply (one selector per purge, each a new row)\n")
    print("| selector | " + " | ".join(f"{f:,} rows before" for f in fills) + " |")
    print("|---|" + "---:|" * len(fills))
    for kind in KINDS:
        print(f"| {kind} | " + " | ".join(f"{applied[(kind, f)]:,.0f}" for f in fills) + " |")
    print("\n### check (entry with 3 tags, path depth 4, a variant part)\n")
    print(f"| case | ns/op | share of a {args.hit_us:g} µs hit | hit throughput vs no check |")
    print("|---|---:|---:|---:|")
    for name, ns in checked:
        share = ns / (args.hit_us * 1000)
        print(f"| {name} | {ns:,.0f} | {share:.1%} | {1 / (1 + share):.3f}x |")
    print(
        "\nAfter a None verdict the caller may record the entry as checked up to `index.position`;"
        " its later checks are then case (a) until the next purge."
    )
    print(
        f"\ntook {time.monotonic() - t0:.0f} s;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end"
    )


if __name__ == "__main__":
    main()
