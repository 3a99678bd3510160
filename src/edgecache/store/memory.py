"""The memory tier: a byte-budgeted dict of entries, evicted with SIEVE, with the purge indexes.

Rules of this module (the tier's contract is in ``base``; the choice of SIEVE and the indexes are
argued in docs/decisions/0002-memory-tier-eviction.md):
- The hit path is one dict probe and one attribute store (``entry.visited = True``): no reordering
  and no lock, because one event loop owns the tier. The indexes below are paid for on ``put`` and
  removal, never on ``get``.
- SIEVE: entries sit in a ring in insertion order. On eviction a hand walks from the oldest towards
  the newest, clearing visited bits, and evicts the first entry whose bit was already clear; after
  the newest it wraps to the oldest. A survivor keeps its place; a new entry goes after the newest,
  unvisited. Replacing an entry is a new entry.
- The ring is a plain list (8 bytes a slot, no node objects). Eviction leaves ``None`` in the slot.
  ``delete`` and replacement cannot find the slot, so they *retire* the entry instead: it leaves the
  dict at once, and its slot is cleared when the hand reaches it or the ring is compacted.
- A retired entry still holds its body, so retired bytes are bounded: the ring is compacted when they
  exceed an eighth of the budget (at most one O(n) pass per eighth of the budget deleted), or when
  dead slots outnumber stored entries by ``_MIN_DEAD_SLOTS`` (each pass then halves the ring, so the
  cost is amortised O(1) a put).
- Each entry object has at most one slot: putting a retired entry again revives its old slot.
- Every stored entry is in ``_entries`` and has exactly one slot; every retired entry is in
  ``_retired`` and has exactly one slot; every other slot is ``None``.
- Every change to what is stored goes through ``_link`` and ``_unlink``, and so does every index:
  an index holds exactly the stored entries, never a retired or evicted one.
- Key index: every stored key in one sorted list (``sortedcontainers.SortedList``: a list of sorted
  sublists, ~8-9 bytes a key, the key string itself shared with the dict). The keys starting with a
  string are one contiguous range, found by bisection: O(log n + matches). Because ``VARIANT_SEP``
  is the least character, the keys under a base key are the range [base, base + "\\x01").
- Tag index: zone → tag → the keys carrying it, as a ``str`` for a tag on a single entry (per-object
  tags are common, and a one-element set costs 216 bytes) and a ``set`` from two on; a tag with no
  stored entry has no slot.
- Zone index: zone → host range → how many stored keys of the zone lie in it, and host range → how
  many zones have keys in it. A key's host range is ``scheme://host/`` (its prefix up to the first
  "/" after the host); for a malformed key without one, the key itself. Nothing per entry: a zone's
  keys are read off the key index range by range. Every key starting with a well-formed range has
  that very range, so a range of one zone yields only that zone's keys; the keys from a range two
  zones share (a host moved between zones while its entries are cached) or from a malformed one
  are kept only if their entry is in the zone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Protocol

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from edgecache.store.entry import VARIANT_SEP, Entry

_MIN_DEAD_SLOTS = 64
"""Dead slots tolerated before compacting however few entries are stored, so that a small tier does
not compact on nearly every eviction."""

_AFTER_VARIANTS = chr(ord(VARIANT_SEP) + 1)
"""The least string after ``VARIANT_SEP``: the keys under a base key sort in [base, base + this)."""

_LAST_CHAR = chr(sys.maxunicode)


class _SortedKeys(Protocol):
    """What the tier uses of ``SortedList``, typed (sortedcontainers ships no type information)."""

    def add(self, value: str, /) -> None: ...

    def remove(self, value: str, /) -> None: ...

    def irange(self, minimum: str, maximum: str | None, inclusive: tuple[bool, bool]) -> Iterator[str]: ...


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None when there is none."""
    # Trailing maximal characters cannot be incremented, and dropping them does not let in any string
    # at or above ``prefix`` that does not start with it.
    stem = prefix.rstrip(_LAST_CHAR)
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


