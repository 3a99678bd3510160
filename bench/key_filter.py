"""The disk tier's key filter (``store/keyfilter.py``): its build at a node's start, its false
"maybe" rate, and the cost of its calls.

Method: a disk store in a temporary directory is filled with ``--records`` records of ``--body``
bytes through ``DiskStore.put`` (the writer thread), then closed and opened again, as a restarted
node opens it; a filter sized as a node sizes it (``expected_keys`` of ``--budget`` plus
``--reserve-budget``, the budgets of the zones' reserves on at the start: none by default) is built
from it by ``DiskStore.use_filter(build=True)``, and the build's wall time and this process's CPU
time while it runs are printed (the process does nothing else meanwhile). Then ``--probes`` keys
never stored are asked (the share answered "maybe" is the false-maybe rate), and ``may_hold`` /
``add`` are timed per call (best of five rounds of ``timeit``). Last, what the filter saves: the
thread CPU of a memory miss's disk part for a never-stored key (``DiskStore.lookup`` then ``get``
with what it found, as ``TierChain`` calls them, reads sharing a transaction per 50 keys as the
event loop's turns do), on the same store before the filter is given to it and after it is built
(best of five rounds of ``--misses`` keys each).

``--churn PUTS`` measures instead what a long-running node's churning disk does to the filter: a
store of ``--churn-budget`` bytes (which evicts its oldest records once full) takes ``PUTS`` new
records through ``DiskStore.put``, twice: once as a node keeps its filter (rebuilt when deletes
have left it too full, decision 0020's addendum "rebuild"), once never rebuilt (as before that
addendum). After every tenth of the puts: the records on disk, the share of the active half's
slots set, the false "maybe" rate over ``--churn-probes`` never-stored keys, and the rebuilds so
far.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from edgecache.store import disk as disk_module
from edgecache.store.disk import DiskStore
from edgecache.store.disk_layout import key_bytes
from edgecache.store.entry import Entry
from edgecache.store.keyfilter import KeyFilter, expected_keys

STEP = 10_000
TURN = 50


def entry(key: str, body: bytes) -> Entry:
    return Entry(
        zone="z",
        key=key,
        status=200,
        head=b"Content-Type: application/octet-stream\r\nCache-Control: max-age=600\r\n",
        body=body,
        tags=(),
        stored_seq=0,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


def fill(path: Path, records: int, body: bytes, budget: int) -> None:
    store = DiskStore(path, budget=budget, position=0, zones=["z"], map_size=4 * budget)
    try:
        for start in range(0, records, STEP):
            for i in range(start, min(records, start + STEP)):
                store.put(entry(f"http://bench.example/obj/{i:08d}", body))
            store.flush()
    finally:
        store.close()


def memory_miss(store: DiskStore, name: str, misses: int) -> float:
    """Best thread CPU µs per never-stored key of the disk part of a memory miss."""
    turn: list[Callable[[], None]] = []
    store.read_in_turns(turn.append)
    best = float("inf")
    for r in range(5):
        began = time.thread_time()
        for i in range(misses):
            key = f"http://bench.example/{name}/{r}/{i:08d}"
            looked_up = store.lookup(key)[1]
            store.get(key, looked_up=looked_up)
            if i % TURN == TURN - 1:
                for end in turn:
                    end()
                turn.clear()
        best = min(best, (time.thread_time() - began) / misses * 1e6)
    for end in turn:
        end()
    return best


def per_call(fn: object, number: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9  # type: ignore[arg-type]


class _Rebuilds(logging.Handler):
    """Counts the store's ``disk_key_filter_rebuilt`` records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += getattr(record, "event", None) == "disk_key_filter_rebuilt"


