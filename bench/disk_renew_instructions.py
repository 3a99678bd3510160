"""A disk hit's renewal in CPU instructions (callgrind): the hit path's ``DiskStore.get`` on the
reading thread, and the writer thread's ``_renew`` of what the hits gathered.

Method: a store of ``8 * --hits`` 1 KiB entries (``_entries.entry``; no memory tier) is written
by each tree's code in a process of its own; then a child process, counted by callgrind, opens a
copy of it, reads the oldest ``--hits`` entries with ``get`` (each among the oldest eighth of the
order, so each renewal moves its record: the costly case) and flushes, which applies the renewals
in one write transaction. The child runs with ``--hits 0`` and ``--hits N`` on copies of the same
store, counted by thread: the main thread's difference over N is a hit's ``get`` (a read
transaction, the record's read and decoding, noting its renewal), the other threads' (the
writer's) a renewal. ``--src`` counts another checkout's ``src`` too (say main's), in the same run.

Run: ``.venv/bin/python bench/disk_renew_instructions.py [--hits 1000] [--src PATH ...]`` (needs
valgrind).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _callgrind import thread_instructions
from _entries import entry

REPO = Path(__file__).resolve().parent.parent


def build(path: Path, stored: int) -> None:
    """Write the store the children read (see the module's method)."""
    from edgecache.store.disk import DiskStore

    disk = DiskStore(path, budget=1 << 30, position=0, zones=("z",))
    for i in range(stored):
        disk.put(entry(f"http://127.0.0.1/obj/{i:08d}", tags=("z",), length_known=True))
    assert disk.flush(600)
    disk.close()


def child(path: Path, hits: int) -> None:
    """Read the oldest ``hits`` entries of the store at ``path`` and flush."""
    from edgecache.store.disk import DiskStore

    disk = DiskStore(path, budget=1 << 30, position=0, zones=("z",))
    for i in range(hits):
        assert disk.get(f"http://127.0.0.1/obj/{i:08d}") is not None
    assert disk.flush(600)
    disk.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stored = 8 * args.hits
    if args.build:
        build(args.store, stored)
        return
    if args.child:
        child(args.store, args.hits)
        return
    print(f"instructions per disk hit (callgrind), {args.hits:,} hits of {stored:,} records\n")
    print("| src | get (hit path) | renewal (writer thread) |\n|---|---:|---:|")
    for src in [REPO / "src", *args.src]:
        with tempfile.TemporaryDirectory(prefix="edgecache-renew-", dir="/var/tmp") as tmp:
            built = Path(tmp) / "built"
            env = {**os.environ, "PYTHONPATH": str(src)}
            script = [sys.executable, __file__, "--hits", str(args.hits), "--store", str(built)]
            subprocess.run([*script, "--build"], env=env, check=True)
            counts = []
            for n in (0, args.hits):
                copy = Path(tmp) / str(n)
                shutil.copytree(built, copy)
                counts.append(thread_instructions(__file__, src, "--hits", str(n), "--store", str(copy)))
        main_thread = [c[1] for c in counts]
        others = [sum(c.values()) - c[1] for c in counts]
        print(
            f"| {src} | {(main_thread[1] - main_thread[0]) / args.hits:,.0f} | "
            f"{(others[1] - others[0]) / args.hits:,.0f} |"
        )


if __name__ == "__main__":
    main()
