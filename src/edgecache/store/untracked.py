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
"""

from __future__ import annotations

import ctypes

# Through ``pythonapi``: the call keeps the GIL, as a C API call must.
_untrack = ctypes.pythonapi.PyObject_GC_UnTrack
_untrack.argtypes = [ctypes.py_object]
_untrack.restype = None


def untrack(obj: object) -> None:
    """Take ``obj`` out of the collector's view (it stays alive as long as it is referenced).

    ``PyObject_GC_UnTrack`` does nothing for an object that is not tracked, and an untracked object is
    freed normally by reference counting."""
    _untrack(obj)
