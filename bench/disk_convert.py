"""How long the conversion of a layout-2 disk store to layout 3 takes at open (decision 0033).

Method: a store of ``--records`` disk-cache records (``--body`` bytes each, one tag, in one zone)
is written row by row as layout 2's code writes it (record, ``s`` row at a ledger position, ``t``
row, ``k`` + key → tick, ``o`` + tick + key; the ticks a random permutation of the keys, as reads
reorder a store; the counters, clock, host row and ``layout`` 2 in ``meta``), with a copy of every
record in the zone's Cache Reserve for ``--reserve`` of them; its pages are then dropped from the
page cache (``posix_fadvise(DONTNEED)``, best effort) unless ``--hot``. Then ``DiskStore`` opens it,
which converts it in its open's write transaction: the figure is that open's wall-clock and
process CPU time, and the file's allocated size before and after. The records are not read by the
conversion (only index rows), so ``--body`` matters little.

Run: ``.venv/bin/python bench/disk_convert.py [--records 1000000] [--body 1024] [--dir /var/tmp]``
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import lmdb

from edgecache.store.disk import DiskStore
from edgecache.store.disk_layout import (
    ENTRY,
    EXPIRY,
    INT,
    SEQ,
    U64,
    V2_ORDER,
    V2_TICK,
    encode_entry,
    key_bytes,
    tag_row,
    with_reserve_expires,
)
from edgecache.store.entry import Entry

STEP = 50_000


def write_layout2(path: Path, records: int, body: int, reserve: float) -> None:
    """The layout-2 store described in the module's method."""
    rng = random.Random(7)
    ticks = list(range(1, records + 1))
    rng.shuffle(ticks)
    env = lmdb.open(str(path), map_size=1 << 40, max_dbs=8, writemap=True, sync=False)
    cache, res, meta = (env.open_db(n) for n in (b"c/z", b"r/z", b"meta"))
    env.open_db(b"chunks")
    used = kept_used = kept = 0
    keys = [f"http://bench.test/obj/{i:09d}" for i in range(records)]
    seqs = sorted(rng.randrange(records // 100 + 1) for _ in range(records))
    for start in range(0, records, STEP):
        part = range(start, min(start + STEP, records))
        with env.begin(write=True) as txn:
            rows: list[tuple[bytes, bytes]] = []
            reserve_rows: list[tuple[bytes, bytes]] = []
            for i in part:
                e = Entry(
                    "z",
                    keys[i],
                    200,
                    b"Content-Type: text/plain\r\n",
                    b"x" * body,
                    ("t",),
                    seqs[i],
                    0.0,
                    0.0,
                    3600.0,
                )
                record = encode_entry(e, 0.0)
                kb = key_bytes(keys[i])
                used += len(record)
                rows += [
                    (ENTRY + kb, record),
                    (SEQ + U64.pack(seqs[i]) + kb, b""),
                    (tag_row("t", kb), b""),
                    (V2_TICK + kb, U64.pack(ticks[i])),
                ]
                if rng.random() < reserve:
                    copy = with_reserve_expires(record, 4e9)
                    kept_used += len(copy)
                    kept += 1
                    reserve_rows += [
                        (ENTRY + kb, copy),
                        (SEQ + U64.pack(seqs[i]) + kb, b""),
                        (tag_row("t", kb), b""),
                        (EXPIRY + U64.pack(4_000_000_000_000) + kb, b""),
                    ]
            rows.sort()
            reserve_rows.sort()
            txn.cursor(db=cache).putmulti(rows)
            txn.cursor(db=res).putmulti(reserve_rows)
    order = sorted((ticks[i], key_bytes(keys[i])) for i in range(records))
    for start in range(0, records, STEP):
        with env.begin(write=True) as txn:
            txn.cursor(db=cache).putmulti(
                [(V2_ORDER + U64.pack(t) + kb, b"") for t, kb in order[start : start + STEP]], append=True
            )
    with env.begin(write=True) as txn:
        for name, value in (
            (b"layout", 2),
            (b"reclaimed_upto", 0),
            (b"clock", records),
            (b"used:c", used),
            (b"count:c", records),
            (b"used:c:z", used),
            (b"count:c:z", records),
            (b"used:r:z", kept_used),
            (b"count:r:z", kept),
        ):
            txn.put(name, INT.pack(value), db=meta)
        txn.put(b"host:bench.test", b"z", db=meta)
    env.sync(True)
    env.close()


def allocated(path: Path) -> int:
    """Bytes the store's file holds on disk (it is sparse: the map's size is its length)."""
    return (path / "data.mdb").stat().st_blocks * 512


def drop_pages(path: Path) -> None:
    """Ask the kernel to drop the store's pages from the page cache (best effort)."""
    for name in ("data.mdb",):
        fd = os.open(path / name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--body", type=int, default=1024)
    parser.add_argument("--reserve", type=float, default=0.25, help="fraction with a reserve copy")
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--hot", action="store_true", help="keep the pages in the page cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecache-convert-", dir=args.dir) as tmp:
        path = Path(tmp)
        began = time.monotonic()
        write_layout2(path, args.records, args.body, args.reserve)
        print(f"layout-2 store of {args.records:,} records written in {time.monotonic() - began:.1f} s")
        size = allocated(path)
        if not args.hot:
            drop_pages(path)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        began = time.monotonic()
        store = DiskStore(path, budget=1 << 40, position=0, map_size=1 << 40, zones=("z",), writer=False)
        wall = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
        assert len(store) == args.records + round(store.reserve_usage("z")[1])
        store.close()
        used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
        per = 1_000_000 / args.records
        print(
            f"open with conversion: {wall:.2f} s wall, {used:.2f} s CPU "
            f"({wall * per:.2f} s and {used * per:.2f} s per million records); "
            f"data.mdb {size / 2**20:,.0f} → {allocated(path) / 2**20:,.0f} MiB allocated"
        )


if __name__ == "__main__":
    main()
