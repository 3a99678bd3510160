"""Eviction policies for the memory tier, compared on CDN-like traces (docs/decisions/0002).

Run: ``.venv/bin/python bench/eviction_sim.py`` (about a minute of CPU, two of wall time on a busy
box; ``--quick``: 100k objects, seconds). Prints:

1. Hit ratio of LRU, CLOCK (FIFO-reinsertion), SIEVE and S3-FIFO on Zipf(0.8, 1.0, 1.2) traces over
   1M objects and on a Zipf(1.0) trace where a quarter of the requests are one-hit wonders and a scan
   of unique URLs (twice the larger cache) comes through; caches of 1% and 10% of the objects. All
   objects are the same size, so the capacity is a count. The first quarter of a trace warms the
   cache and is not counted.
2. A check that ``edgecache.store.memory.MemoryTier`` makes the same decisions as the SIEVE model.
3. Python cost of a hit and of a miss (get, then put with one eviction), in a cache of 100k entries,
   through the same method-call interface as the tier; and the bytes of bookkeeping per cached entry
   (everything the policy allocates: index dict, queues, ghost, links; not the entries themselves),
   measured with tracemalloc after a fill and a churn of as many inserts again.
4. What a typical 1 KiB response costs in the tier beyond its body.

The hit-ratio models work on int keys to keep the run short; the cost models work on real entries
with str keys, as the tier does.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import time
import tracemalloc
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

# --- traces -----------------------------------------------------------------------------------------


def zipf_trace(rng: random.Random, objects: int, alpha: float, length: int) -> list[int]:
    cum = list(itertools.accumulate(1.0 / i**alpha for i in range(1, objects + 1)))
    return rng.choices(range(objects), cum_weights=cum, k=length)


def one_hit_wonder_trace(rng: random.Random, objects: int, length: int, scan: int) -> list[int]:
    """Zipf(1.0) with a quarter of the requests for URLs asked once, and a scan in the measured part."""
    base = zipf_trace(rng, objects, 1.0, length - scan)
    fresh = itertools.count(objects)
    trace = [next(fresh) if rng.random() < 0.25 else k for k in base]
    at = len(trace) // 2
    return trace[:at] + [next(fresh) for _ in range(scan)] + trace[at:]


# --- hit-ratio models (int keys, unit sizes) --------------------------------------------------------


class Model(Protocol):
    def run(self, keys: Sequence[int]) -> int: ...


class LruModel:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.od: OrderedDict[int, None] = OrderedDict()

    def run(self, keys: Sequence[int]) -> int:
        od, cap, hits = self.od, self.cap, 0
        move, pop = od.move_to_end, od.popitem
        for k in keys:
            if k in od:
                move(k)
                hits += 1
            else:
                od[k] = None
                if len(od) > cap:
                    pop(last=False)
        return hits


class ClockModel:
    """FIFO-reinsertion: a visited entry at the tail goes back to the head with its bit cleared."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.bits: dict[int, bool] = {}
        self.queue: deque[int] = deque()

    def run(self, keys: Sequence[int]) -> int:
        bits, queue, cap, hits = self.bits, self.queue, self.cap, 0
        for k in keys:
            if k in bits:
                bits[k] = True
                hits += 1
                continue
            if len(bits) >= cap:
                while True:
                    v = queue.popleft()
                    if bits[v]:
                        bits[v] = False
                        queue.append(v)
                    else:
                        del bits[v]
                        break
            bits[k] = False
            queue.append(k)
        return hits


