"""The memory tier's budget bounds real memory on jemalloc too: bodies are charged by jemalloc's size
classes when the process runs on it (``edgecache.store.blocks``, decision 0019). Each check runs in
a fresh process with the allocator preloaded, as ``edgecache serve`` runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgecache.allocator import MALLOC_CONF, find
from edgecache.store.blocks import jemalloc_block

JEMALLOC = find(None)
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed")

FILL = """
import ctypes, gc, os
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def give_back():
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallctl"):
        libc.mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))
    else:
        libc.malloc_trim(0)

budget = 48 << 20
gc.collect(); give_back()
before = rss()
tier = MemoryTier(budget)
i = 0
while tier.evictions < len(tier) or tier.evictions == 0:
    tier.put(Entry(zone="z", key=f"http://t.test/{i:08d}", status=200, head=b"content-type: x\\r\\n" * 8,
                   body=bytes(BODY), tags=(), stored_seq=0, response_time=0.0, initial_age=0.0,
                   freshness_lifetime=60.0))
    i += 1
gc.collect(); give_back()
print((rss() - before) / budget)
"""


PARTIAL = """
from edgecache.store.partial import PARTIAL_SUFFIX, PartialEntry
Entry = lambda body, **kw: PartialEntry(
    body=b"", length=4 * len(body), parts=((0, body), (2 * len(body), bytes(len(body)))), validator='"v"',
    **{**kw, "key": kw["key"] + PARTIAL_SUFFIX, "status": 206},
)
"""


def real_over_budget(body: int, env: dict[str, str], partial: bool = False) -> float:
    code = FILL.replace("BODY", str(body))
    if partial:
        tier = "from edgecache.store.memory import MemoryTier"
        code = code.replace(tier, tier + PARTIAL)
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return float(out.stdout)


@needs_jemalloc
@pytest.mark.parametrize("body", [1024, 16384])
def test_a_full_tier_on_jemalloc_stays_within_its_budget(body: int) -> None:
    # Uncharged, jemalloc's rounding made 1 KiB bodies cost 14% over the budget and 16 KiB ones 47%.
    ratio = real_over_budget(body, {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": MALLOC_CONF})
    assert 0.9 < ratio < 1.05


@needs_jemalloc
def test_a_full_tier_of_partial_entries_on_jemalloc_stays_within_its_budget() -> None:
    # Range requests' entries hold their bytes in parts, each a block of its own: 16 KiB parts cost
    # 48% over the budget when only their lengths were charged (1 KiB parts 13%).
    ratio = real_over_budget(16384, {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": MALLOC_CONF}, partial=True)
    assert 0.9 < ratio < 1.05


def test_a_full_tier_on_glibc_stays_within_its_budget() -> None:
    assert 0.9 < real_over_budget(16384, {}) < 1.05


@needs_jemalloc
def test_size_classes_are_jemallocs_own() -> None:
    # nallocx answers the size class jemalloc gives a request; a large one is padded by a page (the
    # page and the first large class as jemalloc reports them, 4 KiB and 16 KiB on x86-64).
    probe = (
        "import ctypes; from edgecache.store.blocks import jemalloc_block;"
        "lib = ctypes.CDLL(None); v = ctypes.c_size_t(); n = ctypes.c_size_t(8);"
        "lib.mallctl(b'arenas.page', ctypes.byref(v), ctypes.byref(n), None, 0); page = v.value;"
        "lib.mallctl(b'arenas.lextent.0.size', ctypes.byref(v), ctypes.byref(n), None, 0); large = v.value;"
        "lib.nallocx.restype = ctypes.c_size_t; lib.nallocx.argtypes = [ctypes.c_size_t, ctypes.c_int];"
        "u = lambda n: lib.nallocx(n, 0) + (page if lib.nallocx(n, 0) >= large else 0);"
        "print(sum(u(n) != jemalloc_block(n) for n in range(1, 1 << 17)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "LD_PRELOAD": str(JEMALLOC)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0"


def test_size_class_examples() -> None:
    assert [jemalloc_block(n) for n in (1, 17, 129, 1057, 14336, 16417)] == [8, 32, 160, 1280, 14336, 24576]
