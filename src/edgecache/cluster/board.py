"""The position board: ledger positions shared by the processes of one node, in shared memory.

Layout (unsigned 64-bit words in one anonymous shared mapping, a ``memfd`` the supervisor creates
and every worker inherits by file descriptor, so nothing is left on disk and two nodes on one
machine never meet):
- word 0, alone on its cache line: the *published* position, the seq of the newest purge the
  control plane has committed. Only the control plane writes it, after the commit and before the
  API answers; every worker reads it on every request.
- one cache line per worker slot: the position it has *applied* (its epoch index has every purge up
  to it) and the one it has *reclaimed*, written by that worker only, read by the control plane for
  ``/metrics``. A line per writer keeps one process's writes from invalidating another's reads.
- after the worker lines, :data:`FILL_SLOTS` words of fill outcomes, then :data:`CLAIM_SLOTS` words
  of fill claims (``cluster/fill_locks.py``, decisions 0021 and 0028), both read and written through
  ``_claims.SharedWords`` (atomic, bounds-checked). A worker's claims name its slot; the supervisor
  clears the claims of a worker it has reaped (:meth:`PositionBoard.clear_claims`) before it starts
  the slot's next worker, so no claim outlives its fetcher. Last, a line holding the node's random
  128-bit key for the claims' keyed hash (:attr:`PositionBoard.token_key`), written at creation.

An aligned 8-byte store is a single instruction on the platforms CPython runs on, so a reader sees
the old value or the new one, never a mix; positions only grow, so a stale read means "not behind
yet", which the next request corrects.
"""

from __future__ import annotations

import mmap
import os

from edgecache.cluster._claims import SharedWords

_LINE = 8  # words per 64-byte cache line
FILL_SLOTS = 4096
"""Words of the fill-outcome table (``cluster/fill_locks.py``)."""
CLAIM_SLOTS = 16384
"""Words of the fill-claim table (``cluster/fill_locks.py``): 128 KiB, so that two keys fetched at
once share a word rarely (with 100 fetches in flight, 0.6% of new claims)."""
HOLDER_BITS = 12
"""A claim's low bits: its holder's worker slot + 1 (``runtime.workers`` is at most 256)."""
_HOLDER_MASK = (1 << HOLDER_BITS) - 1
_APPLIED = 0
_RECLAIMED = 1


class PositionBoard:
    """The published position and each worker slot's applied and reclaimed positions."""

    __slots__ = ("_map", "claims", "fd", "fills", "slots", "token_key", "words")

    def __init__(self, fd: int, slots: int) -> None:
        """Map an existing board (a worker does this with the descriptor it inherited)."""
        self.fd = fd
        self.slots = slots
        self._map = mmap.mmap(fd, _total(slots))
        self.words = memoryview(self._map)[: _size(slots)].cast("Q")
        """The raw words; ``words[0]`` is the published position (read inline on the hit path)."""
        self.fills = SharedWords(self._map, _size(slots), FILL_SLOTS)
        """The fill-outcome table (``cluster/fill_locks.py``)."""
        self.claims = SharedWords(self._map, _size(slots) + FILL_SLOTS * 8, CLAIM_SLOTS)
        """The fill-claim table (``cluster/fill_locks.py``)."""
        at = _key_at(slots)
        self.token_key = (
            int.from_bytes(self._map[at : at + 8], "little"),
            int.from_bytes(self._map[at + 8 : at + 16], "little"),
        )
        """The node's key for the fill claims' SipHash (the same in every process of the node)."""

    @classmethod
    def create(cls, slots: int) -> PositionBoard:
        """A new zeroed board for ``slots`` workers. Its descriptor is close-on-exec: the supervisor
        passes it to each worker explicitly (``pass_fds``), and no other child (a fill writer, a
        helper program) inherits a writable view of every worker's position.

        ``slots`` must be below ``1 << HOLDER_BITS``: a claim names its holder as slot + 1 in its
        low ``HOLDER_BITS``, and a slot past them would name another slot's worker (whose claims
        it could release, and the supervisor clear)."""
        if slots >= 1 << HOLDER_BITS:
            raise ValueError(
                f"a position board holds at most {(1 << HOLDER_BITS) - 1} worker slots "
                f"(a fill claim names its holder in {HOLDER_BITS} bits), not {slots}"
            )
        fd = os.memfd_create("edgecache-positions")
        os.ftruncate(fd, _total(slots))
        os.pwrite(fd, os.urandom(16), _key_at(slots))
        return cls(fd, slots)

    @property
    def published(self) -> int:
        """The newest committed purge the control plane has announced."""
        return int(self.words[0])

    def publish(self, seq: int) -> None:
        """Announce a committed purge (control plane only)."""
        self.words[0] = seq

    def applied(self, slot: int) -> int:
        """The position worker ``slot`` has applied."""
        return int(self.words[(slot + 1) * _LINE + _APPLIED])

    def set_applied(self, slot: int, seq: int) -> None:
        """Worker ``slot`` has every purge up to ``seq`` in its index."""
        self.words[(slot + 1) * _LINE + _APPLIED] = seq

    def reclaimed(self, slot: int) -> int:
        """The position worker ``slot`` has reclaimed."""
        return int(self.words[(slot + 1) * _LINE + _RECLAIMED])

    def set_reclaimed(self, slot: int, seq: int) -> None:
        """Worker ``slot`` has reclaimed every purge up to ``seq``."""
        self.words[(slot + 1) * _LINE + _RECLAIMED] = seq

    def clear_claims(self, slot: int) -> int:
        """Clear every fill claim worker ``slot`` holds (the supervisor, once it has reaped that
        worker and before it starts the slot's next one): how many there were."""
        return self.claims.clear(_HOLDER_MASK, slot + 1)

    def unmap(self) -> None:
        """Release this mapping of the board and leave the descriptor open (another mapping of it
        in this process uses it)."""
        self.words.release()
        self.fills.release()
        self.claims.release()
        self._map.close()

    def close(self) -> None:
        """Unmap and close the descriptor."""
        self.unmap()
        os.close(self.fd)


def _size(slots: int) -> int:
    return (slots + 1) * _LINE * 8


def _key_at(slots: int) -> int:
    return _size(slots) + (FILL_SLOTS + CLAIM_SLOTS) * 8


def _total(slots: int) -> int:
    return _key_at(slots) + _LINE * 8
