"""Memory freed by a mass purge goes back to the operating system: glibc keeps freed blocks in its
heap until ``malloc_trim``, which the reclaimer runs (``edgecache.memtrim``) after large reclaims."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecache.allocator import MALLOC_CONF
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


def test_finding_malloc_trim_runs_no_program() -> None:
    # Every process of a node imports this module; looking the C library up by name would run
    # ldconfig in a subprocess each time (ctypes.util.find_library).
    probe = (
        "import sys; spawned = []\n"
        "runs = ('subprocess.Popen', 'os.posix_spawn', 'os.exec')\n"
        "sys.addaudithook(lambda e, a: spawned.append(e) if e in runs else None)\n"
        "import edgecache.memtrim as m\n"
        "print(m._TRIM is not None, spawned)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(maxsplit=1) == ["True", "[]"]


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


@pytest.mark.skipif(not JEMALLOC.exists(), reason="libjemalloc2 is not installed")
def test_on_jemalloc_freed_bodies_leave_the_process_without_a_trim() -> None:
    # What the reclaimer relies on there: release_freed_memory does nothing, and jemalloc's
    # background threads return the pages within dirty_decay_ms (MALLOC_CONF as serve sets it).
    probe = """
import asyncio, os, time
from edgecache.allocator import MALLOC_CONF
from edgecache.memtrim import release_freed_memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
bodies = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]
survivors = bodies[::512]
del bodies
before = rss()
released = asyncio.run(release_freed_memory())
deadline = time.monotonic() + 10
while before - rss() < 100 << 20 and time.monotonic() < deadline:
    time.sleep(0.1)
print(released, (before - rss()) >> 20, len(survivors))
"""
    env = {**os.environ, "LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": MALLOC_CONF}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    released, freed_mib, survivors = out.stdout.split()
    assert released == "False" and survivors == "391"
    assert int(freed_mib) > 100
