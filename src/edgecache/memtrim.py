"""Giving memory freed by a mass purge back to the operating system.

Why: glibc's allocator keeps freed blocks in its arenas; after a purge of a million 1 KiB entries
the process kept 1.8 GB of RSS until ``malloc_trim(0)`` (`docs/benchmarks.md`), which returns the
free pages at the top of each arena and ``madvise``s free whole pages inside them. The reclaimer
calls this after large reclaims only (it walks the heap), and in a worker thread: ctypes releases
the GIL for the call, so the event loop keeps serving while it runs, unless it allocates: glibc
holds each arena's lock for the whole of that arena's trim, and a trim walks every free chunk of the
arena and ``madvise``s each again, so at a million entries one costs several milliseconds however
little was freed since the last (decision 0002, addendum 5).

A process started with jemalloc preloaded (``LD_PRELOAD``) does not need it: jemalloc's own
background threads return freed pages without a lock the event loop waits for, and glibc's arenas
then hold next to nothing. ``trim_now`` does nothing there.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

from edgecache.allocator import running

log = logging.getLogger(__name__)


def _load_trim() -> ctypes._NamedFuncPointer | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl).

    Looked up among the symbols the interpreter already has loaded (``CDLL(None)``, i.e.
    ``dlsym(RTLD_DEFAULT)``): ``ctypes.util.find_library`` would run ``ldconfig -p`` in a
    subprocess to find the C library the process is linked against anyway."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


JEMALLOC = running() == "jemalloc"
"""This process allocates through jemalloc (preloaded): nothing to trim."""

_TRIM = None if JEMALLOC else _load_trim()


def trim_now() -> bool:
    """Return free heap memory to the OS now; whether any was returned (False without glibc's
    allocator)."""
    return bool(_TRIM is not None and _TRIM(0))


async def release_freed_memory() -> bool:
    """``trim_now`` in a worker thread, off the event loop; on jemalloc, nothing (its background
    threads return the pages within ``dirty_decay_ms``)."""
    if JEMALLOC:
        log.debug("freed memory: jemalloc's background threads return it")
        return False
    released = await asyncio.to_thread(trim_now)
    log.debug("malloc_trim returned memory: %s", released)
    return released
