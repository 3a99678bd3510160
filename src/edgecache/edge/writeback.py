"""Whether an entry memory evicts may be written back to the persistent tier (``TierChain``).

The disk drops a put whose ``stored_seq`` is below the position it has reclaimed: a purge it has
already applied may cover the entry, and that purge is not replayed after a restart
(``store/disk.py``). An entry that was simply not read since the last purge would be dropped too,
so the eviction checks it against the epoch index first, on the event loop, as a lookup would:
- no purge covers it: written back, its ``stored_seq`` raised to the index's position (it has been
  checked against every purge up to there);
- a hard purge covers it: not written (the purge's memory pass has not reached it yet);
- a soft purge covers it: not written either. The write-back keeps only fresh entries, and a
  soft-purged one is stale from the purge's time; written stale, the disk would keep a copy that
  only a revalidation can use, whose mark the purge's own passes (memory, then disk) never counted.
"""

from __future__ import annotations

from collections.abc import Callable

from edgecache.purge.index import EpochIndex
from edgecache.store.entry import Entry


def still_valid(index: EpochIndex) -> Callable[[Entry], bool]:
    """The check ``TierChain`` runs on an evicted entry before writing it back (see above)."""

    def check(entry: Entry) -> bool:
        if index.check(entry.zone, entry.key, entry.tags, entry.stored_seq) is not None:
            return False
        entry.stored_seq = max(entry.stored_seq, index.position)
        return True

    return check
