"""The store's part of a miss, and the fill writer's parse of a ring record, in CPU instructions
counted by valgrind (callgrind): figures the load of a shared machine does not move.

Method: a child process builds ``--fills`` never-seen 1 KiB entries (``_entries.entry``), then runs
one step per entry: ``vary``, ``get`` and ``put`` as the proxy's miss does them, on a memory tier
alone (``memory``; ``memory-lookup``, its ``vary`` and ``get`` without the ``put``: ``memory`` minus
this is the put) or on a memory tier over a disk tier with a fill ring and a ready key filter, as
a node runs by default (``chain``); the disk tier's ``put`` alone (``disk-put``: the ring append and
its bookkeeping) and the ring's C append alone (``ring-append``, through ``FillRing.append_entry``
so that trees from before ``FillRing.appender`` count the same call: its Python frame is counted,
which the disk tier's ``put`` no longer pays, as it calls the appender itself); or the fill writer's
``fill_fields`` on one record (``fill-fields``). Nothing reads the ring (the appends fit in it), so
no fill writer's work is counted. Each step runs with ``--fills 0`` and ``--fills N``; the
difference over N is the instructions per fill, start-up excluded. ``build`` (the entries alone)
is the floor the other rows include.

Run: ``.venv/bin/python bench/miss_store_instructions.py [--fills N] [--src PATH ...]``
(``--src`` counts another checkout's ``src`` too, say main's; needs valgrind).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _callgrind import instructions
from _entries import entry

REPO = Path(__file__).resolve().parent.parent
STEPS = ("build", "memory", "memory-lookup", "chain", "disk-put", "ring-append", "fill-fields")


def child(step: str, fills: int) -> None:
    """Run ``step`` on ``fills`` new entries (see the module's method)."""
    from edgecache.store.chain import TierChain
    from edgecache.store.disk import DiskStore
    from edgecache.store.disk_layout import encode_entry, fill_fields
    from edgecache.store.fillring import FillRing
    from edgecache.store.keyfilter import KeyFilter
    from edgecache.store.memory import MemoryTier

    entries = [entry(f"http://127.0.0.1/obj/{i:08d}", tags=("z",), length_known=True) for i in range(fills)]
    if step == "build":
        return
    if step == "fill-fields":
        raw = encode_entry(entry("http://127.0.0.1/obj/0", tags=("z",), length_known=True), 0.0)
        for _ in entries:
            fill_fields(raw)
        return
    if step == "memory":
        memory = MemoryTier(1 << 30)
        for e in entries:
            memory.vary(e.key)
            memory.get(e.key)
            memory.put(e)
        return
    if step == "memory-lookup":
        memory = MemoryTier(1 << 30)
        for e in entries:
            memory.vary(e.key)
            memory.get(e.key)
        return
    with tempfile.TemporaryDirectory(prefix="edgecache-store-", dir="/var/tmp") as tmp:
        ring = FillRing.create(Path(tmp) / "bench.ring")
        disk = DiskStore(Path(tmp) / "disk", budget=1 << 30, position=0, zones=("z",))
        keys = KeyFilter.create(1 << 19)
        disk.use_filter(keys, build=False)
        keys.set_ready()
        disk.attach_fills(ring)
        try:
            if step == "chain":
                tiers = TierChain(
                    MemoryTier(1 << 30),
                    disk,
                    reserve_on=lambda zone: False,
                    reserve_eligible=lambda e: False,
                    still_valid=lambda e: True,
                )
                for e in entries:
                    tiers.vary(e.key)
                    tiers.get(e.key)
                    tiers.put(e)
            elif step == "disk-put":
                for e in entries:
                    disk.put(e)
            else:
                for e in entries:
                    ring.append_entry(e, False)
        finally:
            disk.attach_fills(None)
            disk.close()
            ring.close(unlink=True)
            keys.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=4_000, help="at most ~10k (the ring's room)")
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.step, args.fills)
        return
    trees = [REPO / "src", *args.src]
    print("| step | " + " | ".join(f"instructions per fill, `{t}`" for t in trees) + " |")
    print("|---|" + "---:|" * len(trees))
    for step in STEPS:
        row = []
        for src in trees:
            base = instructions(__file__, src, "--step", step, "--fills", "0")
            n = instructions(__file__, src, "--step", step, "--fills", str(args.fills))
            row.append(f"{(n - base) / args.fills:,.0f}")
        print(f"| {step} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
