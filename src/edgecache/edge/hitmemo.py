"""Whole answers of large hot entries, kept for the second they stay true (the hit path's memo).

Why: a fresh hit on a body of 16 KiB or more left as two buffers (head, body) through
``transport.writelines``, which in uvloop builds a write context, takes a buffer of each piece and
calls ``writev``; a small body is joined to its head instead, one ``write``. Joining a large body
costs a copy of it per hit. The answer of a plain hit changes only with its Age and ttl, once a
second: so an entry hit twice in one second has its head and body joined once, and every later
hit of that second writes the same bytes object, one ``write`` as the bare server does
(docs/decisions/0001-data-plane-http-server.md, addendum "large hits, one write").

Rules:
- A memo hangs on its entry (``Entry.memo``: ``[fields, response]``) and is used only when the
  entry's varying fields, formatted for this hit, equal ``fields``: a wrong Age or ttl is never
  sent. An entry's status, head and body never change (a revalidation or a refill stores a new
  entry), and a purged or replaced entry is no longer found by a lookup, so its memo is never read
  again; its bytes stay counted until the next memo made a second or more later empties it.
- The first hit of a second only marks the entry (``[fields, None]``); the second makes the memo,
  or marks the entry as refused for that second (``[fields, b""]``, below). An entry hit once a
  second or less (a long tail of large objects) is never copied.
- Memory is bounded: the responses held by this process's memos are counted (``bytes``) and never
  exceed ``limit``. A memo made a second ago or more can no longer match (its Age has moved on) and
  is emptied at the next memo made; when the memos of the last second fill the budget, no memo is
  made and the hit is written as two buffers, so a working set larger than the budget costs what
  it did before, not a copy per hit. The memos are outside the memory tier's budget, as the key
  memo is; the tier counts the slot (``ENTRY_OVERHEAD``).
- Only bodies from ``HIT_MEMO_BODY_MIN`` to ``HIT_MEMO_BODY_MAX`` bytes are memoized: below, the
  body is joined with its head on every hit anyway; past it one entry would take a large share of
  the budget (the saving was measured at 64 KiB only: decision 0001's addendum).
"""

from __future__ import annotations

import time
from collections import deque

from edgecache.store.entry import Entry

HIT_MEMO_BODY_MIN = 16384
"""Smaller bodies are joined with their head on every hit (``Proxy._plain_hit``'s threshold)."""
HIT_MEMO_BODY_MAX = 256 << 10
HIT_MEMO_BYTES = 8 << 20
"""The most bytes of responses one process's memos hold (128 answers of 64 KiB)."""
MEMO_LIFE = 1.0
"""Seconds after which a memo's Age and ttl are certainly out of date."""

_monotonic = time.monotonic


class HitMemos:
    """The memos one process has made, oldest first, and the bytes they hold."""

    __slots__ = ("_held", "bytes", "limit")

    def __init__(self, limit: int = HIT_MEMO_BYTES) -> None:
        self._held: deque[tuple[float, list[bytes | None]]] = deque()
        """(when made, memo): every memo that holds a response (its entry's, or one its entry has
        replaced by a mark since)."""
        self.bytes = 0
        """Bytes of responses the memos hold now (at most ``limit``)."""
        self.limit = limit

    def answer(self, entry: Entry, fields: bytes, status_line: bytes) -> bytes:
        """``entry``'s whole answer (``status_line``, head, ``fields``, body) when its memo holds it
        for these ``fields``, made now on the second hit of their second; b"" when the caller writes
        head and body itself: the first hit of a second only marks the entry, and a refused one
        (``make``) stays refused for that second."""
        memo = entry.memo
        if memo is None or memo[0] != fields:
            entry.memo = [fields, None]
            return b""
        out = memo[1]
        if out is None:
            return self.make(entry, fields, (status_line, entry.head, fields, entry.body))
        return out

    def make(self, entry: Entry, fields: bytes, parts: tuple[bytes, bytes, bytes, bytes]) -> bytes:
        """``entry``'s whole answer (``parts`` joined), remembered while its varying fields are
        ``fields``; b"", with nothing joined, when the memos of the last second fill the budget
        (the entry is then marked so that its other hits of that second do not ask again)."""
        size = sum(map(len, parts))
        held = self._held
        now = _monotonic()
        while held:
            made, memo = held[0]
            if made > now - MEMO_LIFE:
                break  # and so is every memo after it
            held.popleft()
            self.bytes -= len(memo[1] or b"")
            # Emptied, also on the entry: no fields equal b"", so its next hit marks it anew.
            memo[0] = memo[1] = b""
        if self.bytes + size > self.limit:
            entry.memo = [fields, b""]
            return b""
        response = b"".join(parts)
        memo = entry.memo = [fields, response]
        held.append((now, memo))
        self.bytes += size
        return response
