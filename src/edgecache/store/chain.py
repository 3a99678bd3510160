"""Memory in front of disk: the tier the data plane sees when a node has a persistent tier.

Rules of this module:
- ``get``: the memory tier; on a miss, the disk cache, then the zone's Cache Reserve when it is on.
  ``Entry.tier`` names where an entry read from disk came from (the answer says so in
  ``Cache-Status``; the proxy clears it). It is promoted into memory, so that its next hit is a
  memory hit, when memory has room for it, and otherwise only on its second read from disk among
  the last ``len(memory)`` or so (a doorkeeper, as TinyLFU's): when memory is full, promoting
  every read evicts an entry per disk hit, and under traffic spread wider than memory (what
  reaches the disk) that churn cost more than the disk read itself and bought few memory hits.
- Writes go to both: a fill is stored in memory and written through to disk (and to the reserve
  when its zone's reserve is on and the object is eligible); a delete removes it from both. Stored
  byte ranges (``PartialEntry``) stay in memory only: the disk keeps whole responses.
- Objects larger than the memory tier's ``max_object_bytes`` live on disk only (``ChunkedEntry``,
  ``store/chunked.py``): a fill writes them through :meth:`open_large`, and a hit streams them from
  disk without promoting them.
- With ``admit_second_fill`` (``storage.disk.admission: second_fill``, decision 0018), a fill is
  written to disk only when its key was filled before within the last ``len(memory)`` fills or so
  (a second doorkeeper, per process): a one-hit wonder stays in memory and costs the disk nothing.
  Memory evictions then write nothing back (what was never admitted must not reach the disk that
  way). Large objects (``ChunkedEntry``) still go to disk: they cannot live in memory.
- Otherwise a memory eviction writes the entry back to disk only when it is worth keeping: still fresh, no
  longer on disk (the disk evicted it while memory served it), and covered by no purge
  (``still_valid``, which raises its ``stored_seq`` to the purges it was checked against: the disk
  drops a put below the position it has reclaimed, since a purge it has already applied may cover
  it, see ``store/disk.py``). Otherwise the disk copy is already there, and its place in the
  disk's order is renewed by disk reads, not by evictions.
- A purge's removal of one key (``delete`` with ``below``, the purge's position) removes only what
  it covers: the memory entry and the disk records stored before the purge. The disk's check is
  the writer's, when the delete commits: by then another worker process may have stored a newer
  fill of the key, which the purge does not cover and which must stay (decision 0009, addendum on
  late purge removals). Any other delete (a replaced object, a Vary change) removes whatever is
  there.
- The purge selectors (``variants``, ``keys_*``), ``peek`` and ``mark_stale`` are the memory tier's:
  the reclaimer covers the disk with its own job (see ``edge/reclaimer.py``), inside the disk
  writer's transactions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from edgecache.store.base import VaryNames
from edgecache.store.chunked import ORPHAN_AGE, ChunkedEntry, LargeWrite
from edgecache.store.disk import DiskStore, Lookup
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

DISK = b"disk"
DOORKEEPER_MIN = 1024
"""Fewest keys a doorkeeper generation holds (it holds about as many as memory has entries)."""
RESERVE = b"reserve"


class Doorkeeper:
    """Keys seen once recently, in two generations of about ``size()`` keys each (TinyLFU's
    doorkeeper, exact): :meth:`seen_before` says whether a key is seen for the second time."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()
        self._max = DOORKEEPER_MIN

    def seen_before(self, key: str) -> bool:
        """True (and the key forgotten) when ``key`` was seen since the older generation began;
        otherwise remember it and return False."""
        seen = self._seen
        if key in seen:
            seen.discard(key)
            return True
        if key in self._seen_before:
            self._seen_before.discard(key)
            return True
        if len(seen) >= self._max:
            self._seen_before, self._seen = seen, {key}
            # Sized again at each change of generation.
            self._max = max(DOORKEEPER_MIN, self._size())
            return False
        seen.add(key)
        return False


