"""The fill-writer child's cost per fill: ring records read and written as the child does it.

Method: a ``FillRing`` in a temporary directory gets ``--batch`` never-seen 1 KiB fills (the
entries of ``bench/disk_fill_writer.py``: a 200-byte head, one tag) appended by the loop's
appender; then this thread does what ``edge/fillwriter.py``'s ``run`` does with them: ``read``
the ring from the committed position, ``DiskStore.write_fills`` (one write transaction and one
commit, with its fsync), ``commit``. The store is opened as a fill writer opens it (``writer=False``)
with a node key filter (``--no-filter``: without), so the filter's slots are set per fill as in a
node. The figure is this thread's CPU time (user + system, and each) per fill over ``--batches`` batches
(the appends not counted), best of ``--rounds``.

For a figure that neighbours do not move, ``--instructions`` counts instructions (valgrind's
callgrind, ``bench/_callgrind.py``): a child run of ``--batches`` batches and one of a single batch,
each once as above and once appending alone (the batch then given up unread, as a fill writer's
supervisor skips records), so that the difference of the differences is the child's read, write
and commit of ``--batches`` minus one batches, divided by their fills. ``--src PATH`` counts
another checkout's ``src`` too (say main's), in the same run.

Run: ``.venv/bin/python bench/fill_child.py [--batch 200] [--batches 20] [--rounds 5]``, or
``.venv/bin/python bench/fill_child.py --instructions [--batches 11] [--src PATH ...]`` (needs valgrind).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

from _callgrind import instructions
from _entries import entry
from disk_fill_writer import HEAD

from edgecache.store.disk import DiskStore
from edgecache.store.fillring import Batch, FillRing
from edgecache.store.keyfilter import KeyFilter

REPO = Path(__file__).resolve().parent.parent


def child_pass(ring: FillRing, store: DiskStore) -> int:
    """What the fill writer does with what the ring holds: read, write, commit. Returns the fills."""
    batch = ring.read(ring.committed, 1 << 20, 1 << 40)
    store.write_fills(batch.records)
    ring.commit(batch, store.fill_counters())
    return len(batch.records)


def append_only(ring: FillRing, store: DiskStore) -> int:
    """The ring's records given up unread (committed as skipped): the appends' share of a child
    run, to subtract. Returns 0."""
    ring.commit(Batch([], ring.head), store.fill_counters())
    return 0


def count(src: Path, batch: int, batches: int, part: str, no_filter: bool) -> int:
    """Instructions of a child run (``part``: ``child`` or ``append``) on ``src``."""
    flags = ("--no-filter",) if no_filter else ()
    args = ("--batch", str(batch), "--batches", str(batches), "--rounds", "1", "--part", part, *flags)
    return instructions(__file__, src, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=200, help="fills per transaction")
    parser.add_argument("--batches", type=int, default=20, help="transactions per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-filter", action="store_true", help="no node key filter")
    parser.add_argument("--instructions", action="store_true", help="count instructions per fill")
    parser.add_argument("--src", type=Path, action="append", default=[], help="another src to count")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("child", "append"), default="child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        batches = max(args.batches, 2)
        fills = args.batch * (batches - 1)
        print(f"fill writer instructions per fill (callgrind), {fills:,} fills after the first batch\n")
        print("| src | instructions per fill |\n|---|---:|")
        for src in [REPO / "src", *args.src]:
            n = {
                (part, b): count(src, args.batch, b, part, args.no_filter)
                for part in ("child", "append")
                for b in (batches, 1)
            }
            child = n["child", batches] - n["child", 1] - (n["append", batches] - n["append", 1])
            print(f"| {src} | {child / fills:,.0f} |")
        return
    step = append_only if args.part == "append" else child_pass
    with tempfile.TemporaryDirectory(prefix="edgecache-fills-", dir="/var/tmp") as tmp:
        ring = FillRing.create(Path(tmp) / "bench.ring")
        store = DiskStore(Path(tmp) / "disk", budget=1 << 30, position=0, zones=("z",), writer=False)
        keys = None if args.no_filter else KeyFilter.create(1 << 19)
        if keys is not None:
            store.use_filter(keys, build=False)
        try:
            best = (float("inf"), 0.0)
            n = 0
            for _ in range(args.rounds):
                cpu = [0.0, 0.0]
                for _ in range(args.batches):
                    for _ in range(args.batch):
                        e = entry(f"http://127.0.0.1/obj/{n:08d}", head=HEAD, tags=("z",), length_known=True)
                        n += 1
                        if ring.append_entry(e, False) <= 0:
                            raise SystemExit("the ring is full: use a smaller --batch")
                    before = resource.getrusage(resource.RUSAGE_THREAD)
                    step(ring, store)
                    after = resource.getrusage(resource.RUSAGE_THREAD)
                    cpu[0] += after.ru_utime - before.ru_utime
                    cpu[1] += after.ru_stime - before.ru_stime
                fills = args.batch * args.batches
                if sum(cpu) / fills < sum(best):
                    best = (cpu[0] / fills, cpu[1] / fills)
        finally:
            store.close()
            ring.close(unlink=True)
            if keys is not None:
                keys.close()
    what = f"{args.batch} a batch, best of {args.rounds}"
    user, system = best[0] * 1e6, best[1] * 1e6
    print(f"fill writer CPU per fill: {user + system:.1f} µs (user {user:.1f}, sys {system:.1f}, {what})")


if __name__ == "__main__":
    main()
