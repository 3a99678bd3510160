"""``untrack`` (the memory tier's way out of the cyclic collector, ``store/untracked.py``) in C: it
takes a container out of the collector's view, leaves objects the collector does not track alone,
and the object stays alive and is freed by reference counting."""

from __future__ import annotations

import gc
import sys
import weakref

from edgecache.store.entry import Entry
from edgecache.store.untracked import untrack


def _entry() -> Entry:
    return Entry("z", "http://h/a", 200, b"", b"x", ("t",), 0, 0.0, 0.0, 60.0)


def test_untrack_takes_a_container_out_of_the_collector_and_it_is_still_freed() -> None:
    entry = _entry()
    held = {"e": entry}
    assert gc.is_tracked(entry) and gc.is_tracked(held)
    refs = sys.getrefcount(entry), sys.getrefcount(held)
    untrack(entry)
    untrack(held)
    assert not gc.is_tracked(entry) and not gc.is_tracked(held)
    assert held["e"] is entry
    # No reference taken or dropped: reference counting frees both as before.
    assert (sys.getrefcount(entry), sys.getrefcount(held)) == refs


class _Plain:
    pass


def test_an_untracked_object_is_freed_when_its_last_reference_goes() -> None:
    obj = _Plain()
    obj.attrs = {"k": [1, 2]}  # type: ignore[attr-defined]
    gone = weakref.ref(obj)
    untrack(obj)
    assert not gc.is_tracked(obj)
    del obj
    assert gone() is None  # freed at once, without a collection


def test_untrack_leaves_untracked_and_non_collector_objects_alone() -> None:
    entry = _entry()
    untrack(entry)
    untrack(entry)  # twice: nothing to do the second time
    for obj in ("a string", 7, b"bytes", None, (1, 2), 1.5):
        untrack(obj)
    assert not gc.is_tracked(entry)
    gc.collect()
    assert entry.key == "http://h/a"
