"""Memory freed by a mass purge goes back to the operating system: glibc keeps freed blocks in its
heap until ``malloc_trim``, which the reclaimer runs (``edgecache.memtrim``) after large reclaims."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


JEMALLOC = Path("/lib/x86_64-linux-gnu/libjemalloc.so.2")


@pytest.mark.skipif(not JEMALLOC.exists(), reason="libjemalloc2 is not installed")
def test_a_process_on_jemalloc_does_not_trim_glibc() -> None:
    # Under jemalloc glibc's arenas hold next to nothing, and its background threads return freed
    # pages themselves: a trim would only walk an empty heap.
    probe = "import edgecache.memtrim as m; print(m.JEMALLOC, m.trim_now())"
    env = {**os.environ, "LD_PRELOAD": str(JEMALLOC)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert plain.stdout.split()[0] == "False"
