"""A disk hit's renewal in CPU instructions (callgrind): the hit path's ``DiskStore.get`` on the
reading thread, and the writer thread's ``_renew`` of what the hits gathered.

Method: a child process stores ``8 * --hits`` 1 KiB entries (``_entries.entry``) in a disk store
(no memory tier), then reads the oldest ``--hits`` of them with ``get`` (each among the oldest
eighth of the order, so each renewal moves its record: the costly case) and flushes, which applies
the renewals in one write transaction. Run with ``--hits 0`` and ``--hits N`` (the same stored
entries, the same flush) and counted by thread: the main thread's difference over N is a hit's
``get`` (the record's read and decoding, and noting its renewal), the other threads' (the
writer's) a renewal. ``--src`` counts another checkout's ``src`` too (say main's), in the same run.

Run: ``.venv/bin/python bench/disk_renew_instructions.py [--hits 1000] [--src PATH ...]`` (needs
valgrind).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _callgrind import thread_instructions
from _entries import entry

REPO = Path(__file__).resolve().parent.parent


def child(hits: int, stored: int) -> None:
    """Store ``stored`` entries, read the oldest ``hits`` and flush (see the module's method)."""
    from edgecache.store.disk import DiskStore

    with tempfile.TemporaryDirectory(prefix="edgecache-renew-", dir="/var/tmp") as tmp:
        disk = DiskStore(Path(tmp) / "disk", budget=1 << 30, position=0, zones=("z",))
        try:
            keys = [f"http://127.0.0.1/obj/{i:08d}" for i in range(stored)]
            for key in keys:
                disk.put(entry(key, tags=("z",), length_known=True))
            assert disk.flush(600)
            for key in keys[:hits]:
                assert disk.get(key) is not None
            assert disk.flush(600)
        finally:
            disk.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stored", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    stored = 8 * args.hits
    if args.child:
        child(args.hits, args.stored)
        return
    print(f"instructions per disk hit (callgrind), {args.hits:,} hits of {stored:,} records\n")
    print("| src | get (hit path) | renewal (writer thread) |\n|---|---:|---:|")
    for src in [REPO / "src", *args.src]:
        counts = [
            thread_instructions(__file__, src, "--hits", str(n), "--stored", str(stored))
            for n in (0, args.hits)
        ]
        main_thread = [c[1] for c in counts]
        others = [sum(c.values()) - c[1] for c in counts]
        print(
            f"| {src} | {(main_thread[1] - main_thread[0]) / args.hits:,.0f} | "
            f"{(others[1] - others[0]) / args.hits:,.0f} |"
        )


if __name__ == "__main__":
    main()
