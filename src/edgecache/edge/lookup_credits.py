"""Entries a lookup dealt with before the reclaimer did, credited to the purge that covered them.

Theory of operation
-------------------
A purge is in effect as soon as the epoch index has it: a request that reaches a covered entry
before the reclaimer does removes it there (hard) or marks it stale (soft). The reclaimer then
finds nothing to count for a removed entry, or finds a soft-marked one already replaced by its
revalidation, and the purge's ``matched`` count would depend on which of the two got there first.
So the lookup records what it did here, and the reclaimer adds those records to its own counts.

Rules:
- Only what a lookup does is recorded (the proxy's ``_purge_check``, off the hit path: it runs only
  for an entry older than the index's position, and records only when the verdict is not None).
- A record goes to the first purge, in reclaim order, that covers it (``matches`` on one of its
  selectors and ``stored_seq`` below its seq), under the first such selector: the purge that would
  have counted it had the reclaimer got there first.
- Hard removals are claimed when the purge is finished, split by the tier the lookup found the
  entry in: memory (counted with the reclaimer's memory pass) or disk (counted with its disk job);
  the reclaimer takes the larger of the two sums as it does for its own counts, so an object the
  lookup removed from both tiers is counted once.
- The disk job and a lookup never both count one record: the job does not count a record whose
  delete a lookup has queued and not yet committed (``WriteView.removing``; it removes it all the
  same, see there), and while the job's transaction is open a lookup does not read a record the job
  is removing (``WriteView.taking``). A record the job finds under a key whose delete has committed
  was put after that delete, so no lookup credited it, and the job counts it.
- A soft mark leaves the entry stored, so the reclaimer's memory pass counts it itself: it is
  credited only when, right after that pass, the memory tier no longer holds that very entry (it
  was revalidated, refetched or evicted in between).
- A record whose causing purge (the verdict's seq) is finished and that no purge claimed is
  dropped: nothing left can claim it, so the records cannot accumulate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgecache.purge.selectors import Purge, Selector, matches
from edgecache.store.entry import Entry


@dataclass(slots=True)
class _Record:
    entry: Entry
    stored_seq: int
    cause: int
    hard: bool
    on_disk: bool


class LookupCredits:
    """What lookups removed or marked stale, until a reclaimed purge claims it."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: list[_Record] = []

    def __len__(self) -> int:
        return len(self._records)

    def removed(self, entry: Entry, cause: int) -> None:
        """A lookup deleted ``entry`` because purge ``cause`` (a hard one) covers it."""
        self._records.append(_Record(entry, entry.stored_seq, cause, True, bool(entry.tier)))

    def marked(self, entry: Entry, cause: int) -> None:
        """A lookup marked ``entry`` stale because purge ``cause`` (a soft one) covers it."""
        self._records.append(_Record(entry, entry.stored_seq, cause, False, bool(entry.tier)))

    def claim_soft(self, purge: Purge, stored: Callable[[str], Entry | None]) -> dict[Selector, int]:
        """After the reclaimer's memory pass of ``purge``: the soft marks it covers whose entry the
        memory tier (``stored``, a peek) no longer holds, so that pass could not count them."""
        return self._claim(purge, lambda r: not r.hard and stored(r.entry.key) is not r.entry)

    def claim_hard(self, purge: Purge, *, on_disk: bool) -> dict[Selector, int]:
        """The hard removals ``purge`` covers whose entry the lookup found in memory (``on_disk``
        False) or read from the persistent tier (True)."""
        return self._claim(purge, lambda r: r.hard and r.on_disk == on_disk)

    def forget(self, upto: int) -> None:
        """Drop the records caused by purges up to ``upto``: those are finished."""
        if self._records:
            self._records = [r for r in self._records if r.cause > upto]

    def _claim(self, purge: Purge, wanted: Callable[[_Record], bool]) -> dict[Selector, int]:
        counts: dict[Selector, int] = {}
        if not self._records:
            return counts
        kept: list[_Record] = []
        for record in self._records:
            selector = _covering(purge, record) if wanted(record) else None
            if selector is None:
                kept.append(record)
            else:
                counts[selector] = counts.get(selector, 0) + 1
        self._records = kept
        return counts


def _covering(purge: Purge, record: _Record) -> Selector | None:
    if record.stored_seq >= purge.seq:
        return None
    entry = record.entry
    for selector in purge.selectors:
        if matches(selector, purge.zone, entry.zone, entry.key, entry.tags):
            return selector
    return None
