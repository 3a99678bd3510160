"""The interface of a cache tier.

Rules of this module:
- A tier maps keys to entries within a byte budget: ``bytes_used`` is the sum of ``Entry.size`` over
  the stored entries and never exceeds ``budget`` once a call returns. ``put`` evicts as needed; an
  entry larger than the whole budget is not stored, and the entry it would have replaced is dropped
  (the origin has sent something newer, the old response must not be served).
- Keys: a primary key (scheme, host, path, query) optionally followed by variant parts, each
  starting with ``VARIANT_SEP``. A *base key* is a primary key plus the variant parts the cache key
  options add (device type, country, ...); the response's Vary adds further parts after it. An entry
  is *under* a base key when its key equals it or continues it with ``VARIANT_SEP``.
- ``get`` is the hit path and informs the eviction policy; ``peek`` never does, so administrative
  reads (purge, debug, revalidation) do not keep an entry alive.
- The Vary field names of a base key are remembered only while an entry is stored under it: they go
  with the fill of the variant, ``put(entry, vary=(base key, names))``, which records them right
  after the entry; ``set_vary`` is for names set without a fill (ignored when nothing is under the
  base key). The names go with the last entry under that base key, whatever removed it.
- A stored entry's key, head and body do not change while it is stored (its size is charged once),
  nor do its zone and tags (the tier indexes them); its tags are distinct and already normalised, as
  ``edgecache.httpcache.tags.parse_tags`` makes them. Other fields may be changed in place through
  ``peek``; ``stale_since`` is best set through ``mark_stale``.
- Iteration is over a snapshot, so a caller may delete while iterating; so are the lists the purge
  selectors return (``variants``, ``keys_with_prefix``, ``keys_for_tag``, ``keys_for_zone``). The
  last two are paged (``after``, ``limit``), so that a purge of a million keys is reclaimed in
  slices without ever building the whole list at once.
- The purge selectors serve the reclaimer, which removes or marks stale what a purge covers after the
  epoch index has already hidden it: each answers from an index the tier keeps up to date on every
  store and removal, without a scan of the tier (memory: in O(log n) plus the keys returned).
  They see only stored entries, never evicted, deleted or replaced ones. Like ``peek``, they do not
  inform the eviction policy.
- ``keys_with_prefix`` is plain string-prefix matching on whole keys and ignores zones (a key's host
  is in the key, and zones own disjoint hosts); ``keys_for_tag`` and ``keys_for_zone`` are per zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from edgecache.store.entry import Entry

VaryNames = tuple[str, tuple[str, ...]]
"""A fill's base key and the Vary field names its response named, stored with it (``Tier.put``)."""


class Tier(Protocol):
    """A store of entries with a byte budget and an eviction policy."""

    @property
    def budget(self) -> int:
        """Bytes this tier may hold (sum of ``Entry.size``)."""
        ...

    @property
    def bytes_used(self) -> int:
        """Bytes currently held (sum of ``Entry.size``)."""
        ...

    @property
    def evictions(self) -> int:
        """Entries removed by the eviction policy to make room (not deletes or replacements)."""
        ...

    def get(self, key: str) -> Entry | None:
        """The entry under ``key``, marked as used for the eviction policy."""
        ...

    def peek(self, key: str) -> Entry | None:
        """The entry under ``key``, without telling the eviction policy."""
        ...

    def put(self, entry: Entry, vary: VaryNames | None = None) -> bool:
        """Store ``entry`` under ``entry.key``, replacing any entry with that key, and with ``vary``
        (its base key, the URL's Vary field names) record those names right after it, as
        ``set_vary`` does. Returns whether the tier took the entry where the node's processes find
        it (memory: False for an entry larger than the budget; ``TierChain``: whether its disk
        took it)."""
        ...

    def delete(self, key: str, below: int | None = None) -> Entry | None:
        """Remove and return the entry under ``key``; with ``below`` (a purge's position), only an
        entry stored before it (one the purge covers: a newer fill of the key stays)."""
        ...

    def delete_primary(self, primary: str) -> int:
        """Remove every variant of one URL; return how many entries went."""
        ...

    def variants(self, primary: str) -> list[str]:
        """Keys of the stored entries whose primary key is ``primary``: the key equal to it and those
        continuing it with ``VARIANT_SEP`` (so ``http://h/a`` never yields ``http://h/ab``)."""
        ...

    def keys_with_prefix(self, prefix: str, after: str | None = None, limit: int | None = None) -> list[str]:
        """Keys of the stored entries that start with ``prefix``, in any zone, in key order; only those
        after ``after`` and at most ``limit`` of them when given (one page: the next starts after the
        last key returned, and a page shorter than ``limit`` is the last).

        The reclaimer passes ``scheme://host/path`` for a URL-prefix purge (every query string and
        variant follows), ``scheme://host/`` for a host purge."""
        ...

    def keys_for_tag(self, zone: str, tag: str) -> list[str]:
        """Keys of the stored entries of ``zone`` that carry ``tag`` (given normalised)."""
        ...

    def tag_size(self, zone: str, tag: str) -> int:
        """How many stored entries of ``zone`` carry ``tag`` (O(1)): ``keys_for_tag`` copies that many."""
        ...

    def keys_for_zone(self, zone: str, after: str | None = None, limit: int | None = None) -> list[str]:
        """Keys of every stored entry of ``zone`` (purge everything), in key order, paged as
        ``keys_with_prefix``."""
        ...

    def mark_stale(self, key: str, at: float) -> bool:
        """Soft-purge the entry under ``key``: stale from ``at``, or from its earlier ``stale_since``
        if it has one. Its freshness, place and visited bit are otherwise left alone. Returns whether
        an entry was stored under ``key``."""
        ...

    def vary(self, base_key: str) -> tuple[str, ...] | None:
        """The Vary field names learned for ``base_key``, or None when unknown."""
        ...

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        """Remember the Vary field names for ``base_key`` while an entry is stored under it."""
        ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Entry]: ...
