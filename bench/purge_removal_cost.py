"""What a request's removal of a purged object costs the event loop's thread, with a disk tier.

Method: a ``TierChain`` (memory in front of a real ``DiskStore``) holds ``--objects`` entries in
memory; each is removed as ``Proxy._purge_check`` removes a purged entry (``TierChain.delete``:
the memory entry, and a disk delete queued for the writer thread). CPU time of the calling thread
(``thread_time``) per removal, best of ``--rounds``; the writer's own work is on its thread and not
counted. With the code before bounded purge removals (no ``below`` parameter) the plain delete is
timed, so that the two can be run interleaved: point ``PYTHONPATH`` at a copy of the older ``src``.

Run: ``.venv/bin/python bench/purge_removal_cost.py [--objects 5000] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

from edgecache.store.chain import TierChain
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bounded = "below" in inspect.signature(TierChain.delete).parameters
    n = args.objects
    keys = [f"http://h/{i}" for i in range(n)]
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        disk = DiskStore(Path(tmp), budget=1 << 30, position=0, map_size=1 << 28, zones=("z",))
        chain = TierChain(
            MemoryTier(1 << 26),
            disk,
            reserve_on=lambda zone: False,
            reserve_eligible=lambda entry: False,
            still_valid=lambda entry: True,
        )
        for _ in range(args.rounds):
            for key in keys:
                chain.memory.put(Entry("z", key, 200, b"", b"x", (), 0, 0.0, 0.0, 60.0))
            assert disk.flush(10)
            began = time.thread_time()
            if bounded:
                for key in keys:
                    chain.delete(key, 5)
            else:
                for key in keys:
                    chain.delete(key)
            best = min(best, (time.thread_time() - began) / n * 1e6)
            assert disk.flush(10)
        disk.close()
    print("| code | loop-thread CPU per purge removal (µs, best of rounds) |\n|---|---|")
    print(f"| {'bounded (below=)' if bounded else 'unbounded'} | {best:.2f} |")


if __name__ == "__main__":
    main()
