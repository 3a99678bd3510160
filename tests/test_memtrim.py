"""Memory freed by a mass purge goes back to the operating system: glibc keeps freed blocks in its
heap until ``malloc_trim``, which the reclaimer runs (``edgecache.memtrim``) after large reclaims."""

from __future__ import annotations

import asyncio
import os

from edgecache.memtrim import release_freed_memory


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_bodies_leave_the_process_after_a_trim() -> None:
    # 200 MB of 1 KiB bodies, as a tier holds them; a few survivors pin the top of the heap, so glibc
    # cannot give the space back on its own.
    bodies = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]
    survivors = bodies[::512]
    del bodies
    before = rss()
    assert asyncio.run(release_freed_memory()) is True
    assert before - rss() > 100 << 20
    assert len(survivors) == 391
