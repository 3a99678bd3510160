"""A stored partial response: some byte ranges of one representation (RFC 9111 §3.3, §3.4).

Rules of this module (the design is argued in docs/decisions/0013-partial-content.md):
- A :class:`PartialEntry` is an :class:`~edgecache.store.entry.Entry` with status 206, an empty
  ``body`` and the bytes it holds in ``parts``: ``(first, data)`` pairs, sorted, disjoint and not
  adjacent (adjacent or overlapping pieces are joined), all inside ``0..length-1``. Its ``head`` is
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

from collections.abc import Iterable
from dataclasses import dataclass, fields

from edgecache.store.entry import ENTRY_OVERHEAD, VARIANT_SEP, Entry

PARTIAL_SUFFIX = VARIANT_SEP + "partial"
"""Appended to a full entry's key. Variant parts are ``name=value``; this one has no ``=``."""

PART_OVERHEAD = 64
"""Bytes charged per held piece (a tuple and an int beside the data)."""


@dataclass(slots=True, eq=False)
class PartialEntry(Entry):
    """Some byte ranges of one response, as the cache keeps them."""

    length: int = 0
    """The representation's complete length (Content-Range's ``/length``)."""
    parts: tuple[tuple[int, bytes], ...] = ()
    validator: str = ""

    @property
    def size(self) -> int:
        """Bytes this entry is charged for against the tier's budget."""
        return self.held + PART_OVERHEAD * len(self.parts) + len(self.head) + len(self.key) + ENTRY_OVERHEAD

    @property
    def held(self) -> int:
        """Bytes of the representation held."""
        return sum(len(data) for _, data in self.parts)

    @property
    def complete(self) -> bool:
        """Whether the parts add up to the whole representation."""
        return len(self.parts) == 1 and self.parts[0][0] == 0 and len(self.parts[0][1]) == self.length

    def covers(self, ranges: Iterable[tuple[int, int]]) -> bool:
        """Whether every inclusive ``(first, last)`` range lies inside one held part."""
        return all(self._part_for(first, last) is not None for first, last in ranges)

    def slice(self, first: int, last: int) -> bytes:
        """The bytes ``first..last`` (inclusive); the range must be covered."""
        part = self._part_for(first, last)
        if part is None:
            raise ValueError(f"bytes {first}-{last} are not held")
        start, data = part
        return data[first - start : last - start + 1]

    def _part_for(self, first: int, last: int) -> tuple[int, bytes] | None:
        for start, data in self.parts:
            if start <= first and last < start + len(data):
                return start, data
        return None

    def joined_with(self, older: PartialEntry) -> tuple[tuple[int, bytes], ...]:
        """This entry's parts joined with an older entry's of the same strong validator, whose
        bytes are therefore the same wherever the two overlap (RFC 9111 §3.4)."""
        out: list[tuple[int, bytes]] = []
        for start, data in sorted([*older.parts, *self.parts], key=lambda p: p[0]):
            if out:
                prev_start, prev = out[-1]
                prev_end = prev_start + len(prev)
                if start <= prev_end:
                    if start + len(data) > prev_end:
                        out[-1] = (prev_start, prev + data[prev_end - start :])
                    continue
            out.append((start, data))
        return tuple(out)

    @classmethod
    def holding(
        cls, entry: Entry, length: int, parts: tuple[tuple[int, bytes], ...], validator: str
    ) -> PartialEntry:
        """A partial entry with ``entry``'s fields (its body aside) holding ``parts``."""
        values = {f.name: getattr(entry, f.name) for f in fields(Entry)}
        values["status"] = 206
        values["body"] = b""
        return cls(**values, length=length, parts=parts, validator=validator)

    def as_full(self, key: str) -> Entry:
        """The complete response these parts make, stored as a 200 under ``key`` (RFC 9111 §3.4)."""
        values = {f.name: getattr(self, f.name) for f in fields(Entry)}
        values.update(key=key, status=200, body=self.parts[0][1], visited=False)
        return Entry(**values)