def churn(
    puts: int, budget: int, body: bytes, probes: int, rebuild: bool
) -> list[tuple[int, int, float, float, int]]:
    """(puts so far, records on disk, share of slots set, false "maybe" rate, rebuilds) after each
    tenth of ``puts`` new records into a full-budget store."""
    tmp = Path(tempfile.mkdtemp(prefix="keyfilter-churn-"))
    checks = disk_module.FILTER_CHECK_EVERY
    if not rebuild:
        disk_module.FILTER_CHECK_EVERY = 1e9
    counter = _Rebuilds()
    logger = logging.getLogger("edgecache.store.disk")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    store = DiskStore(tmp, budget=budget, position=0, zones=["z"], map_size=4 * budget)
    keys = KeyFilter.create(expected_keys(budget, 0))
    rows = []
    try:
        store.use_filter(keys, build=True)
        while not keys.ready:
            time.sleep(0.001)
        tenth = max(1, puts // 10)
        for start in range(0, puts, STEP):
            for i in range(start, min(puts, start + STEP)):
                store.put(entry(f"http://bench.example/churn/{i:09d}", body))
            store.flush()
            done = min(puts, start + STEP)
            if done % tenth < STEP or done == puts:
                never = (key_bytes(f"http://bench.example/never/{done}/{i}") for i in range(probes))
                maybe = sum(keys.may_hold(kb) for kb in never) / probes
                rows.append((done, store.usage()[1], keys.fill(), maybe, counter.count))
    finally:
        store.close()
        keys.close()
        logger.removeHandler(counter)
        disk_module.FILTER_CHECK_EVERY = checks
        shutil.rmtree(tmp)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--body", type=int, default=1024, help="bytes per record's body")
    parser.add_argument("--budget", type=int, default=2 << 30, help="the disk budget the filter is sized for")
    parser.add_argument(
        "--reserve-budget",
        type=int,
        default=0,
        help="the budgets of the reserves on at the start, summed (a node adds them to the disk budget)",
    )
    parser.add_argument("--probes", type=int, default=1_000_000)
    parser.add_argument("--misses", type=int, default=100_000, help="never-stored keys per round")
    parser.add_argument("--churn", type=int, default=0, help="measure a churning disk with this many puts")
    parser.add_argument("--churn-budget", type=int, default=128 << 20)
    parser.add_argument("--churn-probes", type=int, default=100_000)
    args = parser.parse_args()
    if args.churn:
        body = b"b" * args.body
        kept = churn(args.churn, args.churn_budget, body, args.churn_probes, rebuild=True)
        never = churn(args.churn, args.churn_budget, body, args.churn_probes, rebuild=False)
        print(
            f"\n{args.churn:,} puts of {args.body} B bodies into a {args.churn_budget >> 20} MiB disk "
            f"(filter checked every {disk_module.FILTER_CHECK_EVERY:g} s)\n"
        )
        print(
            "| puts | records on disk | slots set, kept / never rebuilt "
            '| false "maybe", kept / never | rebuilds |'
        )
        print("|---:|---:|---|---|---:|")
        for (done, records, filled, maybe, rebuilds), (_, _, filled0, maybe0, _) in zip(
            kept, never, strict=True
        ):
            print(
                f"| {done:,} | {records:,} | {100 * filled:.1f}% / {100 * filled0:.1f}% "
                f"| {100 * maybe:.2f}% / {100 * maybe0:.2f}% | {rebuilds} |"
            )
        return
    tmp = Path(tempfile.mkdtemp(prefix="keyfilter-bench-"))
    try:
        began = time.monotonic()
        fill(tmp, args.records, b"b" * args.body, args.budget)
        print(f"stored {args.records} records of {args.body} B in {time.monotonic() - began:.1f} s")
        store = DiskStore(tmp, budget=args.budget, position=0, zones=["z"], map_size=4 * args.budget)
        keys = KeyFilter.create(expected_keys(args.budget + args.reserve_budget, store.usage()[1]))
        try:
            unfiltered = memory_miss(store, "before", args.misses)
            wall, cpu = time.monotonic(), time.process_time()
            store.use_filter(keys, build=True)
            while not keys.ready:
                time.sleep(0.001)
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            new = (key_bytes(f"http://bench.example/new/{i:08d}") for i in range(args.probes))
            maybe = sum(keys.may_hold(kb) for kb in new)
            stored = (key_bytes(f"http://bench.example/obj/{i:08d}") for i in range(args.records))
            assert all(keys.may_hold(kb) for kb in stored)
            absent = key_bytes("http://bench.example/new/x")
            present = key_bytes("http://bench.example/obj/00000001")
            rows = [
                ("records on disk", f"{args.records:,}"),
                (
                    "filter slots (bytes of shared memory)",
                    f"{keys.slots:,} ({keys.slots / args.records:.1f}/record)",
                ),
                ("build, wall (noisy)", f"{wall:.2f} s"),
                ("build, CPU of the process", f"{cpu:.2f} s"),
                (
                    f'false "maybe" over {args.probes:,} never-stored keys',
                    f"{100 * maybe / args.probes:.2f}%",
                ),
                ("`may_hold`, a never-stored key", f"{per_call(lambda: keys.may_hold(absent)):.0f} ns"),
                ("`may_hold`, a stored key", f"{per_call(lambda: keys.may_hold(present)):.0f} ns"),
                (
                    "`key_bytes` of a 26-byte key",
                    f"{per_call(lambda: key_bytes('http://bench.example/new/x')):.0f} ns",
                ),
                ("`add`", f"{per_call(lambda: keys.add(present)):.0f} ns"),
                (
                    "`fill`, the keeper's look at the filter (once a second)",
                    f"{per_call(keys.fill, number=200) / 1000:.0f} µs",
                ),
                ("a memory miss's disk part, never-stored key, no filter", f"{unfiltered:.2f} µs"),
                ("the same, filter built", f"{memory_miss(store, 'after', args.misses):.2f} µs"),
            ]
            print("\n| figure | value |\n|---|---:|")
            for name, value in rows:
                print(f"| {name} | {value} |")
        finally:
            store.close()
            keys.close()
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
