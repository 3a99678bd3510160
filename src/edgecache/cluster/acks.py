"""Acknowledgements from many appliers, aggregated into one per purge.

Rules:
- A purge is owed by every applier that has *joined* at a position below its seq: that applier
  could hold entries the purge covers. An applier that joins at or after the seq started with
  nothing the purge covers (its memory tier starts empty; what it fetches afterwards is stored
  at a later position), so it owes nothing for it.
- An applier that leaves (its process died or stopped) owes nothing more: its memory went with it.
- When nothing more is owed, ``done(purge, matched)`` receives the purge with the matched counts
  summed over the appliers, per selector: the tasks become ``success``.
- Counts arrive as a list aligned with the purge's selectors: every applier derives the selectors
  of a ledger row the same way (``PurgeService.replay``), so the order is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgecache.purge.selectors import Purge, Selector


@dataclass(slots=True)
class _Owed:
    purge: Purge
    waiting: set[int]
    counts: list[int] = field(default_factory=list)


class AckBook:
    """Who still owes an acknowledgement for which purge."""

    def __init__(self, done: Callable[[Purge, dict[Selector, int]], None]) -> None:
        self._done = done
        self._joined: dict[int, int] = {}  # applier -> position it joined at
        self._owed: dict[int, _Owed] = {}  # seq -> what is still owed

    @property
    def outstanding(self) -> int:
        """Purges some applier has not acknowledged yet."""
        return len(self._owed)

    def joined(self, applier: int, position: int) -> None:
        """``applier`` started serving with every purge up to ``position`` applied."""
        self._joined[applier] = position
        for seq, owed in self._owed.items():
            if position < seq:
                owed.waiting.add(applier)

    def left(self, applier: int) -> None:
        """``applier`` is gone; it owes nothing more."""
        self._joined.pop(applier, None)
        for seq in list(self._owed):
            self._settle(seq, applier, ())

    def published(self, purge: Purge) -> None:
        """A purge was committed and announced; every joined applier behind it owes an ack."""
        waiting = {a for a, position in self._joined.items() if position < purge.seq}
        self._owed[purge.seq] = _Owed(purge, waiting, [0] * len(purge.selectors))
        if not waiting:
            self._finish(purge.seq)

    def acked(self, applier: int, seq: int, counts: Sequence[int]) -> None:
        """``applier`` applied and reclaimed purge ``seq``, matching ``counts`` entries per selector."""
        self._settle(seq, applier, counts)

    def _settle(self, seq: int, applier: int, counts: Sequence[int]) -> None:
        owed = self._owed.get(seq)
        if owed is None or applier not in owed.waiting:
            return
        owed.waiting.discard(applier)
        for i, n in enumerate(counts[: len(owed.counts)]):
            owed.counts[i] += n
        if not owed.waiting:
            self._finish(seq)

    def _finish(self, seq: int) -> None:
        owed = self._owed.pop(seq)
        self._done(owed.purge, dict(zip(owed.purge.selectors, owed.counts, strict=True)))
