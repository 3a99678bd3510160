"""A stored partial response: some byte ranges of one representation (RFC 9111 §3.3, §3.4).

Rules of this module (the design is argued in docs/decisions/0013-partial-content.md):
- A :class:`PartialEntry` is an :class:`~edgecache.store.entry.Entry` with status 206, an empty
  ``body`` and the bytes it holds in ``parts``: ``(first, data)`` pairs, sorted and disjoint, all
  inside ``0..length-1``. Adjacent parts are not joined: a new part adds only the bytes not yet
  held, so storing the n-th range copies that range, never the megabytes held already (a player
  reading a video in 64 KiB ranges would otherwise copy the whole prefix on every range). A
  range across adjacent parts is answered by joining just its slices; complete parts are joined
  once, into the full entry's body. Its ``head`` is
  the newest partial response's fields without Content-Range, which every answer computes anew.
- It is stored under its full entry's key plus :data:`PARTIAL_SUFFIX`, a variant part no request
  key can have. So the hit path for full objects never meets one, and every purge selector still
  finds it: it has the URL's primary key, host, path, tags and zone like any variant.
- Like every entry it is immutable while stored: combining a new part makes a new entry that
  replaces the old one, so the tier charges and refunds the same size.
- ``validator`` is the strong validator both parts must share to be combined (see
  ``edgecache.httpcache.ranges.strong_validator``); "" when the response had none.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from edgecache.store.blocks import slack
from edgecache.store.entry import ENTRY_OVERHEAD, VARIANT_SEP, Entry, init_values, tags_charge

PARTIAL_SUFFIX = VARIANT_SEP + "partial"
"""Appended to a full entry's key. Variant parts are ``name=value``; this one has no ``=``."""

MAX_PARTS = 1024
"""Most parts one entry holds: a part that would add more is not combined (lookups stay short, and
scattered one-byte ranges cannot make an entry of millions of parts)."""

_SCAN_PARTS = 8
"""Up to this many parts a lookup scans them from the first; beyond, it bisects to its start."""

PART_OVERHEAD = 128
"""Bytes charged per held part beyond its data: on CPython 3.11 the pair tuple (56), its offset int
(28), the bytes object's header (33) and its slot in ``parts`` (8), rounded up."""


@dataclass(slots=True, eq=False)
class PartialEntry(Entry):
    """Some byte ranges of one response, as the cache keeps them."""

    length: int = 0
    """The representation's complete length (Content-Range's ``/length``)."""
    parts: tuple[tuple[int, bytes], ...] = ()
    validator: str = ""

    @property
    def size(self) -> int:
        """Bytes this entry is charged for against the tier's budget (each part's data as the
        allocator rounds it, as a full entry's body: ``edgecache.store.blocks``)."""
        data = 0
        for _, part in self.parts:
            n = len(part)
            data += n + slack(n)
        charged = data + PART_OVERHEAD * len(self.parts) + len(self.head) + len(self.key) + ENTRY_OVERHEAD
        return charged + tags_charge(self.tags)

    @property
    def held(self) -> int:
        """Bytes of the representation held."""
        return sum(len(data) for _, data in self.parts)

    @property
    def complete(self) -> bool:
        """Whether the parts add up to the whole representation (they never overlap)."""
        return self.held == self.length

    def covers(self, ranges: Iterable[tuple[int, int]]) -> bool:
        """Whether every inclusive ``(first, last)`` range is held, in one part or in adjacent ones."""
        return all(self._pieces(first, last) is not None for first, last in ranges)

    def slice(self, first: int, last: int) -> bytes:
        """The bytes ``first..last`` (inclusive); the range must be covered."""
        pieces = self._pieces(first, last)
        if pieces is None:
            raise ValueError(f"bytes {first}-{last} are not held")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _pieces(self, first: int, last: int) -> list[bytes] | None:
        """The slices of the parts that together hold ``first..last``, or None when a byte is missing."""
        pos = first
        out: list[bytes] = []
        parts = self.parts
        if len(parts) > _SCAN_PARTS:
            parts = parts[max(0, bisect_right(parts, first, key=_start) - 1) :]
        for start, data in parts:
            end = start + len(data)
            if end <= pos:
                continue
            if start > pos:
                return None
            out.append(data[pos - start : min(end, last + 1) - start])
            pos = end
            if pos > last:
                return out
        return None

    def joined_with(self, older: PartialEntry) -> tuple[tuple[int, bytes], ...]:
        """The older entry's parts plus the bytes of this entry's parts that they lack.

        Both have the same strong validator, so where they overlap the bytes are the same (RFC 9111
        §3.4). Adjacent parts stay separate: only the new bytes are copied, never what is held.
        """
        parts = list(older.parts)
        for start, data in self.parts:
            parts += _missing(parts, start, data)
            parts.sort(key=lambda p: p[0])
        return tuple(parts)

    @classmethod
    def holding(
        cls, entry: Entry, length: int, parts: tuple[tuple[int, bytes], ...], validator: str
    ) -> PartialEntry:
        """A partial entry with ``entry``'s fields (its body aside) holding ``parts``."""
        values = init_values(entry)
        values["status"] = 206
        values["body"] = b""
        values["visited"] = values["retired"] = False  # the tier's state of ``entry``, not of this one
        return cls(**values, length=length, parts=parts, validator=validator)

    def as_full(self, key: str) -> Entry:
        """The complete response these parts make, stored as a 200 under ``key`` (RFC 9111 §3.4)."""
        values = init_values(self)
        values.update(
            key=key, status=200, body=b"".join(data for _, data in self.parts), visited=False, retired=False
        )
        return Entry(**values)


def _missing(parts: list[tuple[int, bytes]], start: int, data: bytes) -> list[tuple[int, bytes]]:
    """The pieces of ``data`` (placed at ``start``) that the sorted, disjoint ``parts`` do not hold."""
    end = start + len(data)
    pos = start
    out: list[tuple[int, bytes]] = []
    for first, held in parts:
        last_end = first + len(held)
        if last_end <= pos:
            continue
        if first >= end:
            break
        if first > pos:
            out.append((pos, data[pos - start : first - start]))
        pos = last_end
        if pos >= end:
            return out
    if pos < end:
        out.append((pos, data[pos - start :]))
    return out


def _start(part: tuple[int, bytes]) -> int:
    return part[0]
