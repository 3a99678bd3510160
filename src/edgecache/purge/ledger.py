"""The purge ledger, in memory: the order purges happen in.

Rules of this module:
- Every accepted purge gets a sequence number ``seq``, strictly increasing across all zones of a node
  (one ledger per node or cluster, not per zone). ``position`` is the last seq handed out or restored;
  0 before the first purge.
- An entry records ``stored_seq = position`` when its origin fetch *starts*; a purge with seq S covers
  entries with ``stored_seq < S``. So a response whose fetch began before a matching purge was
  accepted is covered by it, even if it arrives after (no purge/fetch race).
- The durable write happens first, outside this module (the database layer); this object mirrors it.
  ``append`` without a seq numbers the purge ``position + 1`` (single writer: the embedded node); with
  an explicit seq, or through ``restore``, it takes the number the database assigned, which may skip
  values (a PostgreSQL sequence leaves gaps on rollback) but never goes back: a seq not above
  ``position`` raises ValueError, so a duplicate or out-of-order delivery is caught, not applied twice.
- The ledger keeps the purges it has not been told to forget, so the reclaimer and a catching-up peer
  can ask for the ones after a position; ``forget`` drops them once every node has them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from edgecache.purge.selectors import Mode, Purge, Selector


class Ledger:
    """Sequence numbering and the recent tail of the purge log."""

    __slots__ = ("_position", "_purges", "_seqs")

    def __init__(self, position: int = 0) -> None:
        if position < 0:
            raise ValueError(f"ledger position must be >= 0, got {position}")
        self._position = position
        self._purges: list[Purge] = []
        self._seqs: list[int] = []  # parallel to _purges, for bisect

    @property
    def position(self) -> int:
        """The last sequence number handed out or restored (0 when none)."""
        return self._position

    def append(
        self, zone: str, mode: Mode, selectors: Iterable[Selector], at: float, *, seq: int | None = None
    ) -> Purge:
        """Number a new purge (``position + 1`` unless ``seq`` is given) and record it.

        Raises ValueError for an empty selector list or a ``seq`` not above ``position``.
        """
        purge = Purge(self._position + 1 if seq is None else seq, zone, Mode(mode), tuple(selectors), at)
        return self.restore(purge)

    def restore(self, purge: Purge) -> Purge:
        """Record a purge that already has its seq (read back from the database, or from a peer)."""
        if purge.seq <= self._position:
            raise ValueError(f"purge seq {purge.seq} is not after ledger position {self._position}")
        if not purge.selectors:
            raise ValueError("a purge needs at least one selector")
        self._position = purge.seq
        self._purges.append(purge)
        self._seqs.append(purge.seq)
        return purge

    def since(self, seq: int) -> list[Purge]:
        """The retained purges with a seq above ``seq``, oldest first."""
        return self._purges[bisect_right(self._seqs, seq) :]

    def forget(self, upto_seq: int) -> int:
        """Drop retained purges with seq <= ``upto_seq``; returns how many went. Position is kept."""
        n = bisect_right(self._seqs, upto_seq)
        del self._purges[:n]
        del self._seqs[:n]
        return n

    def __len__(self) -> int:
        """Number of retained purges."""
        return len(self._purges)
