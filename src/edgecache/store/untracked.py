"""Keeping the cache out of CPython's cyclic garbage collector.

Why: a full collection walks every object the collector tracks, and at a million cached entries
that walk (the entries, and the containers holding a million references each) took 0.6 s of CPU
(docs/decisions/0006-gc-policy.md). Reference counting frees an object whatever the collector knows
about it; the collector is only needed to find reference cycles.

Rule: ``untrack`` only objects that can never be part of a reference cycle: the tier's entries
(their fields are strings, numbers, bytes and a tuple of strings) and the tier's own containers
(which hold keys, counts and entries, never anything that refers back to them). CPython re-tracks
some containers by itself (a dict when a container value is inserted), so the tier untracks again
after such inserts. edgecache runs on CPython only (uvloop, httptools).

``untrack`` is ``PyObject_GC_UnTrack`` in a small C module (``_untrack.c``): the tier calls it twice
a put, and through ``ctypes.pythonapi`` each call cost ~3k instructions. It does nothing for an
object that is not tracked or not a collector's object at all; an untracked object is freed
normally by reference counting.
"""

from __future__ import annotations

from edgecache.store._untrack import untrack

__all__ = ["untrack"]
