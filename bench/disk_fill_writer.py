"""The disk writer's cost per fill, alone: batches of new 1 KiB records through ``DiskStore._apply``.

Method: a ``DiskStore`` in a temporary directory (on the same disk as the data directory would be)
is given ``--batches`` batches of ``--batch`` never-seen entries (1 KiB body, a 200-byte head,
one tag: what a fill of ``bench/miss_inprocess.py`` looks like), applied from this thread as the
writer thread applies them: one write transaction and one commit (with its fsync) per batch. The
figure is this thread's CPU time (user + system, so the commit's page writes count) per fill, best
of ``--rounds``. No event loop runs beside it: in a node the writer shares the interpreter lock and
the cores with the loop, which costs it more (decision 0009, addendum "fills written as a run").

For a figure that neighbours do not move, count instructions: the difference between two runs
under ``valgrind --tool=callgrind`` with ``--batches 11`` and ``--batches 1`` (``--rounds 1``),
divided by ten batches' fills, is the writer's instructions per fill (entries built included).

Run: ``.venv/bin/python bench/disk_fill_writer.py [--batch 200] [--batches 20] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _entries import entry

from edgecache.store.disk import DiskStore

HEAD = (
    b"Server: nginx\r\nDate: Mon, 30 Nov 2026 06:00:00 GMT\r\nContent-Type: application/octet-stream\r\n"
    b'Last-Modified: Mon, 30 Nov 2026 05:00:00 GMT\r\nETag: "6762-400"\r\nCache-Control: max-age=3600\r\n'
    b"Accept-Ranges: bytes\r\n"
)


def batches(first: int, size: int, count: int) -> list[list[tuple[Any, ...]]]:
    """``count`` batches of ``size`` puts of never-seen keys, from key number ``first`` on."""
    return [
        [
            (
                "put",
                entry(
                    f"http://127.0.0.1/obj/{first + b * size + i:08d}",
                    head=HEAD,
                    tags=("z",),
                    length_known=True,
                ),
                False,
            )
            for i in range(size)
        ]
        for b in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=200, help="fills per transaction")
    parser.add_argument("--batches", type=int, default=20, help="transactions per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecache-fills-", dir="/var/tmp") as tmp:
        store = DiskStore(Path(tmp), budget=1 << 30, position=0, zones=("z",))
        try:
            best = float("inf")
            for r in range(args.rounds):
                work = batches(r * 10**6, args.batch, args.batches)
                cpu = time.thread_time()
                for batch in work:
                    store._apply(batch)
                best = min(best, (time.thread_time() - cpu) / (args.batch * args.batches))
        finally:
            store.close()
    print(f"writer CPU per fill, alone: {best * 1e6:.1f} µs (batches of {args.batch}, best of {args.rounds})")


if __name__ == "__main__":
    main()
