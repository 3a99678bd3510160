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
- A retired entry still holds its body, so retired bytes are bounded, without ever stopping the event
  loop for a pass over the whole ring: once they exceed an eighth of the budget, each retirement
  sweeps a few more slots from where the last sweep stopped (clearing retired entries' slots), as
  many as make one full turn of the ring while another eighth of the budget is retired; so retired
  bytes stay near a quarter of the budget at most, and above that (entries far larger than the
  average) the rest of the ring is swept at once. Dead slots (``None``) are dropped when they
  outnumber live and retired ones by ``_MIN_DEAD_SLOTS``: a compaction that at least halves the
  ring, so its cost is amortised O(1) a put. It runs in steps of ``_COMPACT_STEP`` slots, one per
  put, in place: the slots before the read cursor hold, in order, the entries it has passed, then
  ``None`` up to it, then the slots not reached yet; the hand and the sweep move with the entry they
  point at. Done at once, the first put after a purge of everything at a million slots held the loop
  for milliseconds (figures, measured ad hoc, in docs/decisions/0002-memory-tier-eviction.md,
  addendum 4; bench/purge_api.py and bench/reclaim_stalls.py show the loop's longest stall).
- The tier's entries and big containers are kept out of the cyclic garbage collector
  (``edgecache.store.untracked``): none can be part of a cycle, and a full collection would
  otherwise walk all of them (docs/decisions/0006-gc-policy.md).
- Each entry object has at most one slot: putting a retired entry again revives its old slot.
- Every stored entry is in ``_entries`` and has exactly one slot; every retired entry has
  ``entry.retired`` set and exactly one slot; every other slot is ``None``. Retirement is a flag on
  the entry, not a set: a set of the retired entries would be rehashed as a mass purge grows it, a
  pause of several ms at a hundred thousand entries.
- Every change to what is stored goes through ``Links.link`` (``put``) and ``_unlink``, and so does
  every index: an index holds exactly the stored entries, never a retired or evicted one. The
  bookkeeping of both is in C (``_links.c``, decision 0002, addendum 9) over the containers below,
  which stay plain Python objects that the readers (``keys_for_*``, ``variants``) use as they are.
- Key index: every stored key in one sorted list (``sortedcontainers.SortedList``: a list of sorted
  sublists, ~8-9 bytes a key, the key string itself shared with the dict; the sublists are kept
  out of the collector, see ``_UntrackedKeys``). The keys starting with a
  string are one contiguous range, found by bisection: O(log n + matches). Because ``VARIANT_SEP``
  is the least character, the keys under a base key are the range [base, base + "\\x01").
- Tag index: zone → tag → the keys carrying it, as a ``str`` for a tag on a single entry (per-object
  tags are common, and a one-element set costs 216 bytes), a ``set`` from two on, and from
  ``_TAG_SHARD_AT`` keys a :class:`_TagShards` (the keys spread by hash over ``_TAG_SHARDS`` sets);
  a tag with no stored entry has no slot. Why shards: a set never shrinks its table, so a tag once
  on a million entries keeps a 32 MB table until its last key goes, and freeing that table (a scan
  of every slot, then ``munmap``) held the loop for milliseconds in one ``delete`` (bench/reclaim_stalls.py,
  a tag on every entry; decision 0002, addendum 3). Shards are freed one by one as each empties.
- Zone index: zone → host range → how many stored keys of the zone lie in it, and host range → how
  many zones have keys in it. A key's host range is ``scheme://host/`` (its prefix up to the first
  "/" after the host); for a malformed key without one, the key itself. Nothing per entry: a zone's
  keys are read off the key index range by range. Every key starting with a well-formed range has
  that very range, so a range of one zone yields only that zone's keys; the keys from a range two
  zones share (a host moved between zones while its entries are cached) or from a malformed one
  are kept only if their entry is in the zone.
- Variant index: primary key → how many stored keys under it have a variant part. With the
  entries' dict it answers "is anything stored under this URL?" in two hash probes; the key index
  answers it by bisection, a few cold cache lines, and every fill of a new URL asks
  (``variants``).
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Protocol

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from edgecache.store._links import Links
from edgecache.store.base import VaryNames
from edgecache.store.entry import VARIANT_SEP, Entry
from edgecache.store.untracked import untrack

_MIN_DEAD_SLOTS = 64
"""Dead slots tolerated before compacting however few entries are stored, so that a small tier does
not compact on nearly every eviction."""

_COMPACT_STEP = 8192
"""Slots one put compacts while a compaction is under way (a `filter` and slice copies, in C)."""

_SWEEP_TURNS_PER_BUDGET = 8
"""Retirements sweep one full turn of the ring per budget/this bytes retired (see the module rules)."""

_AFTER_VARIANTS = chr(ord(VARIANT_SEP) + 1)
"""The least string after ``VARIANT_SEP``: the keys under a base key sort in [base, base + this)."""

_LAST_CHAR = chr(sys.maxunicode)

_TAG_SHARD_AT = 4096
"""Keys of one tag from which they are kept in shards (converting is one step, once per tag)."""

_TAG_SHARDS = 64
"""Sets a sharded tag's keys are spread over: a tag on a million entries has ~16k keys a shard."""


class _SortedKeys(Protocol):
    """What the tier uses of ``SortedList``, typed (sortedcontainers ships no type information)."""

    def add(self, value: str, /) -> None: ...

    def remove(self, value: str, /) -> None: ...

    def irange(self, minimum: str, maximum: str | None, inclusive: tuple[bool, bool]) -> Iterator[str]: ...

    def first_from(self, lowest: str, /) -> str | None: ...


class _UntrackedKeys(SortedList):  # type: ignore[misc]
    """The key index: a ``SortedList`` whose sublists (lists of key strings, which cannot be in a
    cycle) are kept out of the garbage collector. A full collection visits every reference of every
    tracked list, paid by every full collection that ran before the next ``gc.freeze`` after a large
    fill (bench/gc_pause.py; docs/decisions/0006-gc-policy.md)."""

    def add(self, value: str) -> None:
        """``SortedList.add``, calling ``_expand`` only when it has something to do (a sublist to
        split, a positional index to update): every put adds a key, and the call it saves is ~0.6k
        instructions of the ~3.4k an add cost (decision 0002, addendum 8). A put runs the same steps
        in C (``_links.c``'s ``keys_add``, which calls this only for the first key). It reads
        sortedcontainers' internals (``_maxes``, ``_lists``, ``_load``, ``_index``, ``_len``): pinned
        below 3."""
        maxes = self._maxes
        if not maxes:
            SortedList.add(self, value)
            return
        lists = self._lists
        pos = bisect_right(maxes, value)
        if pos == len(maxes):
            pos -= 1
            lists[pos].append(value)
            maxes[pos] = value
        else:
            insort(lists[pos], value)
        if len(lists[pos]) > self._load << 1 or self._index:
            self._expand(pos)
        self._len += 1

    def _expand(self, pos: int) -> None:
        # Called by ``add`` when a sublist outgrew twice the load or the positional index exists,
        # and by SortedList's other inserts; sortedcontainers makes a sublist only when it splits one
        # in two here (the first sublist, made when the list was empty, is untracked at its first split).
        lists = self._lists
        if len(lists[pos]) > self._load << 1:
            SortedList._expand(self, pos)
            untrack(lists[pos])
            untrack(lists[pos + 1])
        elif self._index:
            SortedList._expand(self, pos)

    def first_from(self, lowest: str) -> str | None:
        """The least key at or above ``lowest``, or None: two bisections in C, where ``irange``
        builds an iterator in Python (a fill of a new URL asks whether anything is under its key)."""
        maxes = self._maxes
        pos = bisect_left(maxes, lowest)
        if pos == len(maxes):
            return None
        sublist = self._lists[pos]
        return sublist[bisect_left(sublist, lowest)]  # type: ignore[no-any-return]


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None when there is none."""
    # Trailing maximal characters cannot be incremented, and dropping them does not let in any string
    # at or above ``prefix`` that does not start with it.
    stem = prefix.rstrip(_LAST_CHAR)
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


_HOST_START = len("https://")
"""Where the host starts at the latest in a key (the scheme is http or https): a key's host range
(module rules) is its prefix up to the first "/" from here (``_links.c``'s ``host_range``)."""


def _well_formed(host_range: str) -> bool:
    """Whether ``host_range`` ends with the "/" after the host: then it is the range of every key that
    starts with it."""
    return len(host_range) > _HOST_START and host_range[-1] == "/"


class _TagShards:
    """The keys of a tag on many entries, spread by hash over ``_TAG_SHARDS`` sets (see the module
    rules): the operations of a ``set`` that the tier uses. A shard that empties is replaced by a new
    empty set at once, so its table is freed then, not together with every other shard's."""

    __slots__ = ("_len", "_sets")

    def __init__(self, keys: set[str]) -> None:
        self._sets: list[set[str]] = [set() for _ in range(_TAG_SHARDS)]
        for key in keys:
            self._sets[hash(key) % _TAG_SHARDS].add(key)
        self._len = len(keys)
        for shard in self._sets:
            untrack(shard)
        untrack(self._sets)
        untrack(self)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        # In C: the reclaimer copies a tag's keys in one step (``keys_for_tag``).
        return chain.from_iterable(self._sets)

    def add(self, key: str) -> None:
        shard = self._sets[hash(key) % _TAG_SHARDS]
        before = len(shard)
        shard.add(key)
        self._len += len(shard) - before

    def remove(self, key: str) -> None:
        i = hash(key) % _TAG_SHARDS
        self._sets[i].remove(key)
        self._took(i)

    def pop(self) -> str:
        for i, shard in enumerate(self._sets):
            if shard:
                key = shard.pop()
                self._took(i)
                return key
        raise KeyError("pop from an empty tag")

    def _took(self, i: int) -> None:
        self._len -= 1
        if not self._sets[i]:
            fresh: set[str] = set()
            untrack(fresh)
            self._sets[i] = fresh


class MemoryTier:
    """The in-process tier (implements ``edgecache.store.base.Tier``)."""

    __slots__ = (
        "_budget",
        "_compact_read",
        "_compact_write",
        "_entries",
        "_evictions",
        "_hand",
        "_keys",
        "_links",
        "_retired_bytes",
        "_retired_count",
        "_ring",
        "_sweep_at",
        "_tags",
        "_used",
        "_vary",
        "_with_variants",
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
        self._sweep_at = 0
        self._compact_read = -1
        """Where the compaction under way reads next; -1 when none is."""
        self._compact_write = 0
        self._retired_count = 0
        self._retired_bytes = 0
        untrack(self._ring)
        self._keys: _SortedKeys = _UntrackedKeys()
        self._tags: dict[str, dict[str, str | set[str] | _TagShards]] = {}
        self._zones: dict[str, dict[str, int]] = {}
        self._zones_of_range: dict[str, int] = {}
        self._vary: dict[str, tuple[str, ...]] = {}
        self._with_variants: dict[str, int] = {}
        """Primary key → how many stored keys under it have a variant part: with the entries' dict,
        it says in two probes whether a URL has anything stored (a fill of a new URL asks)."""
        self._links = Links(
            self._entries,
            self._keys,
            self._zones,
            self._zones_of_range,
            self._with_variants,
            self._tags,
            _TagShards,
            _TAG_SHARD_AT,
            _HOST_START,
            VARIANT_SEP,
        )
        """The indexes' bookkeeping of a put and a removal, in C, over the containers above."""
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

    def get_plain(self, base_key: str) -> Entry | None:
        """``get(base_key)`` for a URL without Vary names: what ``get(base_key + vary_suffix(...))``
        would return after ``vary(base_key)`` said None, in one call (the hit path's lookup); None
        when the URL has Vary names or nothing is stored under its base key."""
        entry = self._entries.get(base_key)
        if entry is not None and base_key not in self._vary:
            entry.visited = True
            return entry
        return None

    def put(self, entry: Entry, vary: VaryNames | None = None) -> bool:
        if vary is not None:
            # The store, then the names, as ``set_vary`` after a ``put``: recursing costs a frame
            # only to a Vary fill, where a helper for the store would cost every fill one (decision
            # 0020's addendum of branch missloop3).
            stored = self.put(entry)
            self.set_vary(*vary)
            return stored
        old = self._entries.get(entry.key)
        if old is entry:
            return True
        size = entry.size
        if old is not None:
            # A replacement keeps the base key's Vary names: the new entry is under the same base key.
            self._retire(old, forget_vary=size > self._budget)
        if size > self._budget:
            return False
        entry.visited = False
        # Linked before evicting, so that evicting a sibling variant does not take the Vary names,
        # and appended after, so that the hand cannot choose it.
        self._links.link(entry)
        # Counted once linked: a link refused for its fields' types (not exact str) changed nothing.
        self._used += size
        while self._used > self._budget:
            self._evict()
        if entry.retired:
            entry.retired = False
            self._retired_count -= 1
            self._retired_bytes -= size
            return True
        self._ring.append(entry)
        if self._compact_read >= 0:
            self._compact_step()
        elif len(self._ring) > 2 * (len(self._entries) + self._retired_count) + _MIN_DEAD_SLOTS:
            self._compact_read = self._compact_write = 0
            self._compact_step()
        return True

    def delete(self, key: str, below: int | None = None) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or (below is not None and entry.stored_seq >= below):
            return None
        self._retire(entry)
        return entry

    def delete_primary(self, primary: str) -> int:
        keys = self.variants(primary)
        for key in keys:
            self._retire(self._entries[key])
        return len(keys)

    def variants(self, primary: str) -> list[str]:
        if primary not in self._entries and primary not in self._with_variants and VARIANT_SEP not in primary:
            return []  # every fill of a new URL asks: no bisection of the key index for it
        return list(self._keys.irange(primary, primary + _AFTER_VARIANTS, inclusive=(True, False)))

    def keys_with_prefix(self, prefix: str, after: str | None = None, limit: int | None = None) -> list[str]:
        if after is None or after < prefix:
            keys = self._keys.irange(prefix, _prefix_end(prefix), inclusive=(True, False))
        else:
            keys = self._keys.irange(after, _prefix_end(prefix), inclusive=(False, False))
        return list(keys if limit is None else islice(keys, limit))

    def keys_for_tag(self, zone: str, tag: str) -> list[str]:
        tags = self._tags.get(zone)
        keys = None if tags is None else tags.get(tag)
        if keys is None:
            return []
        return [keys] if isinstance(keys, str) else list(keys)

    def tag_size(self, zone: str, tag: str) -> int:
        tags = self._tags.get(zone)
        keys = None if tags is None else tags.get(tag)
        if keys is None:
            return 0
        return 1 if isinstance(keys, str) else len(keys)

    def keys_for_zone(self, zone: str, after: str | None = None, limit: int | None = None) -> list[str]:
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
            end = _prefix_end(r)
            if after is not None and end is not None and after >= end:
                continue
            want = None if limit is None else limit - len(keys)
            lo, first = (r, True) if after is None or after < r else (after, False)
            in_range = self._keys.irange(lo, end, inclusive=(first, False))
            if not (self._zones_of_range[r] == 1 and _well_formed(r)):
                in_range = (k for k in in_range if entries[k].zone == zone)
            keys += in_range if want is None else islice(in_range, want)
            if limit is not None and len(keys) >= limit:
                break
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
            untrack(names)
            self._vary[base_key] = names
            untrack(self._vary)

    def _unlink(self, entry: Entry, forget_vary: bool = True) -> None:
        self._links.unlink(entry)
        self._used -= entry.size
        if forget_vary and self._vary:
            self._forget_vary(entry.key)

    def _forget_vary(self, key: str) -> None:
        """Drop the Vary names of every base key that ``key`` was under and that is now empty."""
        end = len(key)
        while end >= 0:
            base = key[:end]
            if base in self._vary and not self._has_under(base):
                del self._vary[base]
            end = key.rfind(VARIANT_SEP, 0, end)

    def _has_under(self, base_key: str) -> bool:
        first = self._keys.first_from(base_key)
        return first is not None and first < base_key + _AFTER_VARIANTS

    def _retire(self, entry: Entry, forget_vary: bool = True) -> None:
        self._unlink(entry, forget_vary)
        entry.retired = True
        self._retired_count += 1
        size = entry.size
        self._retired_bytes += size
        if self._retired_bytes > self._budget >> 3:
            ring = len(self._ring)
            if self._retired_bytes > self._budget >> 2:
                self._sweep(ring)
            else:
                self._sweep(ring * size * _SWEEP_TURNS_PER_BUDGET // max(self._budget, 1) + 1)

    def _evict(self) -> None:
        """Evict one entry. Called only while ``bytes_used`` exceeds the budget, which the entry
        being put (not yet in the ring) cannot do alone: a victim is in the ring, and the hand finds
        it within two turns."""
        ring = self._ring
        hand = self._hand
        while True:
            if hand >= len(ring):
                hand = 0
            entry = ring[hand]
            if entry is not None:
                if entry.retired:
                    ring[hand] = None
                    self._clear_retired(entry)
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

    def _sweep(self, slots: int) -> None:
        """Clear the slots of the retired entries among the next ``slots`` slots of the ring, from
        where the last sweep stopped (wrapping), so that their bodies are freed."""
        ring = self._ring
        n = len(ring)
        i = self._sweep_at
        for _ in range(min(slots, n)):
            if i >= n:
                i = 0
            entry = ring[i]
            if entry is not None and entry.retired:
                ring[i] = None
                self._clear_retired(entry)
            i += 1
        self._sweep_at = i

    def _clear_retired(self, entry: Entry) -> None:
        """Forget a retired entry whose slot was just cleared."""
        entry.retired = False
        self._retired_count -= 1
        self._retired_bytes -= entry.size

    def _compact_step(self) -> None:
        """Compact the next ``_COMPACT_STEP`` slots in place; at the end of the ring, drop the
        ``None`` slots the compaction left behind it (see the module rules)."""
        ring = self._ring
        read = self._compact_read
        write = self._compact_write
        end = min(read + _COMPACT_STEP, len(ring))
        chunk = ring[read:end]
        # Entries are always true, so filter(None) keeps exactly the live and retired slots, in C.
        kept = list(filter(None, chunk))
        for name in ("_hand", "_sweep_at"):
            at = getattr(self, name)
            if read <= at < end:
                setattr(self, name, write + (at - read) - chunk[: at - read].count(None))
        ring[write : write + len(kept)] = kept
        write += len(kept)
        # The slots from `write` to `read` are None already: clear only what this step read.
        clear = max(write, read)
        ring[clear:end] = [None] * (end - clear)
        if end < len(ring):
            self._compact_read = end
            self._compact_write = write
            return
        # Slots at or past `write` are None now: a hand there would next find the ring's start.
        self._hand = min(self._hand, write)
        self._sweep_at = min(self._sweep_at, write)
        del ring[write:]
        self._compact_read = -1
