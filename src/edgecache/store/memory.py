"""The memory tier: a byte-budgeted dict of entries, evicted with SIEVE.

Rules of this module (the tier's contract is in ``base``; the choice of SIEVE is argued in
docs/decisions/0002-memory-tier-eviction.md):
- The hit path is one dict probe and one attribute store (``entry.visited = True``): no reordering
  and no lock, because one event loop owns the tier.
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
- Every change to what is stored goes through ``_link`` and ``_unlink``. The variant index is kept
  there, and so will be the purge engine's indexes.
- Variant index: stored keys that have variant parts, grouped by the hash of their primary key: a
  ``str`` for the common single variant (no set object), a ``set`` for two or more. Keyed by the hash
  because nothing else holds the primary key as a string, and a copy of every URL would cost more
  than the rest of the bookkeeping; a hash collision costs a ``startswith`` filter. A key equal to
  its primary is found in ``_entries`` and not indexed.
"""

from __future__ import annotations

from collections.abc import Iterator

from edgecache.store.entry import VARIANT_SEP, Entry

_MIN_DEAD_SLOTS = 64
"""Dead slots tolerated before compacting however few entries are stored, so that a small tier does
not compact on nearly every eviction."""


class MemoryTier:
    """The in-process tier (implements ``edgecache.store.base.Tier``)."""

    __slots__ = (
        "_budget",
        "_entries",
        "_evictions",
        "_hand",
        "_retired",
        "_retired_bytes",
        "_ring",
        "_used",
        "_variants",
        "_vary",
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
        self._variants: dict[int, str | set[str]] = {}
        self._vary: dict[str, tuple[str, ...]] = {}

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
        keys = [primary] if primary in self._entries else []
        indexed = self._variants.get(hash(primary))
        prefix = primary + VARIANT_SEP
        if isinstance(indexed, str):
            if indexed.startswith(prefix):
                keys.append(indexed)
        elif indexed is not None:
            keys.extend(k for k in indexed if k.startswith(prefix))
        return keys

    def vary(self, base_key: str) -> tuple[str, ...] | None:
        return self._vary.get(base_key)

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        if self._has_under(base_key):
            self._vary[base_key] = names

    def _link(self, entry: Entry, size: int) -> None:
        key = entry.key
        self._entries[key] = entry
        self._used += size
        i = key.find(VARIANT_SEP)
        if i >= 0:
            h = hash(key[:i])
            indexed = self._variants.get(h)
            if indexed is None:
                self._variants[h] = key
            elif isinstance(indexed, str):
                self._variants[h] = {indexed, key}
            else:
                indexed.add(key)

    def _unlink(self, entry: Entry, forget_vary: bool = True) -> None:
        key = entry.key
        del self._entries[key]
        self._used -= entry.size
        i = key.find(VARIANT_SEP)
        if i >= 0:
            h = hash(key[:i])
            indexed = self._variants[h]
            if isinstance(indexed, str):
                del self._variants[h]
            else:
                indexed.remove(key)
                if len(indexed) == 1:
                    self._variants[h] = indexed.pop()
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
        if base_key in self._entries:
            return True
        i = base_key.find(VARIANT_SEP)
        prefix = base_key + VARIANT_SEP
        return any(k.startswith(prefix) for k in self.variants(base_key if i < 0 else base_key[:i]))

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
                    return
            hand += 1

    def _compact(self) -> None:
        retired = self._retired
        ring = self._ring
        self._hand = sum(1 for e in ring[: self._hand] if e is not None and e not in retired)
        self._ring = [e for e in ring if e is not None and e not in retired]
        retired.clear()
        self._retired_bytes = 0