class SieveModel:
    """SIEVE: survivors stay in place; the hand walks from the oldest to the newest, then wraps."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.bits: dict[int, bool] = {}
        self.ring: list[int | None] = []
        self.hand = 0

    def run(self, keys: Sequence[int]) -> int:
        bits, ring, cap, hand, hits = self.bits, self.ring, self.cap, self.hand, 0
        for k in keys:
            if k in bits:
                bits[k] = True
                hits += 1
                continue
            if len(bits) >= cap:
                while True:
                    if hand >= len(ring):
                        ring[:] = [v for v in ring if v is not None]
                        hand = 0
                    v = ring[hand]
                    hand += 1
                    if v is None:
                        continue
                    if bits[v]:
                        bits[v] = False
                    else:
                        del bits[v]
                        ring[hand - 1] = None
                        break
            bits[k] = False
            ring.append(k)
        self.hand = hand
        return hits


class S3FifoModel:
    """S3-FIFO (SOSP '23): 10% small FIFO, 90% main FIFO with a 2-bit counter, ghost of main's size.

    A miss found in the ghost goes to main, others to small; small's tail moves to main if it was
    hit, else it is evicted into the ghost; main's tail is reinserted with its counter decremented
    while the counter is positive."""

    def __init__(self, cap: int) -> None:
        self.small_cap = max(1, cap // 10)
        self.main_cap = cap - self.small_cap
        self.cap = cap
        self.freq: dict[int, int] = {}
        self.small: deque[int] = deque()
        self.main: deque[int] = deque()
        self.ghost: OrderedDict[int, None] = OrderedDict()

    def _evict_main(self) -> None:
        freq, main = self.freq, self.main
        while True:
            v = main.popleft()
            f = freq[v]
            if f:
                freq[v] = f - 1
                main.append(v)
            else:
                del freq[v]
                return

    def _evict(self) -> None:
        freq, small, main = self.freq, self.small, self.main
        if len(small) >= self.small_cap or not main:
            while small:
                v = small.popleft()
                if freq[v]:
                    freq[v] = 0
                    main.append(v)
                    if len(main) > self.main_cap:
                        self._evict_main()
                        return
                else:
                    del freq[v]
                    self.ghost[v] = None
                    if len(self.ghost) > self.main_cap:
                        self.ghost.popitem(last=False)
                    return
        self._evict_main()

    def run(self, keys: Sequence[int]) -> int:
        freq, ghost, cap, hits = self.freq, self.ghost, self.cap, 0
        for k in keys:
            f = freq.get(k)
            if f is not None:
                if f < 3:
                    freq[k] = f + 1
                hits += 1
                continue
            if len(freq) >= cap:
                self._evict()
            freq[k] = 0
            if k in ghost:
                del ghost[k]
                self.main.append(k)
            else:
                self.small.append(k)
        return hits


class TierModel:
    """``MemoryTier`` itself, fed entries of one size so that its byte budget is a count."""

    def __init__(self, cap: int) -> None:
        self.tier = MemoryTier(cap * make_entry(0).size)

    def run(self, keys: Sequence[int]) -> int:
        get, put, hits = self.tier.get, self.tier.put, 0
        for k in keys:
            if get(f"http://h/{k:09d}") is None:
                put(make_entry(k))
            else:
                hits += 1
        return hits


def make_entry(k: int) -> Entry:
    return Entry("z", f"http://h/{k:09d}", 200, b"", b"", (), 0, 0.0, 0.0, 0.0, 60.0)


MODELS: dict[str, Callable[[int], Model]] = {
    "LRU": LruModel,
    "CLOCK": ClockModel,
    "SIEVE": SieveModel,
    "S3-FIFO": S3FifoModel,
}


def hit_ratio(model: Model, trace: Sequence[int]) -> float:
    warm = len(trace) // 4
    model.run(trace[:warm])
    return model.run(trace[warm:]) / (len(trace) - warm)


# --- cost models (str keys, real entries, the tier's method interface) ------------------------------


@dataclass(slots=True, eq=False)
class FreqEntry(Entry):
    """S3-FIFO needs a 2-bit counter where SIEVE and CLOCK need ``visited``: modelled as a field."""

    freq: int = 0


class CostCache(Protocol):
    def get(self, key: str) -> Entry | None: ...
    def put(self, entry: FreqEntry) -> None: ...


class DictCache:
    """No policy and no bound: the floor every policy's cost is measured against."""

    def __init__(self, cap: int) -> None:
        self.d: dict[str, Entry] = {}

    def get(self, key: str) -> Entry | None:
        return self.d.get(key)

    def put(self, entry: FreqEntry) -> None:
        self.d[entry.key] = entry


class LruCache:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.d: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        entry = self.d.get(key)
        if entry is not None:
            self.d.move_to_end(key)
        return entry

    def put(self, entry: FreqEntry) -> None:
        self.d[entry.key] = entry
        if len(self.d) > self.cap:
            self.d.popitem(last=False)


class ClockCache:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.d: dict[str, Entry] = {}
        self.queue: deque[Entry] = deque()

    def get(self, key: str) -> Entry | None:
        entry = self.d.get(key)
        if entry is not None:
            entry.visited = True
        return entry

    def put(self, entry: FreqEntry) -> None:
        if len(self.d) >= self.cap:
            while True:
                victim = self.queue.popleft()
                if victim.visited:
                    victim.visited = False
                    self.queue.append(victim)
                else:
                    del self.d[victim.key]
                    break
        self.d[entry.key] = entry
        self.queue.append(entry)


class SieveLinkedCache:
    """SIEVE on a doubly linked list kept in two dicts (key -> newer key, key -> older key)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.d: dict[str, Entry] = {}
        self.newer: dict[str, str] = {}
        self.older: dict[str, str] = {}
        self.oldest: str | None = None
        self.newest: str | None = None
        self.hand: str | None = None

    def get(self, key: str) -> Entry | None:
        entry = self.d.get(key)
        if entry is not None:
            entry.visited = True
        return entry

    def _unlink(self, key: str) -> None:
        older, newer = self.older.pop(key, None), self.newer.pop(key, None)
        if older is None:
            self.oldest = newer
        elif newer is None:
            del self.newer[older]
        else:
            self.newer[older] = newer
        if newer is None:
            self.newest = older
        elif older is None:
            del self.older[newer]
        else:
            self.older[newer] = older

    def put(self, entry: FreqEntry) -> None:
        if len(self.d) >= self.cap:
            hand = self.hand or self.oldest
            while hand is not None:
                victim = self.d[hand]
                if not victim.visited:
                    break
                victim.visited = False
                hand = self.newer.get(hand) or self.oldest
            assert hand is not None
            self.hand = self.newer.get(hand)
            self._unlink(hand)
            del self.d[hand]
        key = entry.key
        self.d[key] = entry
        if self.newest is not None:
            self.newer[self.newest] = key
            self.older[key] = self.newest
        else:
            self.oldest = key
        self.newest = key


class S3FifoCache:
    def __init__(self, cap: int) -> None:
        self.small_cap = max(1, cap // 10)
        self.main_cap = cap - self.small_cap
        self.cap = cap
        self.d: dict[str, FreqEntry] = {}
        self.small: deque[FreqEntry] = deque()
        self.main: deque[FreqEntry] = deque()
        self.ghost: OrderedDict[int, None] = OrderedDict()
        """Hashes of keys, as the paper suggests, so that a ghost does not keep its key alive."""

    def get(self, key: str) -> Entry | None:
        entry = self.d.get(key)
        if entry is not None and entry.freq < 3:
            entry.freq += 1
        return entry

    def _evict_main(self) -> None:
        while True:
            v = self.main.popleft()
            if v.freq:
                v.freq -= 1
                self.main.append(v)
            else:
                del self.d[v.key]
                return

    def _evict(self) -> None:
        if len(self.small) >= self.small_cap or not self.main:
            while self.small:
                v = self.small.popleft()
                if v.freq:
                    v.freq = 0
                    self.main.append(v)
                    if len(self.main) > self.main_cap:
                        self._evict_main()
                        return
                else:
                    del self.d[v.key]
                    self.ghost[hash(v.key)] = None
                    if len(self.ghost) > self.main_cap:
                        self.ghost.popitem(last=False)
                    return
        self._evict_main()

    def put(self, entry: FreqEntry) -> None:
        if len(self.d) >= self.cap:
            self._evict()
        self.d[entry.key] = entry
        h = hash(entry.key)
        if h in self.ghost:
            del self.ghost[h]
            self.main.append(entry)
        else:
            self.small.append(entry)


VARY = "\x00gzip"
"""A variant part, as Vary: Accept-Encoding adds to most keys."""


def entries(prefix: str, n: int, variant: str = "") -> list[FreqEntry]:
    url = "http://www.example.com/{}/{:08d}.jpg" + variant
    return [
        FreqEntry("z", url.format(prefix, i), 200, b"", b"", (), 0, 0.0, 0.0, 0.0, 60.0) for i in range(n)
    ]


def tier_factory(variant: str) -> Callable[[int], CostCache]:
    size = entries("a", 1, variant)[0].size
    return lambda cap: MemoryTier(cap * size)


COST: dict[str, Callable[[int], CostCache]] = {
    "dict, no policy (floor)": DictCache,
    "LRU (OrderedDict)": LruCache,
    "CLOCK (deque)": ClockCache,
    "SIEVE (linked list in 2 dicts)": SieveLinkedCache,
    "SIEVE (edgecache MemoryTier)": tier_factory(""),
    "SIEVE (MemoryTier, Vary keys)": tier_factory(VARY),
    "S3-FIFO (deques, hash ghost)": S3FifoCache,
}


def time_cost(
    make: Callable[[int], CostCache], fill: list[FreqEntry], churn: list[FreqEntry]
) -> tuple[float, float]:
    """CPU ns per hit (every entry, in random order) and per miss (get, then put evicting from a cache
    whose every entry was hit once). Process time, not wall time: the box is shared."""
    cache = make(len(fill))
    for e in fill:
        cache.put(e)
    order = [e.key for e in fill]
    random.Random(0).shuffle(order)
    get, put = cache.get, cache.put
    gc.disable()
    try:
        t = time.process_time()
        for k in order:
            get(k)
        hit = time.process_time() - t
        t = time.process_time()
        for e in churn:
            if get(e.key) is None:
                put(e)
        miss = time.process_time() - t
    finally:
        gc.enable()
    return hit / len(order) * 1e9, miss / len(churn) * 1e9


def bookkeeping(make: Callable[[int], CostCache], fill: list[FreqEntry], churn: list[FreqEntry]) -> float:
    """Bytes the cache allocates per stored entry after a fill and a churn (entries made beforehand)."""
    gc.collect()
    tracemalloc.start()
    cache = make(len(fill))
    for e in itertools.chain(fill, churn):
        if cache.get(e.key) is None:
            cache.put(e)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / len(fill)


def whole_entry(n: int) -> float:
    """Bytes a typical 1 KiB response costs in the tier beyond its body: entry, key, head, validators
    and bookkeeping (the target for the whole node is under 1 KiB; Varnish is about 1.7 KB)."""
    gc.collect()
    tracemalloc.start()
    tier = MemoryTier(1 << 40)
    for i in range(n):
        etag, modified = f'"{i:x}-400"', f"Tue, 07 Apr 2020 12:{i % 60:02d}:15 GMT"
        head = (
            f"Content-Type: image/jpeg\r\nCache-Control: public, max-age=86400\r\nETag: {etag}\r\n"
            f"Last-Modified: {modified}\r\nAccept-Ranges: bytes\r\n"
        ).encode()
        key = f"https://www.example.com/static/img/{i:08d}.jpg{VARY}"
        tier.put(
            Entry(
                "z",
                key,
                200,
                head,
                bytes(1024),
                ("static",),
                i,
                1.0,
                1.0,
                0.0,
                86400.0,
            )
        )
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / n - 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k objects, 400k requests")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    objects, length = (100_000, 400_000) if args.quick else (1_000_000, 2_000_000)
    rng = random.Random(args.seed)
    sizes = {"1%": objects // 100, "10%": objects // 10}
    started = time.perf_counter()

    traces = {f"zipf {a}": zipf_trace(rng, objects, a, length) for a in (0.8, 1.0, 1.2)}
    traces["zipf 1.0 + 25% one-hit + scan"] = one_hit_wonder_trace(rng, objects, length, 2 * sizes["10%"])
    print(f"hit ratio, {objects:,} objects, {length:,} requests (first quarter warms up)")
    print(f"{'trace':32} {'cache':>5} " + " ".join(f"{name:>8}" for name in MODELS))
    for label, trace in traces.items():
        for size_label, cap in sizes.items():
            ratios = [hit_ratio(model(cap), trace) for model in MODELS.values()]
            print(f"{label:32} {size_label:>5} " + " ".join(f"{r:8.4f}" for r in ratios), flush=True)

    print("\nthe shipped tier against the SIEVE model (zipf 1.0):")
    for size_label, cap in sizes.items():
        tier, model = (
            hit_ratio(TierModel(cap), traces["zipf 1.0"]),
            hit_ratio(SieveModel(cap), traces["zipf 1.0"]),
        )
        print(f"  {size_label:>4}: MemoryTier {tier:.4f}, SieveModel {model:.4f}", flush=True)

    n = 20_000 if args.quick else 100_000
    data = {
        name: (
            entries("a", n, VARY if "Vary" in name else ""),
            entries("b", n, VARY if "Vary" in name else ""),
        )
        for name in COST
    }
    costs = {name: (float("inf"), float("inf")) for name in COST}
    for _ in range(5):
        for name, make in COST.items():
            hit, miss = time_cost(make, *data[name])
            costs[name] = (min(costs[name][0], hit), min(costs[name][1], miss))
    print(f"\ncost in a cache of {n:,} entries, best of 5 (Python {sys.version.split()[0]})")
    print(f"{'policy':32} {'ns/hit':>7} {'ns/miss':>8} {'B/entry':>8}")
    for name, make in COST.items():
        per_entry = bookkeeping(make, *data[name])
        print(f"{name:32} {costs[name][0]:7.0f} {costs[name][1]:8.0f} {per_entry:8.1f}", flush=True)
    print(f"\na 1 KiB response with a Vary key costs {whole_entry(n // 5):.0f} B beyond its body in the tier")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
