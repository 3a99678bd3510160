"""The stored object: one response, as the cache keeps it.

Rules of this module:
- An entry is what a tier stores and what invalidation reasons about. It keeps everything a purge
  selector needs (zone, key, tags, the ledger position when its origin fetch started) and everything
  the cache policy needs to answer without re-parsing (times, freshness, validators).
- The response head is kept as one pre-encoded block of header lines, not a list of tuples: it is
  what the hit path writes, and one bytes object per entry instead of a list of tuples of strings
  (the per-object overhead `bench/run.py --memory` reports includes it).
- The key encodes scheme, host, path and query, then the variant parts after a NUL byte; the primary
  key (all variants of one URL) is the part before the first NUL. Host and path are derived from the
  key rather than stored twice (see ``edgecache.httpcache.key``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from edgecache.store.blocks import JEMALLOC, slack

VARIANT_SEP = "\x00"


@dataclass(slots=True, eq=False)
class Entry:
    """One cached response (one variant of one URL)."""

    zone: str
    key: str
    status: int
    head: bytes
    """Header lines (``Name: value\\r\\n`` each) to send on a hit, without Age, Date-independent
    cache status headers, Content-Length or hop-by-hop headers."""
    body: bytes
    tags: tuple[str, ...]
    stored_seq: int
    """Purge-ledger position when the origin fetch that produced this entry started."""
    response_time: float
    initial_age: float
    """corrected_initial_age of RFC 9111 §4.2.3, computed once at store time."""
    freshness_lifetime: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    """must-revalidate, proxy-revalidate, or s-maxage present: never served stale (RFC 9111 §4.2.4)."""
    no_cache: bool = False
    """Stored but must be validated before every use (RFC 9111 §5.2.2.4)."""
    auth_ok: bool = False
    """May answer requests that carry Authorization (RFC 9111 §3.5)."""
    length_known: bool = False
    """The origin's response carried a Content-Length (not chunked, not until-close): Cloudflare's
    Cache Reserve admits only such responses."""
    stale_since: float | None = None
    """Set by a soft purge: from this instant the entry is stale whatever its freshness said."""
    visited: bool = field(default=False)
    """Eviction-policy bit (SIEVE), owned by the memory tier."""
    retired: bool = field(default=False)
    """Owned by the memory tier: removed from it, its ring slot not cleared yet. Set only while a tier
    holds the object in its ring, so an entry is never copied (``dataclasses.replace``) from one
    that a tier holds."""
    tier: bytes = b""
    """Set when the entry was just read from the persistent tier (``b"disk"``, ``b"reserve"``): the
    answer that uses it first says so in Cache-Status, then clears it."""
    memo: list[bytes | None] | None = field(default=None, init=False, repr=False)
    """Owned by the data plane's hit path (``edge/hitmemo.py``): ``[fields, response]``, a large
    entry's whole answer for the Age and ttl in ``fields`` (or a mark, without one). Not an
    ``__init__`` argument, so that no entry built from another (``dataclasses.replace``, a partial
    or chunked copy) inherits it. A list of bytes (or None): no reference cycle, so the entry may
    stay untracked by the collector (``store/untracked.py``)."""

    @property
    def etag(self) -> str | None:
        """The stored ETag (read from the head: conditionals are rare next to plain hits, and two
        more strings per entry would cost ~150 bytes of a ~1 KB per-object budget)."""
        return _head_field(self.head, b"\r\netag:")

    @property
    def last_modified(self) -> str | None:
        """The stored Last-Modified (read from the head, as :attr:`etag`)."""
        return _head_field(self.head, b"\r\nlast-modified:")

    @property
    def primary(self) -> str:
        """The URL-level key shared by every variant of this URL."""
        i = self.key.find(VARIANT_SEP)
        return self.key if i < 0 else self.key[:i]

    @property
    def size(self) -> int:
        """Bytes this entry is charged for against the tier's budget (the body as the allocator rounds
        it: ``edgecache.store.blocks``)."""
        # Computed on every put and removal: the allocator's slack only where there is one, and
        # the tags' charge (``tags_charge``, their characters counted by one join) inline, 4.9k →
        # 2.5k instructions on glibc (decision 0002, addendum 8).
        body = len(self.body)
        charged = body + len(self.head) + len(self.key) + ENTRY_OVERHEAD
        if JEMALLOC:
            charged += slack(body)
        tags = self.tags
        if tags:
            charged += TAG_OVERHEAD * len(tags) + len("".join(tags))
        return charged

    def age(self, now: float) -> float:
        """current_age of RFC 9111 §4.2.3."""
        return self.initial_age + (now - self.response_time)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left (negative once stale); a soft purge makes it stale at once."""
        if self.stale_since is not None and now >= self.stale_since:
            return min(self.freshness_lifetime - self.age(now), self.stale_since - now)
        return self.freshness_lifetime - self.age(now)


def _head_field(head: bytes, marker: bytes) -> str | None:
    """The value of the first field named by ``marker`` (``b"\\r\\nname:"``, lower-case) in a head."""
    lowered = b"\r\n" + head.lower()
    i = lowered.find(marker)
    if i < 0:
        return None
    start = i + len(marker) - 2
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip().decode("latin-1")


def init_values(entry: Entry) -> dict[str, Any]:
    """``entry``'s constructor arguments, for an entry built from it (a partial or chunked copy):
    what is not an ``__init__`` field (the hit path's ``memo``) is not carried over."""
    return {f.name: getattr(entry, f.name) for f in fields(Entry) if f.init}


ENTRY_OVERHEAD = 376
"""Bytes an entry costs beyond its body, head and key strings and its tags: the entry object (its
``memo`` slot included: 8 B), the bytes and str object headers, and the tier's dict, ring and
key-index slots. Measured with
tracemalloc by ``bench/tier_accounting.py`` (docs/decisions/0002-memory-tier-eviction.md), so that
a full tier's real use is within 5% of its budget."""

TAG_OVERHEAD = 110
"""Bytes each tag costs beyond its characters: its string object, its slot in the entry's tuple, and
its place in the tier's tag index (measured as ``ENTRY_OVERHEAD``)."""


def tags_charge(tags: tuple[str, ...]) -> int:
    """Bytes an entry's tags are charged for (``TAG_OVERHEAD`` and the characters of each)."""
    return TAG_OVERHEAD * len(tags) + sum(map(len, tags))
