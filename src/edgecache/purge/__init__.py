"""The pure invalidation engine: what a purge selects, the order purges happen in, and whether an entry
is still valid.

Rules of this package:
- No I/O, no framework, no database, no asyncio: plain data in, plain answers out. The database layer
  makes a purge durable before the :class:`Ledger` hands out its sequence number; the cluster layer
  ships purges between nodes; the reclaimer removes matched entries. All of them sit outside.
- ``selectors`` says what a purge covers (and holds the reference semantics, :func:`matches`);
  ``ledger`` orders purges; ``index`` answers, on every cache hit, whether a newer purge covers an
  entry, in time independent of the cache size and of the purge history.
"""

from __future__ import annotations

from edgecache.purge.index import EpochIndex, Verdict
from edgecache.purge.ledger import Ledger
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url, matches

__all__ = [
    "EpochIndex",
    "Everything",
    "Host",
    "Ledger",
    "Mode",
    "Prefix",
    "Purge",
    "Selector",
    "Tag",
    "Url",
    "Verdict",
    "matches",
]