class TierChain:
    """Memory tier as L1, persistent tier as L2 (implements ``edgecache.store.base.Tier``)."""

    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskStore,
        *,
        reserve_on: Callable[[str], bool],
        reserve_eligible: Callable[[Entry], bool],
        still_valid: Callable[[Entry], bool],
        admit_second_fill: bool = False,
    ) -> None:
        """``still_valid(entry)``: whether no purge covers an entry memory evicts, its ``stored_seq``
        raised to the purges it was checked against when none does (run on the event loop).
        ``admit_second_fill``: write a fill to disk only on its key's second fill (module rules)."""
        self.memory = memory
        self._still_valid = still_valid
        self.disk = disk
        self._reserve_on = reserve_on
        self._eligible = reserve_eligible
        if not admit_second_fill:
            memory.on_evict = self._evicted
        self._promote = Doorkeeper(memory.__len__)
        """Keys read from disk once and not promoted."""
        self._admit_fill = Doorkeeper(memory.__len__) if admit_second_fill else None
        """Keys filled once and not written to disk (``admit_second_fill``)."""
        self._looked_up: Lookup | None = None
        """What ``vary`` read from disk for a base key without Vary names, for the ``get`` of that
        key that follows it on a memory miss (one read transaction instead of two); any other call
        that reads or changes the tier drops it."""
        # Chunks of writes a crash interrupted: swept at start, then now and again by open_large.
        disk.sweep_orphans()
        self._swept = time.monotonic()

    @property
    def budget(self) -> int:
        return self.memory.budget

    @property
    def bytes_used(self) -> int:
        return self.memory.bytes_used

    @property
    def evictions(self) -> int:
        return self.memory.evictions

    def get(self, key: str) -> Entry | None:
        looked_up, self._looked_up = self._looked_up, None
        if looked_up is None or looked_up[0] != key:
            # Otherwise ``vary`` has just found memory without the key (a memory miss, and nothing
            # has changed memory since: every change drops ``_looked_up``).
            entry = self.memory.get(key)
            if entry is not None:
                return entry
        # Positional (as the two calls below): keywords cost more, on every memory miss.
        found = self.disk.get(key, self._reserve_on, looked_up)
        if found is None:
            return None
        entry, from_reserve = found
        entry.tier = RESERVE if from_reserve else DISK
        if type(entry) is not ChunkedEntry and self._admit(key, entry):
            self.memory.put(entry)
        return entry

    def _admit(self, key: str, entry: Entry) -> bool:
        """Whether an entry read from disk goes into memory (see the module's rules)."""
        memory = self.memory
        if memory.bytes_used + entry.size <= memory.budget:
            return True
        return self._promote.seen_before(key)

    def peek(self, key: str) -> Entry | None:
        return self.memory.peek(key)

    def put(self, entry: Entry, vary: VaryNames | None = None) -> bool:
        """Store ``entry`` (see the module's rules) with its Vary names (``Tier.put``); returns
        whether the disk took it (not admitted, a part, or dropped by a full queue: False), which
        the other processes wait for there."""
        self._looked_up = None
        if type(entry) is ChunkedEntry:
            # Replaces whatever memory held under the key, as a put into memory would.
            self.memory.delete(entry.key)
            if vary is not None:
                self.memory.set_vary(*vary)
            return self.disk.put(entry, vary=vary)
        self.memory.put(entry, vary)
        if type(entry) is Entry and (self._admit_fill is None or self._admit_fill.seen_before(entry.key)):
            reserve = self._reserve_on(entry.zone) and self._eligible(entry)
            return self.disk.put(entry, reserve, vary)
        if vary is not None:
            # Not after a fill of the disk's ring: the writer thread records them.
            self.disk.set_vary(*vary)
        return False

    def open_large(self) -> LargeWrite:
        """Start writing an object too large for memory to disk (``store/chunked.py``): store the
        entry :meth:`LargeWrite.finish` returns with :meth:`put`, or :meth:`LargeWrite.abandon` it."""
        if time.monotonic() - self._swept > ORPHAN_AGE:
            self._swept = time.monotonic()
            self.disk.sweep_orphans()
        return LargeWrite(self.disk)

    def delete(self, key: str, below: int | None = None) -> Entry | None:
        self._looked_up = None
        # Bounded or not, queued for the disk: the writer checks the bound in its transaction,
        # where another process's newer fill may have arrived since (module rules).
        self.disk.delete(key, below)
        return self.memory.delete(key, below)

    def delete_primary(self, primary: str) -> int:
        self._looked_up = None
        self.disk.delete_primary(primary)
        return self.memory.delete_primary(primary)

    def variants(self, primary: str) -> list[str]:
        return self.memory.variants(primary)

    def keys_with_prefix(self, prefix: str, after: str | None = None, limit: int | None = None) -> list[str]:
        return self.memory.keys_with_prefix(prefix, after, limit)

    def keys_for_tag(self, zone: str, tag: str) -> list[str]:
        return self.memory.keys_for_tag(zone, tag)

    def tag_size(self, zone: str, tag: str) -> int:
        return self.memory.tag_size(zone, tag)

    def keys_for_zone(self, zone: str, after: str | None = None, limit: int | None = None) -> list[str]:
        return self.memory.keys_for_zone(zone, after, limit)

    def mark_stale(self, key: str, at: float) -> bool:
        return self.memory.mark_stale(key, at)

    def vary(self, base_key: str) -> tuple[str, ...] | None:
        names = self.memory.vary(base_key)
        if names is not None or self.memory.peek(base_key) is not None:
            # An entry under the bare base key means the URL has no Vary: no disk read on that hit.
            return names
        names, self._looked_up = self.disk.lookup(base_key, self._reserve_on)
        return names

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        self._looked_up = None
        self.memory.set_vary(base_key, names)
        self.disk.set_vary(base_key, names)

    def __len__(self) -> int:
        return len(self.memory)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.memory)

    def _evicted(self, entry: Entry) -> None:
        if (
            type(entry) is Entry
            and entry.ttl(time.time()) > 0
            and not self.disk.has(entry.key)
            and self._still_valid(entry)
        ):
            self.disk.put(entry)
