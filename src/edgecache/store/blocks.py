"""What a body really costs the allocator this process runs on, beyond its length.

Why: the memory tier's budget must bound real memory within 5% (decision 0002). Its per-entry
overheads were measured with tracemalloc, which counts the bytes Python asks for; glibc adds 8-16 B
a block on top, but jemalloc (which ``edgecache serve`` runs on by default, decision 0019) rounds each
block up to its size class: four classes per doubling, so up to 25% more, and a large block (from
``LARGE_MIN``, 16 KiB with 4 KiB pages) takes a page more for its cache-oblivious offset. Measured
in RSS by ``bench/tier_accounting.py --rss``: 1 KiB bodies cost 14% more than charged, 16 KiB ones
47%.
Blocks of up to 512 B come from Python's own small-object allocator, not ``malloc``.
"""

from __future__ import annotations

import ctypes

BYTES_HEADER = 33
"""A ``bytes`` object's header before its data (CPython 3.11 on 64-bit: 32 B and the trailing NUL)."""
SMALL_OBJECT_MAX = 512
"""Largest request Python serves from its own arenas (``pymalloc``)."""


_PROCESS = ctypes.CDLL(None)
JEMALLOC = hasattr(_PROCESS, "mallctl")
"""This process allocates through jemalloc (it was preloaded before it started: fixed for its life)."""


def _mallctl_size(name: bytes, default: int) -> int:
    """One of jemalloc's ``size_t`` settings, or ``default`` when jemalloc is not what allocates."""
    if not JEMALLOC:
        return default
    value = ctypes.c_size_t(0)
    length = ctypes.c_size_t(ctypes.sizeof(value))
    if _PROCESS.mallctl(name, ctypes.byref(value), ctypes.byref(length), None, ctypes.c_size_t(0)) != 0:
        return default
    return value.value


PAGE = _mallctl_size(b"arenas.page", 4096)
"""jemalloc's page, fixed when it was built (4 KiB on x86-64; Debian's arm64 build may use 64 KiB)."""
LARGE_MIN = _mallctl_size(b"arenas.lextent.0.size", 4 * PAGE)
"""jemalloc's first large size class (four pages): blocks from here on are whole extents, padded
by a page."""


def jemalloc_block(n: int) -> int:
    """Bytes jemalloc 5 takes for a request of ``n`` bytes (default options): its size class, plus a
    page for a large block."""
    if n <= 8:
        return 8
    if n <= 128:
        return -(-n // 16) * 16
    spacing = 1 << ((n - 1).bit_length() - 3)
    usable = -(-n // spacing) * spacing
    return usable + PAGE if usable >= LARGE_MIN else usable


def _jemalloc_slack(length: int) -> int:
    n = length + BYTES_HEADER
    return 0 if n <= SMALL_OBJECT_MAX else jemalloc_block(n) - n


def _no_slack(length: int) -> int:
    return 0


slack = _jemalloc_slack if JEMALLOC else _no_slack
"""Bytes a ``bytes`` object of this length costs beyond what tracemalloc counts (``ENTRY_OVERHEAD``
holds the header; glibc's few bytes a block are left in the 5%)."""