_HOST_START = len("https://")
"""Where the host starts at the latest in a key (the scheme is http or https)."""


def _host_range(key: str) -> str:
    """``scheme://host/`` of a well-formed key, else the key itself: in any case a prefix of it."""
    slash = key.find("/", _HOST_START)
    return key if slash < 0 else key[: slash + 1]


def _well_formed(host_range: str) -> bool:
    """Whether ``host_range`` ends with the "/" after the host: then it is the range of every key that
    starts with it."""
    return len(host_range) > _HOST_START and host_range[-1] == "/"


class MemoryTier:
    """The in-process tier (implements ``edgecache.store.base.Tier``)."""

    __slots__ = (
        "_budget",
        "_entries",
        "_evictions",
        "_hand",
        "_keys",
        "_retired",
        "_retired_bytes",
        "_ring",
        "_tags",
        "_used",
        "_vary",
        "_zones",
        "_zones_of_range",
        "on_evict",
    )

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError("budget must not be negative")
        self._budget = budget
        self._used = 0
        self._evictions = 0
        self._entries: dict[str, Entry] = {}
        self._ring: list[Entry | None] = []
        self._hand = 0
        self._retired: set[Entry] = set()
        self._retired_bytes = 0
        self._keys: _SortedKeys = SortedList()
        self._tags: dict[str, dict[str, str | set[str]]] = {}
        self._zones: dict[str, dict[str, int]] = {}
        self._zones_of_range: dict[str, int] = {}
        self._vary: dict[str, tuple[str, ...]] = {}
        self.on_evict: Callable[[Entry], None] | None = None
        """Told of each entry the eviction policy removes (the persistent tier renews its copy)."""

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def bytes_used(self) -> int:
        return self._used

    @property
    def evictions(self) -> int:
        return self._evictions

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.visited = True
        return entry

    def peek(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def put(self, entry: Entry) -> None:
        old = self._entries.get(entry.key)
        if old is entry:
            return
        size = entry.size
        if old is not None:
            # A replacement keeps the base key's Vary names: the new entry is under the same base key.
            self._retire(old, forget_vary=size > self._budget)
        if size > self._budget:
            return
        entry.visited = False
        # Linked before evicting, so that evicting a sibling variant does not take the Vary names,
        # and appended after, so that the hand cannot choose it.
        self._link(entry, size)
        while self._used > self._budget:
            self._evict()
        if entry in self._retired:
            self._retired.remove(entry)
            self._retired_bytes -= size
            return
        self._ring.append(entry)
        if len(self._ring) > 2 * len(self._entries) + _MIN_DEAD_SLOTS:
            self._compact()

    def delete(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._retire(entry)
        return entry

    def delete_primary(self, primary: str) -> int:
        keys = self.variants(primary)
        for key in keys:
            self._retire(self._entries[key])
        return len(keys)

    def variants(self, primary: str) -> list[str]:
        return list(self._keys.irange(primary, primary + _AFTER_VARIANTS, inclusive=(True, False)))

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return list(self._keys.irange(prefix, _prefix_end(prefix), inclusive=(True, False)))

    def keys_for_tag(self, zone: str, tag: str) -> list[str]:
        tags = self._tags.get(zone)
        keys = None if tags is None else tags.get(tag)
        if keys is None:
            return []
        return [keys] if isinstance(keys, str) else list(keys)

    def keys_for_zone(self, zone: str) -> list[str]:
        ranges = self._zones.get(zone)
        if ranges is None:
            return []
        entries = self._entries
        keys: list[str] = []
        scanned = None
        for r in sorted(ranges):
            # Ranges nest only under a malformed one, which sorts first and has already yielded every
            # key of the ranges inside it.
            if scanned is not None and r.startswith(scanned):
                continue
            scanned = r
            if self._zones_of_range[r] == 1 and _well_formed(r):
                keys += self.keys_with_prefix(r)
            else:
                keys += (k for k in self.keys_with_prefix(r) if entries[k].zone == zone)
        return keys

    def mark_stale(self, key: str, at: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.stale_since is None or at < entry.stale_since:
            entry.stale_since = at
        return True

    def vary(self, base_key: str) -> tuple[str, ...] | None:
        return self._vary.get(base_key)

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        if self._has_under(base_key):
            self._vary[base_key] = names

    def _link(self, entry: Entry, size: int) -> None:
        key = entry.key
        zone = entry.zone
        self._entries[key] = entry
        self._used += size
        self._keys.add(key)
        ranges = self._zones.get(zone)
        if ranges is None:
            ranges = self._zones[zone] = {}
        r = _host_range(key)
        n = ranges.get(r)
        if n is None:
            ranges[r] = 1
            self._zones_of_range[r] = self._zones_of_range.get(r, 0) + 1
        else:
            ranges[r] = n + 1
        if entry.tags:
            tags = self._tags.get(zone)
            if tags is None:
                tags = self._tags[zone] = {}
            for tag in entry.tags:
                keys = tags.get(tag)
                if keys is None:
                    tags[tag] = key
                elif isinstance(keys, str):
                    tags[tag] = {keys, key}
                else:
                    keys.add(key)

    def _unlink(self, entry: Entry, forget_vary: bool = True) -> None:
        key = entry.key
        del self._entries[key]
        self._used -= entry.size
        self._keys.remove(key)
        zone = entry.zone
        ranges = self._zones[zone]
        r = _host_range(key)
        n = ranges[r]
        if n > 1:
            ranges[r] = n - 1
        else:
            del ranges[r]
            if not ranges:
                del self._zones[zone]
            if self._zones_of_range[r] > 1:
                self._zones_of_range[r] -= 1
            else:
                del self._zones_of_range[r]
        if entry.tags:
            tags = self._tags[zone]
            for tag in entry.tags:
                keys = tags[tag]
                if isinstance(keys, str):
                    del tags[tag]
                else:
                    keys.remove(key)
                    if len(keys) == 1:
                        tags[tag] = keys.pop()
            if not tags:
                del self._tags[zone]
        if forget_vary and self._vary:
            self._forget_vary(key)

    def _forget_vary(self, key: str) -> None:
        """Drop the Vary names of every base key that ``key`` was under and that is now empty."""
        end = len(key)
        while end >= 0:
            base = key[:end]
            if base in self._vary and not self._has_under(base):
                del self._vary[base]
            end = key.rfind(VARIANT_SEP, 0, end)

    def _has_under(self, base_key: str) -> bool:
        under = self._keys.irange(base_key, base_key + _AFTER_VARIANTS, inclusive=(True, False))
        return next(under, None) is not None

    def _retire(self, entry: Entry, forget_vary: bool = True) -> None:
        self._unlink(entry, forget_vary)
        self._retired.add(entry)
        self._retired_bytes += entry.size
        if self._retired_bytes > self._budget >> 3:
            self._compact()

    def _evict(self) -> None:
        """Evict one entry. Called only while ``bytes_used`` exceeds the budget, which the entry
        being put (not yet in the ring) cannot do alone: a victim is in the ring, and the hand finds
        it within two turns."""
        ring = self._ring
        retired = self._retired
        hand = self._hand
        while True:
            if hand >= len(ring):
                hand = 0
            entry = ring[hand]
            if entry is not None:
                if entry in retired:
                    ring[hand] = None
                    retired.remove(entry)
                    self._retired_bytes -= entry.size
                elif entry.visited:
                    entry.visited = False
                else:
                    ring[hand] = None
                    self._hand = hand + 1
                    self._unlink(entry)
                    self._evictions += 1
                    if self.on_evict is not None:
                        self.on_evict(entry)
                    return
            hand += 1

    def _compact(self) -> None:
        retired = self._retired
        ring = self._ring
        self._hand = sum(1 for e in ring[: self._hand] if e is not None and e not in retired)
        self._ring = [e for e in ring if e is not None and e not in retired]
        retired.clear()
        self._retired_bytes = 0
