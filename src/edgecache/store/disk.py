"""The persistent tier: entries in an LMDB environment on local disk, shared by a node's processes.

Rules of this module (the engine choice and the layout are measured in
docs/decisions/0009-persistent-tier.md; the layout itself is ``store/disk_layout.py``):
- Two areas, each zone having one named database per area: the **disk cache** (``c``), every
  storable object within ``budget`` bytes, and the **Cache Reserve** (``r``), per zone, the eligible
  objects within that zone's own budget, each kept ``retention`` seconds after its last access. An
  object in both areas is two records: the areas evict independently.
- Reads are synchronous and take microseconds while the pages are in the page cache (one read
  transaction, one ``get``). They may run on any thread or process. A read finds the zone from the
  key's host (``host:`` rows, cached in memory, and the host's databases remembered).
- The hit path's reads on the event loop's thread share one read transaction until the end of the
  loop's turn (``read_in_turns``), begun again whenever this process's writer has committed since:
  a snapshot never predates a removal this process's reclaimer may already have compacted out of
  the epoch index, nor a database the writer published, and it never outlives the turn.
- Every change goes through one queue to one writer thread, which applies a batch of them in one
  write transaction and commits it (LMDB fsyncs on commit): the event loop never waits for the disk.
  A stream of fills is gathered for up to ``GROUP_WAIT`` into one batch (the commit's cost is shared);
  any other change is written at once.
  The queue is ordered, so a put enqueued before a purge's removal job is on disk before that job
  looks for it. A delete is hidden from readers from the moment it is enqueued. A purge's delete
  carries the purge's position (``delete(key, below)``) and removes only a record stored before
  it, checked in the writer's transaction: another process may have stored a newer fill of the key
  after the delete was queued, which the purge does not cover. Until it commits, such a delete
  hides that newer record from this process's readers too (a short miss, never a stale answer).
- With a fill ring attached (``attach_fills``, decision 0020), a fill of a whole object in memory
  goes instead to the ring (``store/fillring.py``), for a fill-writer process to write with
  ``write_fills`` by the same rules; the loop never waits for it (a fill the ring has no room for
  is dropped and counted). Ordering is kept by fences: any change queued after fills were put in
  the ring is applied by the writer thread only once the ring is committed up to where it was,
  so a delete, a removal job or a ``flush`` is never overtaken by a fill put before it. The other
  way round, a fill of a key whose delete (or its primary's) is still queued goes to the writer
  thread's queue, behind that delete, not to the ring, where it could be committed first and
  then removed by the older delete.
- Indexes live in the record's own database, maintained in the same transaction as the record, never
  rebuilt at start. Only the writer opens databases (LMDB allows one opener at a time in a process);
  a database is published to readers once the transaction that created it has committed. The
  configured zones' databases are opened (created if new) at start, before the writer runs, so a
  record another worker process stored is a hit here from the first lookup; a zone outside them is
  opened when this process first misses on it (the writer is asked to).
- Eviction in the disk cache is least-recently-used by a logical clock shared by the zones (each
  zone's ``~`` rows are merged): a record's position is renewed when it is read from disk (a
  memory-tier miss), if it is among the oldest ``1/RENEW_OLDEST`` of the order (the writer decides,
  reading the clock and the count once per batch); memory hits never write. Reserve records expire
  ``retention`` after their last read, and over a zone's budget the one expiring soonest goes first.
- Removing a whole zone's area (a reserve clear, a hard purge of everything) empties its database
  with one ``mdb_drop`` (``WriteView.wipe_zone``): the records stored after the purge (found through
  the ``s`` rows from the purge's position) are read first and written back in the same transaction,
  so the removal is exact and atomic. The chunks of the large objects it drops (found through the
  zone's ``g`` rows) are deleted in that same transaction; those of the records it keeps stay.
  While that transaction is open, readers treat the zone's area as empty. When too many records
  survive for one transaction (``WIPE_KEEP_MAX``), the covered ones are removed record by record in
  steps instead.
- ``reclaimed_upto`` is the purge-ledger position up to which every purge has been applied to what
  is on disk. It only moves forward (each process's reclaim writes it; the larger value wins), in the
  transaction that finishes a purge's removal job, so after a crash the node replays the purges after
  it (``Node.__init__``, ``PurgeService.replay``). A job that changed nothing does not write it: the
  position rides in the next transaction that writes anyway, and at close.
- A put whose entry's ``stored_seq`` is below ``reclaimed_upto`` (as the writer's transaction sees
  it) is dropped, counted, never written: a purge up to that position may cover it and will not be
  replayed after a restart, and a cache may always drop. Whoever writes an entry back raises its
  ``stored_seq`` first once it has checked it against the purges (``TierChain``'s ``still_valid``).
- The Vary names of a base key are kept while a record is stored under it in either area: the removal
  of the last one deletes them (a whole-zone removal keeps those of the records it keeps).
- A crash (kill -9) loses at most the queued changes: a committed transaction is whole, an
  uncommitted one is invisible, so no torn record is ever read.
- Only whole responses are stored (``TierChain`` keeps 206 parts in memory). Up to the memory
  tier's ``max_object_bytes`` a record holds the body and is read whole, in place, on a hit; a
  larger object's record holds a manifest, and its bytes are in the environment's ``chunks``
  database (``store/chunked.py``): its chunks are queued before its record in the ordered queue, and
  every removal of the record (delete, purge, eviction, wipe) removes them in its transaction.
"""

from __future__ import annotations

import heapq
import logging
import queue
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, cast

import lmdb

from edgecache.store.base import VaryNames
from edgecache.store.chunked import ORPHAN_AGE, ChunkedEntry, chunk_key, object_age
from edgecache.store.disk_convert import convert_layout2
from edgecache.store.disk_layout import (
    AREAS,
    CACHE,
    ENTRY,
    EXPIRY,
    INT,
    LARGE,
    LAYOUT,
    MAX_INLINE_KEY,
    ORDER,
    ORDER_HEAD,
    REC,
    RESERVE,
    SEQ,
    SEQ_HEAD,
    U64,
    VARY,
    Record,
    db_name,
    decode_entry,
    decode_hit,
    encode_entry,
    expiry_row,
    fill_fields,
    handle,
    host_of,
    host_prefix,
    key_bytes,
    large_bytes,
    parse_handle,
    prefix_bytes,
    reserve_expires_of,
    seq_row,
    tag_row,
    with_reserve_expires,
)
from edgecache.store.entry import VARIANT_SEP, Entry
from edgecache.store.fillring import COUNTERS, RESERVE_FLAG, VARY_FLAG, FillRing, decode_vary
from edgecache.store.keyfilter import REBUILD_AT, KeyFilter, expected_fill

__all__ = [
    "CACHE",
    "JOB_STEP",
    "RESERVE",
    "DiskStats",
    "DiskStore",
    "Found",
    "Job",
    "JobProgress",
    "Lookup",
    "Record",
    "WriteView",
    "ZoneWipe",
    "clear_reserve_job",
    "decode_entry",
    "decode_hit",
    "encode_entry",
]

log = logging.getLogger(__name__)

MAX_ZONES = 1024
"""Zones the store can hold (two named databases each; LMDB fixes the number when it opens)."""
MAX_WHERES = 4096
"""Hosts whose zone and databases the hit path remembers (a zone may serve many hosts)."""
FILTER_STEP = 65536
"""Rows the key filter's build reads per read transaction (``_build_filter``)."""
FILTER_CHECK_EVERY = 1.0
"""Seconds between two looks at how full the key filter is (``_keep_filter``): a look samples 256
KiB of it (118 µs, ``bench/key_filter.py``). At 10 s a miss-heavy load had set a tenth of a small
filter's slots more between two looks (``bench/key_filter.py --churn``)."""
FILTER_RETRY_AFTER = 60.0
"""Seconds before the key filter is looked at again after a look or a rebuild failed."""
MAX_BATCH_OPS = 512
"""Changes one write transaction takes at most (the writer thread's, or a fill writer's)."""
MAX_BATCH_BYTES = 64 << 20
"""Bytes of bodies one write transaction takes at most (past its first change)."""
GROUP_WAIT = 0.025
"""Seconds the writer waits after the first fill of a batch for more fills to share its
transaction, when fills keep coming (``GROUP_QUIET``): a commit writes and fsyncs every page the
batch dirtied, and the puts of one batch share pages (the index rows of one tag, the positions, the
order), so the fewer commits the fewer pages per put. Any other change (a delete, a job, a chunk, a
flush) ends the wait at once. An object one process stores is readable by the others this much
later at most, plus the batch's own write (decision 0009, addendum of 2026-11-30)."""
GROUP_QUIET = 0.002
"""When no other change arrives this long after the first fill, the batch is written at once:
sparse fills would only wait for nothing, and be seen later by the other processes."""
RING_KEYS_KEPT = 4096
"""Keys of ring fills one generation of ``DiskStore._in_ring`` holds before the older generation
is dropped (once all of it is committed): a key's last ring position is kept until then, and
``has`` compares it with the ring's committed position."""
FENCE_LOOK = 0.05
"""Seconds between the fence's looks at whether its ring is still attached (``_await_fills``): the
fill writer's commits wake it, and a dead one's supervisor wakes it when it skips its records."""
_FILLS = frozenset(("put", "vary"))
"""The changes that wait for others to share their commit (see ``GROUP_WAIT``)."""
RENEW_EVERY = 1.0
"""Seconds between the writes that renew the records read from disk."""
RENEW_OLDEST = 8
"""A record read from disk is renewed only when it is among the oldest ``1/RENEW_OLDEST`` of the
order: a fraction f renews f of the disk hits, while the window in which a record must be read to
be kept lasts about one mean interval between its reads whatever f is (decision 0009)."""
MAX_QUEUED = 20_000
"""Queued changes beyond which fills are dropped (counted) rather than queued: the disk
falls behind a burst of fills, memory does not grow without bound. Deletes and jobs always queue."""
JOB_STEP = 2048
"""Records a removal job handles per write transaction before queued puts get their turn."""
WIPE_KEEP_MAX = 20_000
"""Records a whole-zone removal writes back at most (those stored after the purge): more, and it
removes the covered ones ``JOB_STEP`` at a time instead, so that no transaction grows unbounded."""
_SEP = VARIANT_SEP.encode()
UNBOUNDED = 1 << 63
"""The bound of a delete that removes whatever record is under its key."""
_SEQ_AT = len(SEQ) + U64.size
_ORDER_AT = len(ORDER) + U64.size


@dataclass(slots=True)
class DiskStats:
    """Counters the metrics read (plain integers, written by the owning thread)."""

    hits: int = 0
    reserve_hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    reserve_evictions: int = 0
    reserve_expired: int = 0
    commits: int = 0
    write_errors: int = 0
    """Write batches that failed, and fill-ring records that could not be read (``write_fills``)."""
    dropped: int = 0
    """Fills not written: the queue or the ring was full, a purge already applied to the disk may
    cover them (below ``reclaimed_upto``), the fill ring gave them up (its fill writer died, or a
    record never matched its CRC), or their batch failed (which counts once in ``write_errors``)."""
    filtered: int = 0
    """Memory misses the key filter answered without a disk read (``store/keyfilter.py``)."""


Fill = tuple[bytes, str, str, bytes, int, tuple[str, ...], bool, ChunkedEntry | None]
"""A fill as ``_put_fills`` writes it: its record (``encode_entry``'s bytes, stored as they are),
zone, key, the key's stored bytes (``key_bytes``), ``stored_seq``, tags, whether it goes to its
zone's reserve too, and the large object it is (None: a whole entry, as every ring record is)."""


class RingFills(NamedTuple):
    """Consecutive fills read from the fill ring (``write_fills``): one change of a batch for the
    whole run, so that what ``_apply`` and ``_commit`` look at per change is not done per fill."""

    kind: str
    """Always ``"fills"``: a batch's changes are told apart by their first item."""
    fills: list[Fill]


def _is_put(op: tuple[Any, ...]) -> bool:
    """A queued put: ``_commit`` writes each run of them together (``_put_fills``)."""
    kind: str = op[0]
    return kind == "put"


def _fills_in(op: tuple[Any, ...]) -> int:
    """How many fills a change carries: a queued put one, a run of ring fills its length."""
    kind = op[0]
    return 1 if kind == "put" else len(op[1]) if kind == "fills" else 0


def _put_form(op: tuple[Any, ...]) -> Fill:
    """A queued ``("put", entry, reserve)`` as ``_put_fills`` writes it: its entry encoded."""
    entry: Entry = op[1]
    key = entry.key
    chunked = entry if type(entry) is ChunkedEntry else None
    return (
        encode_entry(entry, 0.0),
        entry.zone,
        key,
        key_bytes(key),
        entry.stored_seq,
        entry.tags,
        op[2],
        chunked,
    )


_KB = itemgetter(3)
"""A ``Fill``'s key bytes."""


@dataclass(slots=True)
class _RunZone:
    """What a run of fills (``_put_fills``) writes in one zone's disk cache."""

    db: Any
    cursor: lmdb.Cursor
    put: Callable[..., bool]
    """``cursor.put``, looked up once per run."""
    rows: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Index rows of new records, not written yet (``_write_rows``), but their order rows."""
    order: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Order rows of new records, in tick order: the database's last rows (``_write_rows``)."""
    size: int = 0
    """Bytes of the run's new records."""
    records: int = 0
    """The run's new records (counted by their order rows, as ``_write_rows`` writes them)."""


def _write_rows(zones: dict[str, _RunZone | None]) -> None:
    """Write the index rows a run of fills holds, each zone's in one ``putmulti``, and its order
    rows in another that appends them (MDB_APPEND: no descent from the root, pages split at their
    end): their ticks are above every tick given before, and ``ORDER`` sorts above every other row."""
    for run in zones.values():
        if run is None:
            continue
        cursor = run.cursor
        if run.rows:
            cursor.putmulti(run.rows)
            run.rows.clear()
        order = run.order
        if order:
            run.records += len(order)
            # py-lmdb skips a row that would not be the last one, without raising: were the clock
            # ever behind a stored tick, those rows are put where they belong instead.
            if cursor.putmulti(order, append=True)[1] != len(order):
                cursor.putmulti(order)
            order.clear()


@dataclass(slots=True)
class JobProgress:
    """What a removal job has done so far."""

    objects: int = 0
    bytes: int = 0
    done: bool = False


def _primary(key: str) -> str:
    i = key.find(VARIANT_SEP)
    return key if i < 0 else key[:i]


def _bases(key: str) -> list[str]:
    """The base keys a key may be under: itself and each prefix ending before a variant part."""
    out = [key]
    i = key.find(VARIANT_SEP)
    while i >= 0:
        out.append(key[:i])
        i = key.find(VARIANT_SEP, i + 1)
    return out


Reported = Callable[[int, int, int], None]
"""Called with the disk-cache records, the reserve records and the bytes a whole-zone removal took,
once its transaction has committed."""


class WriteView:
    """The store as seen inside the writer's transaction: what removal jobs use.

    Handles are opaque bytes naming a record's area, zone and key."""

    def __init__(self, store: DiskStore, txn: lmdb.Transaction) -> None:
        self._s = store
        self.txn = txn
        self._peeked: tuple[bytes, Record, int] | None = None
        self._after_commit: list[Callable[[], None]] = []

    def scan_prefix(
        self, prefix: str, after: bytes | None, limit: int, zone: str | None = None
    ) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records of ``zone`` (by default the zone
        of the prefix's host) whose key starts with ``prefix``, in both areas (the disk cache's first)."""
        s = self._s
        zone = zone if zone is not None else s._writer_zone_of(prefix)
        if zone is None:
            return []
        pb, exact = prefix_bytes(prefix)
        out: list[bytes] = []
        for area in AREAS:
            h_start = handle(area, zone, b"")
            if after is not None and after[: len(h_start)] > h_start:
                continue
            db = s._zdb(self.txn, area, zone, create=False)
            if db is None:
                continue
            cur = self.txn.cursor(db=db)
            resume = after is not None and after.startswith(h_start)
            start = ENTRY + (after[len(h_start) :] if resume and after is not None else pb)
            if not cur.set_range(start):
                continue
            for raw_key in cur.iternext(keys=True, values=False):
                k = bytes(raw_key)
                if not k.startswith(ENTRY + pb):
                    break
                h = h_start + k[len(ENTRY) :]
                if h == after:
                    continue
                if not exact or b"\xff" in k[len(ENTRY) + len(pb) :]:
                    entry = self.peek(h)
                    if entry is None or not entry.key.startswith(prefix):
                        continue
                out.append(h)
                if len(out) >= limit:
                    return out
        return out

    def scan_tag(self, zone: str, tag: str, after: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records of ``zone`` carrying ``tag``
        (a digest names the tag: the records' own tags are what a job matches on)."""
        return self._scan_rows(zone, tag_row(tag, b""), after, limit, None)

    def scan_zone(self, zone: str, after: bytes | None, limit: int, area: bytes | None = None) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records of ``zone`` (one area or both)."""
        return self._scan_rows(zone, ENTRY, after, limit, area)

    def _scan_rows(
        self, zone: str, row: bytes, after: bytes | None, limit: int, only: bytes | None
    ) -> list[bytes]:
        s = self._s
        out: list[bytes] = []
        for area in AREAS:
            if only is not None and area != only:
                continue
            h_start = handle(area, zone, b"")
            if after is not None and after[: len(h_start)] > h_start:
                continue
            db = s._zdb(self.txn, area, zone, create=False)
            if db is None:
                continue
            cur = self.txn.cursor(db=db)
            resume = after is not None and after.startswith(h_start)
            start = row + (after[len(h_start) :] if resume and after is not None else b"")
            if not cur.set_range(start):
                continue
            for raw_key in cur.iternext(keys=True, values=False):
                k = bytes(raw_key)
                if not k.startswith(row):
                    break
                h = h_start + k[len(row) :]
                if h == after:
                    continue
                out.append(h)
                if len(out) >= limit:
                    return out
        return out

    def wipe_zone(self, zone: str, area: bytes | None, before: int, report: Reported) -> bool:
        """Remove every record of ``zone`` (one area or both) stored before ledger position
        ``before``; True once done (False: call again in the next transaction). ``report`` gets the
        disk-cache and reserve records removed and their bytes once the transaction has committed;
        disk-cache records whose delete a lookup had queued are not counted (the lookup's credit
        counts them, see ``edge/lookup_credits.py``), as on the record-by-record paths."""
        return self._s._wipe(self, zone, area, before, report)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the writer once this transaction has committed."""
        self._after_commit.append(fn)

    def peek(self, h: bytes) -> Entry | None:
        """The entry under a handle, without its body."""
        area, zone, kb = parse_handle(h)
        db = self._s._zdb(self.txn, area, zone, create=False)
        raw = None if db is None else self.txn.get(ENTRY + kb, db=db)
        if raw is None:
            return None
        rec = decode_entry(raw, body=False)
        # Kept for a ``delete`` of the same handle next (the reclaimer peeks, then deletes).
        self._peeked = (h, rec, len(raw))
        return rec.entry

    def removing(self, key: str, stored_seq: int) -> bool:
        """Whether a delete queued in this process and not yet committed will remove the record
        of ``key`` stored at ``stored_seq`` (a delete of its key or its primary URL, bounded below
        a purge's position or not, see :meth:`DiskStore.delete`): whoever asked for it accounts
        for the record. A job removes the record all the same: the delete may commit after the
        job's own transaction, and a crash in between must not find the record there. A delete
        committed in the batch whose jobs are running no longer counts (``_apply``): a record the
        job finds then was put after it (a refill), which no lookup credited."""
        return self._s._removes(key, stored_seq)

    def taking(self, key: str) -> None:
        """This job removes ``key``: until its transaction commits, reads on other threads (which
        still see the record) treat it as gone, so that the job alone accounts for it."""
        self._s._taking.add(key)

    def delete(self, h: bytes) -> int:
        """Remove a record; returns the bytes it freed (0 when there was none)."""
        peeked = self._peeked
        self._peeked = None
        area, zone, kb = parse_handle(h)
        if peeked is not None and peeked[0] == h:
            return self._s._remove(self.txn, area, zone, kb, peeked[1:])
        return self._s._remove(self.txn, area, zone, kb)

    def mark_stale(self, h: bytes, at: float) -> bool:
        """Make a record stale from ``at`` (or its earlier stale time)."""
        self._peeked = None
        area, zone, kb = parse_handle(h)
        db = self._s._zdb(self.txn, area, zone, create=False)
        raw = None if db is None else self.txn.get(ENTRY + kb, db=db)
        if raw is None:
            return False
        rec = decode_entry(raw)
        e = rec.entry
        if e.stale_since is None or at < e.stale_since:
            e.stale_since = at
            self.txn.put(ENTRY + kb, encode_entry(e, rec.reserve_expires), db=db)
        return True

    def set_reclaimed(self, seq: int, *, changed: bool = True) -> None:
        """Record that every purge up to ``seq`` has been applied to what is on disk; when the job
        ``changed`` nothing, with the next transaction that writes anyway. Never moves it back."""
        s = self._s
        s._reclaimed_later = max(seq, s._reclaimed_later)
        if changed:
            s._write_reclaimed_later(self.txn)


Found = tuple[Entry, bytes, float]
"""What a read found: the entry, its area (``CACHE`` or ``RESERVE``) and, for a reserve record, when
it expires (plain tuples: the hit path builds one per disk hit)."""
Lookup = tuple[str, Found | None]
"""What :meth:`DiskStore.lookup` read for a base key: the key and what was found under it."""


Job = Callable[[WriteView], bool]
"""A removal job: one step per call (at most ``JOB_STEP`` records), True once finished."""


def clear_reserve_job(zone: str, progress: JobProgress) -> Job:
    """A job removing every reserve record of ``zone``, counting into ``progress``. Running it
    again after a crash finishes what is left (it removes whatever is still there)."""
    return ZoneWipe(zone, RESERVE, 1 << 62, progress)


class ZoneWipe:
    """A job removing every record of a zone (one area, or both when ``area`` is None) stored before
    ledger position ``before``."""

    def __init__(
        self, zone: str, area: bytes | None, before: int, progress: JobProgress | None = None
    ) -> None:
        self.zone = zone
        self.area = area
        self.before = before
        self.progress = progress or JobProgress()

    def __call__(self, view: WriteView) -> bool:
        done = view.wipe_zone(self.zone, self.area, self.before, self._count)
        if done:
            view.after_commit(self._done)
        return done

    def _count(self, cache: int, reserve: int, freed: int) -> None:
        self.progress.objects += cache + reserve
        self.progress.bytes += freed

    def _done(self) -> None:
        self.progress.done = True


class DiskStore:
    """The on-disk tier: synchronous reads, writes through one batching writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        budget: int,
        position: int,
        map_size: int | None = None,
        reserve_budget: Callable[[str], int] = lambda zone: 0,
        reserve_retention: Callable[[str], float] = lambda zone: 30 * 86400.0,
        zones: Iterable[str] = (),
        writer: bool = True,
    ) -> None:
        """Open (or create) the store at ``path``. ``position`` is the purge-ledger position to
        record as reclaimed when the store is new (nothing on disk predates it), or was written in
        another layout (it is emptied: see ``_open_layout``). ``zones``: the configured zones,
        whose databases are opened (created when new) at once, so that what another process
        writes for them is readable here from its first lookup. ``writer``: False in a fill-writer
        process, which writes with :meth:`write_fills` alone (no writer thread, no queue)."""
        path.mkdir(parents=True, exist_ok=True)
        self.budget = budget
        self._reserve_budget = reserve_budget
        self._reserve_retention = reserve_retention
        self._map_size = map_size or max(1 << 30, 4 * budget)
        self.env = self._open_env(path)
        self.stats = DiskStats()
        self._dbs: dict[tuple[bytes, str], Any] = {}
        """Published databases by (area, zone): readers use only these."""
        self._new_dbs: dict[tuple[bytes, str], Any] = {}
        """Databases opened in the writer's open transaction, published when it commits."""
        self._asked: set[str] = set()
        """Zones whose databases a reader asked the writer to open."""
        self._hosts: dict[str, str] = {}
        """Host → zone (the ``host:`` rows), as far as this process has read or written them."""
        self._wheres: dict[str, tuple[str, Any, Any]] = {}
        """Host → ``_where``'s answer, for zones whose disk-cache database is published. The writer
        replaces the dict (never clears it) after publishing: a reader that looked at the
        databases before that stores its answer in the dict being dropped."""
        self._new_hosts: dict[str, str] = {}
        """Host rows written in the writer's open transaction, published when it commits."""
        self._chunks: Any = None
        """Large objects' chunks (``store/chunked.py``), and each object id → its record's handle."""
        self._meta = self._open_layout(position, zones)
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._queued = 0
        self._hidden: Counter[str] = Counter()
        self._hidden_primaries: Counter[str] = Counter()
        """The subset of ``_hidden`` queued by ``delete_primary`` (all variants go)."""
        self._bounds: dict[str, list[int]] = {}
        """Per key hidden by ``delete``, the bound of each of its queued deletes (``UNBOUNDED``
        for one that removes whatever is there): what ``_removes`` tells the removal jobs."""
        self._pending: dict[str, int] = {}
        """Keys with a put still queued: ``has`` counts them as held, so that a memory eviction
        does not queue the same record a second time while the first is waiting for the writer."""
        self._wake = threading.Event()
        """Set by every change but a fill: ends the writer's wait for more fills (``GROUP_WAIT``)."""
        self._delta: dict[bytes, int] = {}
        """Counter changes of the writer's open transaction (see ``_account``)."""
        self._seen: dict[bytes, int] = {}
        """Counters as stored when the writer's open transaction began, read once each in it."""
        self._count_names: dict[tuple[bytes, str], tuple[bytes, ...]] = {}
        """The counters a record of one zone's area adds to (``_account``), named once."""
        self._reserve_swept = 0.0
        """When every zone's reserve was last checked for expired records (``_evict``)."""
        self._grown: set[str] = set()
        """Zones whose reserve grew in the writer's open transaction (``_evict`` checks them)."""
        self._reclaimed_later = 0
        """A reclaimed position not written yet (see the module rules); 0 when none."""
        self._taking: set[str] = set()
        """Keys the running job removes in its uncommitted transaction (``WriteView.taking``)."""
        self._dropping: set[tuple[bytes, str]] = set()
        """Zone areas the running job is emptying in its uncommitted transaction."""
        self._renewals: dict[str, int | None] = {}
        """Keys read from disk → the disk-cache record's ``stored_seq`` (None: the reserve's), whose
        place (or retention) to renew, written every ``RENEW_EVERY`` seconds: a commit, and its
        fsync, per few hits slowed the hits several times (measured with bench/disk_hits.py)."""
        self._renewed = 0.0
        self._generation = 0
        """Bumped by the writer after each commit, before it publishes what the commit created."""
        self._turn: lmdb.Transaction | None = None
        """The read transaction of the current loop turn (``read_in_turns``), or None."""
        self._turn_generation = -1
        self._turn_thread = -1
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._ring: FillRing | None = None
        """Where fills go when a fill-writer process writes them (``attach_fills``), else None."""
        self._in_ring: dict[str, int] = {}
        """Keys put in the ring → the position after their last record there: pending for ``has``
        until the fill writer has committed that far (the event loop's thread alone reads and
        writes it, as it alone puts in the ring). A key's latest position is all ``has`` needs:
        the ring commits in order. It replaced a deque of every fill and a count per key in
        ``_pending`` under the lock, which cost each fill ~2k instructions (decision 0020's
        addendum "missdisk")."""
        self._in_ring_old: dict[str, int] = {}
        """The generation before ``_in_ring``: dropped when ``_in_ring`` reaches ``RING_KEYS_KEPT``
        keys and the ring is committed past ``_in_ring_top``."""
        self._in_ring_top = 0
        """The ring position after the last record of a key in ``_in_ring_old``."""
        self._fenced = 0
        """The ring position of the last fence queued (``_enqueue``)."""
        self._waking = False
        """A wake of the sleeping fill writer is scheduled for the end of the loop's turn."""
        self._varying: Counter[str] = Counter()
        """Base keys → their Vary names queued on the writer thread and not yet written: names for
        such a base do not go through the ring (``set_vary``), where they could be committed first
        and then overwritten by the older names."""
        self._keys: KeyFilter | None = None
        """The node's filter of the keys on disk (``use_filter``), or None: every key is read."""
        self._builder: threading.Thread | None = None
        self._filter_stop = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="edgecache-disk-writer", daemon=True)
        if writer:
            self._thread.start()

    def _open_layout(self, position: int, zones: Iterable[str]) -> Any:
        """Open the meta database and every zone's, after bringing the layout to ``LAYOUT``.

        A layout-2 store is converted (``store/disk_convert.py``: index rows only, no record read):
        the Cache Reserve is a tier users rely on across upgrades (decision 0033). A store in any
        other layout (or none: a new one) is emptied, and so is a layout-2 one whose conversion
        does not fit in the map. Done in one write transaction, which LMDB serialises across
        processes: the first process to open converts, the others find ``LAYOUT``; a crash before
        its commit leaves the store as it was, for the next open."""
        zones = tuple(zones)
        try:
            meta, converted = self._open_in(position, zones, convert=True)
        except lmdb.Error as exc:
            # No room in the map, or a file that cannot grow (ENOSPC, EIO at the commit): nothing
            # was changed, and a node that failed here would fail at every restart.
            log.warning("disk tier: could not convert %s (%s): emptied instead", self.env.path(), exc)
            converted = False
            meta, _ = self._open_in(position, zones, convert=False)
        if converted:
            # LMDB keeps a transaction's freed dirty pages in the environment until it is closed:
            # after converting a million records that is ~100 MiB held for the process's life.
            path = Path(self.env.path())
            self.env.close()
            self.env = self._open_env(path)
            meta, _ = self._open_in(position, zones, convert=False)
        return meta

    def _open_env(self, path: Path) -> lmdb.Environment:
        return lmdb.open(
            str(path),
            map_size=self._map_size,
            max_dbs=2 * MAX_ZONES + 2,
            readahead=True,
            max_readers=1024,
            # A read transaction ended is kept and renewed by the next ``begin`` (no reader-table
            # lock and scan, no allocation): the hit path begins one per loop turn (``read_in_turns``).
            max_spare_txns=1,
        )

    def _open_in(self, position: int, zones: Iterable[str], *, convert: bool) -> tuple[Any, bool]:
        """The meta database, after bringing the layout to ``LAYOUT`` (converting a layout-2 store
        when ``convert``, else emptying it), and whether it converted. What an earlier try found
        is forgotten: its databases' handles may be of a transaction that did not commit."""
        self._dbs.clear()
        self._hosts.clear()
        converted = False
        env = self.env
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            found = txn.get(b"layout", db=meta)
            was = None if found is None else INT.unpack(found)[0]
            if was == 2 and convert:
                began = time.monotonic()
                placed = convert_layout2(env, txn)
                converted = True
                txn.put(b"layout", INT.pack(LAYOUT), db=meta)
                log.warning(
                    "disk tier: layout 2 at %s converted to layout %d (%d records placed) in %.2f s",
                    env.path(),
                    LAYOUT,
                    placed,
                    time.monotonic() - began,
                )
            elif was != LAYOUT:
                if found is not None or txn.get(b"reclaimed_upto", db=meta) is not None:
                    log.warning(
                        "disk tier: layout %d at %s emptied for layout %d", was or 1, env.path(), LAYOUT
                    )
                names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
                for name in names:
                    if name == b"meta":
                        continue
                    try:
                        db = env.open_db(name, txn=txn, create=False)
                    except lmdb.IncompatibleError:
                        db = env.open_db(name, txn=txn, create=False, dupsort=True)
                    txn.drop(db, delete=True)
                txn.drop(meta, delete=False)
                txn.put(b"layout", INT.pack(LAYOUT), db=meta)
                txn.put(b"reclaimed_upto", INT.pack(position), db=meta)
            self._chunks = env.open_db(b"chunks", txn=txn)
            for raw in txn.cursor().iternext(keys=True, values=False):
                name = bytes(raw)
                if name[1:2] == b"/" and name[:1] in AREAS:
                    self._dbs[(name[:1], name[2:].decode())] = env.open_db(name, txn=txn)
            for zone in zones:
                for area in AREAS:
                    if (area, zone) not in self._dbs:
                        try:
                            self._dbs[(area, zone)] = env.open_db(db_name(area, zone), txn=txn)
                        except lmdb.DbsFullError:
                            log.error("disk tier: no room for zone %s (%d zones at most)", zone, MAX_ZONES)
            cur = txn.cursor(db=meta)
            if cur.set_range(b"host:"):
                for k, v in cur.iternext():
                    if not bytes(k).startswith(b"host:"):
                        break
                    self._hosts[bytes(k[5:]).decode()] = bytes(v).decode()
        return meta, converted

    # -- reads (any thread) -----------------------------------------------------------------------

    def read_in_turns(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Let the hit path's reads on the calling thread (the event loop's) share one read
        transaction until the end of the loop's turn, which ``call_soon`` schedules: a transaction
        per hit cost about as much as the read itself. Reads on other threads begin their own.

        What makes a shared snapshot safe: it is begun again as soon as this process's writer has
        committed (``_generation``), so a read never misses a removal that this process's reclaimer
        may already have compacted away from the epoch index (the reclaimer compacts only after its
        disk job's commit), nor a database or host the writer has published; and it ends with the
        turn, so it never pins pages that writers in other processes could reuse, and another
        process's fills are seen from the next turn on."""
        self._end_turn()  # one a loop that has stopped since may have left open
        self._turn_thread = threading.get_ident()
        self._call_soon = call_soon
        self._waking = False  # a wake a stopped loop never ran

    def _reader(self) -> lmdb.Transaction | None:
        """This turn's read transaction (begun when there is none or the writer committed since),
        or None on a thread that does not read in turns: it begins its own."""
        if not self._in_turn():
            return None
        txn = self._turn
        if txn is not None:
            if self._turn_generation == self._generation:
                return txn
            txn.abort()
        elif not self._at_turn_end(self._end_turn):
            return None
        # Read before the transaction begins: a commit in between only makes the next read begin
        # again, never lets a snapshot older than a commit pass for newer.
        self._turn_generation = self._generation
        self._turn = txn = self.env.begin(buffers=True)
        return txn

    def _in_turn(self) -> bool:
        """Whether the calling thread reads in turns (the event loop's, after ``read_in_turns``)."""
        return self._call_soon is not None and threading.get_ident() == self._turn_thread

    def _at_turn_end(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` at the end of the loop's current turn; False when the loop has closed,
        and from then on this thread no longer reads in turns (it begins its own transactions)."""
        call_soon = self._call_soon
        assert call_soon is not None
        try:
            call_soon(callback)
        except RuntimeError:
            self._call_soon = None
            return False
        return True

    def _end_turn(self) -> None:
        txn, self._turn = self._turn, None
        if txn is not None:
            txn.abort()

    def _zone_of(self, key: str) -> str | None:
        """The zone whose databases hold ``key``, from its host (read from disk on a first miss:
        another process may have stored the host)."""
        host = host_of(key)
        zone = self._hosts.get(host)
        if zone is not None:
            return zone
        with self.env.begin(db=self._meta) as txn:
            raw = txn.get(b"host:" + host.encode())
        if raw is None:
            return None
        zone = bytes(raw).decode()
        self._hosts[host] = zone
        return zone

    def _writer_zone_of(self, key: str) -> str | None:
        """``_zone_of`` on the writer, which also sees the host rows of its open transaction."""
        return self._new_hosts.get(host_of(key)) or self._zone_of(key)

    def _reader_db(self, area: bytes, zone: str) -> Any:
        db = self._dbs.get((area, zone))
        if db is None and zone not in self._asked:
            # Created by another process: only the writer may open it (LMDB's rule in a process).
            self._asked.add(zone)
            self._enqueue(("open", zone))
        return db

    def get(
        self,
        key: str,
        reserve: Callable[[str], bool] | None = None,
        looked_up: Lookup | None = None,
    ) -> tuple[Entry, bool] | None:
        """The entry under ``key`` from the disk cache, else from the reserve when ``reserve(zone)``
        says that zone's reserve is on; with whether it came from the reserve. A hit renews the
        record's place (cache) or retention (reserve), through the writer, unless it is outside
        the oldest ``1/RENEW_OLDEST`` of the order (the writer checks), or its retention was
        renewed in the last thirtieth of the period: a write per hit would cost more than the
        precision is worth. ``looked_up``: what :meth:`lookup` just read, used instead of reading
        again when it is of ``key``."""
        hidden = self._hidden
        # ``_hides``, inline: every memory miss asks, and nearly always nothing is hidden.
        if hidden and (key in hidden or _primary(key) in hidden):
            return None
        if self._taking and key in self._taking:
            return None
        if looked_up is not None and looked_up[0] == key:
            found = looked_up[1]
        else:
            kb = key_bytes(key)
            if self._ruled_out(kb):
                self.stats.filtered += 1
                self.stats.misses += 1
                return None
            where = self._where(key)
            # Buffers: the record is read in place from the map; only the head and body are copied.
            txn = self._reader()
            if txn is None:
                with self.env.begin(buffers=True) as txn:
                    found = self._read(txn, key, kb, where, reserve)
            else:
                found = self._read(txn, key, kb, where, reserve)
        if found is None:
            self.stats.misses += 1
            return None
        entry, area, expires = found
        if type(entry) is ChunkedEntry:
            entry.read_chunk = self.read_chunk
        if area is CACHE:
            self.stats.hits += 1
            # Whether the place needs renewing is the writer's question (``_renew``): asking it here
            # cost three more reads per hit.
            # Its position names its ``s`` row, which holds its place (layout 3: no key → tick row).
            self._renewals[key] = entry.stored_seq
            return entry, False
        self.stats.reserve_hits += 1
        retention = self._reserve_retention(entry.zone)
        if expires - time.time() <= retention * 29 / 30:
            self._renewals[key] = None
        return entry, True

    def lookup(
        self, base_key: str, reserve: Callable[[str], bool] | None = None
    ) -> tuple[tuple[str, ...] | None, Lookup | None]:
        """The Vary field names recorded for a base key and, when it has none, the record under the
        base key itself (for the :meth:`get` that follows), in one read transaction: a memory miss
        asks both. Counts a key the filter rules out as ``filtered``, nothing else: the ``get``
        that follows counts the hit or the miss."""
        # ``key_bytes`` and ``_ruled_out``, inline (every memory miss asks): a key of at most
        # ``MAX_INLINE_KEY`` bytes is stored as it is.
        kb = base_key.encode("utf-8", "surrogatepass")
        if len(kb) > MAX_INLINE_KEY:
            kb = key_bytes(base_key)
        keys = self._keys
        if keys is not None and not keys.may_hold(kb):
            # Neither a Vary row nor a record under it: the memory miss's disk read is skipped.
            self.stats.filtered += 1
            return None, (base_key, None)
        where = self._where(base_key)
        txn = self._reader()
        if txn is None:
            with self.env.begin(buffers=True) as txn:
                return self._lookup(txn, base_key, kb, where, reserve)
        return self._lookup(txn, base_key, kb, where, reserve)

    def _lookup(
        self,
        txn: lmdb.Transaction,
        base_key: str,
        kb: bytes,
        where: tuple[str, Any, Any] | None,
        reserve: Callable[[str], bool] | None,
    ) -> tuple[tuple[str, ...] | None, Lookup | None]:
        if where is None:
            return None, (base_key, None)
        cdb = where[1]
        names = None if cdb is None else txn.get(VARY + kb, db=cdb)
        if names is not None:
            return tuple(bytes(names).decode().split("\x00")), None
        return None, (base_key, self._read(txn, base_key, kb, where, reserve))

    def _ruled_out(self, kb: bytes) -> bool:
        """Whether the key filter says nothing is on disk under the key stored as ``kb`` (counts
        nothing: the caller knows what the answer saved)."""
        keys = self._keys
        return keys is not None and not keys.may_hold(kb)

    def _where(self, key: str) -> tuple[str, Any, Any] | None:
        """The zone of ``key`` and its published disk-cache and reserve databases (None: none, or
        being emptied). Found before the read transaction begins: a transaction cannot use a
        database opened after it began. Remembered by host (``_wheres``) once the zone's disk-cache
        database is published; forgotten whenever the writer publishes a database or a host."""
        host = host_of(key)
        where = self._wheres.get(host)
        if where is None:
            where = self._find_where(host, key)
            if where is None:
                return None
        dropping = self._dropping
        if dropping:
            zone, cdb, rdb = where
            if (CACHE, zone) in dropping:
                cdb = None
            if (RESERVE, zone) in dropping:
                rdb = None
            return zone, cdb, rdb
        return where

    def _find_where(self, host: str, key: str) -> tuple[str, Any, Any] | None:
        wheres = self._wheres  # before the databases are read (see ``_wheres``)
        zone = self._hosts.get(host) or self._zone_of(key)
        if zone is None:
            return None
        cdb = self._dbs.get((CACHE, zone))
        if cdb is None:
            return zone, self._reader_db(CACHE, zone), self._dbs.get((RESERVE, zone))
        where = zone, cdb, self._dbs.get((RESERVE, zone))
        if len(wheres) >= MAX_WHERES:
            wheres.clear()
        wheres[host] = where
        return where

    def _read(
        self,
        txn: lmdb.Transaction,
        key: str,
        kb: bytes,
        where: tuple[str, Any, Any] | None,
        reserve: Callable[[str], bool] | None,
    ) -> Found | None:
        """The record of ``key`` (stored as ``kb``), its area and its reserve expiry, or None
        (counts nothing)."""
        if where is None:
            return None
        zone, cdb, rdb = where
        ek = ENTRY + kb
        raw = None if cdb is None else txn.get(ek, db=cdb)
        area = CACHE
        if raw is None and reserve is not None and reserve(zone):
            if rdb is None and (RESERVE, zone) not in self._dropping:
                self._reader_db(RESERVE, zone)
            area = RESERVE
            raw = None if rdb is None else txn.get(ek, db=rdb)
        if raw is None:
            return None
        # A key stored as it is needs no comparison with the record's: the row's key is the key.
        cut = key.encode("utf-8", "surrogatepass") if len(kb) > MAX_INLINE_KEY else None
        try:
            found = decode_hit(raw, key, zone, cut)
        except (struct.error, UnicodeDecodeError):
            log.error("unreadable disk record for %r: ignored", key)
            return None
        if found is None:
            return None
        return found[0], area, found[1]

    def has(self, key: str) -> bool:
        """Whether the disk cache holds a record under ``key``; a key with a delete or a put still
        queued counts as held, so that nothing is written back over a pending removal, nor twice."""
        if self._hides(key):
            return True
        ring = self._ring
        if ring is not None:
            at = self._in_ring.get(key)
            if at is None:
                at = self._in_ring_old.get(key)
            if at is not None and at > ring.committed:
                return True
        if key in self._pending:
            return True
        kb = key_bytes(key)
        if self._ruled_out(kb):
            return False
        zone = self._zone_of(key)
        db = None if zone is None else self._dbs.get((CACHE, zone))
        if db is None:
            return False
        txn = self._reader()
        if txn is None:
            with self.env.begin(db=db) as txn:
                return txn.get(ENTRY + kb) is not None
        return txn.get(ENTRY + kb, db=db) is not None

    @property
    def reclaimed_upto(self) -> int:
        """The ledger position up to which every purge is applied on disk."""
        with self.env.begin(db=self._meta) as txn:
            return _int(txn.get(b"reclaimed_upto"))

    def usage(self) -> tuple[int, int]:
        """Bytes and records in the disk cache."""
        with self.env.begin(db=self._meta) as txn:
            return _int(txn.get(b"used:c")), _int(txn.get(b"count:c"))

    def reserve_usage(self, zone: str) -> tuple[int, int]:
        """Bytes and records in one zone's reserve."""
        with self.env.begin(db=self._meta) as txn:
            z = zone.encode()
            return _int(txn.get(b"used:r:" + z)), _int(txn.get(b"count:r:" + z))

    def __len__(self) -> int:
        with self.env.begin() as txn:
            total = 0
            for db in list(self._dbs.values()):
                cur = txn.cursor(db=db)
                if cur.set_range(ENTRY):
                    for k in cur.iternext(keys=True, values=False):
                        if bytes(k[:1]) != ENTRY:
                            break
                        total += 1
            return total

    def __iter__(self) -> Iterator[Entry]:
        out: list[Entry] = []
        with self.env.begin() as txn:
            for db in list(self._dbs.values()):
                cur = txn.cursor(db=db)
                if cur.set_range(ENTRY):
                    for k, v in cur.iternext():
                        if bytes(k[:1]) != ENTRY:
                            break
                        out.append(decode_entry(v).entry)
        return iter(out)

    @property
    def queue_depth(self) -> int:
        """Changes waiting for the writer (and, with a fill ring, for the fill writer)."""
        ring = self._ring
        return self._queued + (0 if ring is None else ring.pending())

    def counters(self) -> DiskStats:
        """This process's counters, with the fill writer's (``attach_fills``) added: what the metrics
        report."""
        ring = self._ring
        if ring is None:
            return self.stats
        total = replace(self.stats)
        for name, value in ring.counters().items():
            setattr(total, name, getattr(total, name) + value)
        return total

    # -- the key filter (decision 0020, addendum ``missfilter``) ------------------------------------

    def use_filter(self, keys: KeyFilter, *, build: bool) -> None:
        """Skip the disk read of a key ``keys`` rules out, and set its slots for every key this
        process writes, before the commit. Called before this process writes anything. ``build``:
        this process is the node's first, which adds every key on disk in a thread (once per node
        start) and then marks the filter trusted for every process."""
        self._keys = keys
        if build:
            self._builder = threading.Thread(
                target=self._build_filter, args=(keys,), name="edgecache-disk-filter", daemon=True
            )
            self._builder.start()

    @property
    def key_filter(self) -> KeyFilter | None:
        """The filter given to ``use_filter`` (passed on to a fill writer child), or None."""
        return self._keys

    def _build_filter(self, keys: KeyFilter) -> None:
        """Add the key of every record and Vary row of every area on disk, then trust the filter
        and keep it (``_keep_filter``) until the store closes. A build that fails is logged
        (``disk_key_filter_failed``) and leaves the filter untrusted, every key "maybe" (a disk
        read), until the node's next start."""
        began = time.monotonic()
        try:
            added = self._add_disk_keys(keys)
        except Exception:
            log.exception(
                "disk tier: key filter build failed: every memory miss reads the disk until a restart",
                extra={"event": "disk_key_filter_failed"},
            )
            return
        if self._closing:
            return
        keys.set_ready()
        log.info(
            "disk tier: key filter built from %d keys in %.2f s",
            added,
            time.monotonic() - began,
            extra={"event": "disk_key_filter_built", "keys": added, "slots": keys.slots},
        )
        self._keep_filter(keys)

    def _keep_filter(self, keys: KeyFilter) -> None:
        """Rebuild the filter from the disk whenever ``REBUILD_AT`` of its slots are set and a
        rebuild from the records on disk now would set at most half as many: deletes never clear
        a slot, so a churning disk would otherwise make every memory miss read it. A disk that
        holds more keys than the filter was sized for is not rebuilt for nothing. A look or a
        rebuild that fails is logged (``disk_key_filter_failed``) and tried again
        ``FILTER_RETRY_AFTER`` later; the filter stays as it was meanwhile: right, only fuller."""
        pause = FILTER_CHECK_EVERY
        while not self._filter_stop.wait(pause):
            pause = FILTER_CHECK_EVERY
            try:
                now = keys.fill()
                if now >= REBUILD_AT and now >= 2 * expected_fill(self._records(), keys.slots):
                    self._rebuild_filter(keys, now)
            except Exception:
                log.exception(
                    "disk tier: key filter rebuild failed: it stays as it was, tried again in %g s",
                    FILTER_RETRY_AFTER,
                    extra={"event": "disk_key_filter_failed"},
                )
                pause = FILTER_RETRY_AFTER

    def _records(self) -> int:
        """The records on disk, both areas, every zone (a key with a reserve copy counts twice)."""
        with self.env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            total = _int(txn.get(b"count:c"))
            if cur.set_range(b"count:r:"):
                for name, value in cur.iternext():
                    if not name.startswith(b"count:r:"):
                        break
                    total += _int(value)
            return total

    def _rebuild_filter(self, keys: KeyFilter, before: float) -> None:
        """Rebuild the filter's inactive half from the keys on disk and make it the active one; a
        rebuild that fails or that a close cuts short is abandoned (the active half stays)."""
        began = time.monotonic()
        keys.begin_rebuild()
        try:
            # Wait out the write transaction in progress, whose writer may have announced its keys
            # in the active half only: it commits before this read of the disk begins. Every later
            # one sees the rebuild inside its transaction and announces in both (``_commit``).
            self.env.begin(write=True).abort()
            added = self._add_disk_keys(keys)
        except BaseException:
            keys.abandon_rebuild()
            raise
        if self._closing:
            keys.abandon_rebuild()
            return
        keys.end_rebuild()
        log.info(
            "disk tier: key filter rebuilt from %d keys in %.2f s: %.1f%% of its slots set, was %.1f%%",
            added,
            time.monotonic() - began,
            100 * keys.fill(),
            100 * before,
            extra={"event": "disk_key_filter_rebuilt", "keys": added, "slots": keys.slots},
        )

    def _add_disk_keys(self, keys: KeyFilter) -> int:
        """Add the keys of ``_build_filter`` (until the store closes); how many. A transaction per
        ``FILTER_STEP`` rows, so a large store pins no pages for long: a record committed between
        two of them was written by a process that set its slots itself."""
        added = 0
        for db in list(self._dbs.values()):
            for prefix in (ENTRY, VARY):
                mark = prefix[0]
                after = prefix
                while not self._closing:
                    step: list[memoryview] = []
                    last = None
                    with self.env.begin(db=db, buffers=True) as txn:
                        cur = txn.cursor()
                        if cur.set_range(after):
                            for k in cur.iternext(keys=True, values=False):
                                if k[0] != mark:
                                    break
                                step.append(k[1:])
                                if len(step) == FILTER_STEP:
                                    last = bytes(k)
                                    break
                        # Inside the transaction: the keys are views of its pages.
                        keys.add_all(step)
                    added += len(step)
                    if last is None:
                        break
                    after = last + b"\x00"  # the next row's key: the least one above ``last``
        return added

    def _announce(self, keys: KeyFilter, batch: list[tuple[Any, ...]]) -> int:
        """Before a batch's commit: set the filter's slots of every key it may store anything
        under; the filter's generation they were set at. A fill (a large object's record and a
        reserve copy are fills too) stores under its key, a Vary row under its base key; nothing
        else a batch or a job writes adds a key."""
        kbs: list[bytes] = []
        for op in batch:
            kind = op[0]
            if kind == "fills":
                kbs += map(_KB, op[1])
            elif kind == "put":
                kbs.append(key_bytes(op[1].key))
            elif kind == "vary":
                kbs.append(key_bytes(op[1]))
        return keys.add_all(kbs)

    # -- the fill ring (decision 0020) ------------------------------------------------------------

    def attach_fills(self, ring: FillRing | None) -> None:
        """From now on, put fills in ``ring`` for a fill-writer process to write (None: the writer
        thread writes them again). The ring must be empty or fully committed when it changes.
        With a ring, ``put`` is called on one thread only (the event loop's)."""
        # Committed or given up to its end: no key of its records is pending any more.
        self._in_ring = {}
        self._in_ring_old = {}
        # Another ring's positions start again from its own: the old ring's head would hold the
        # older generation until the new ring passed it.
        self._in_ring_top = 0
        with self._lock:
            self._ring = ring
            self._fenced = 0 if ring is None else ring.committed

    def _age_ring_keys(self, ring: FillRing) -> None:
        """Drop the older generation of ring keys when every record of it is committed (none of its
        keys is pending then, but for a newer record, which the newer generation holds)."""
        if ring.committed >= self._in_ring_top:
            self._in_ring_old = self._in_ring
            self._in_ring = {}
            self._in_ring_top = ring.appender.head

    def _await_fills(self, position: int) -> None:
        """On the writer thread: wait until the fill writer has committed the ring up to
        ``position`` (a change queued after fills must not overtake them). A dead fill writer's
        records are skipped by its supervisor, so the wait ends then too, and a hung one is killed
        (``edge/fillwriter.py``'s ``HUNG_AFTER``)."""
        ring = self._ring
        if ring is None or ring.committed >= position:
            return
        ring.want(position)
        # Woken by the fill writer's commit; the timeout only bounds a look at whether the ring
        # was detached meanwhile.
        while self._ring is ring and not ring.await_commit(position, FENCE_LOOK):
            pass

    def write_fills(self, records: list[tuple[bytes, int]]) -> None:
        """In a fill-writer process: write a ring's records (payload, flags: fills, each to its
        zone's reserve too with ``RESERVE_FLAG``, and the Vary names of ``VARY_FLAG`` records) in one
        transaction, in their order, by the same rules as the writer thread's puts and Vary rows.
        A record that cannot be read (damaged, or a large object's) is counted in ``write_errors``
        and left out; a transaction that fails counts once there, and its fills in ``dropped``."""
        batch: list[tuple[Any, ...]] = []
        fills: list[Fill] = []
        append = fills.append
        for payload, flags in records:
            try:
                if flags & VARY_FLAG:
                    vary = ("vary", *decode_vary(payload))
                    # In the ring's order: the fills before it, it, then the fills after it.
                    if fills:
                        batch.append(RingFills("fills", fills))
                        fills = []
                        append = fills.append
                    batch.append(vary)
                    continue
                # The record is what LMDB stores (``encode_entry``'s bytes): written as it is.
                fill = fill_fields(payload, flags & RESERVE_FLAG != 0)
            except (struct.error, UnicodeDecodeError):
                self.stats.write_errors += 1
                continue
            if fill is None:
                # A large object's record: ``put`` queues it on the writer thread, behind its
                # chunks; no appender puts one in the ring.
                self.stats.write_errors += 1
                continue
            append(fill)
        if fills:
            batch.append(RingFills("fills", fills))
        try:
            self._apply(batch)
        except Exception:
            self._batch_failed(batch, "fills")

    def fill_counters(self) -> dict[str, int]:
        """The counters a fill writer publishes in its ring."""
        return {name: getattr(self.stats, name) for name in COUNTERS}

    # -- writes (queued) --------------------------------------------------------------------------

    def put(self, entry: Entry, reserve: bool = False, vary: VaryNames | None = None) -> bool:
        """Store an entry in the disk cache, and in its zone's reserve when ``reserve``, then with
        ``vary`` its base key's Vary names (``Tier.put``); returns False when the entry is dropped
        (counted) because the queue or the ring is full."""
        ring = self._ring
        key = entry.key
        hidden = self._hidden
        # A fill of a key whose delete (or its primary's) is still queued goes behind that delete,
        # on the writer thread: in the ring, the fill writer could commit it before the delete,
        # which would then remove this newer record. (``_hides``, inline: every fill asks, and
        # nearly always nothing is hidden.)
        if (
            ring is not None
            and type(entry) is Entry
            and not (hidden and (key in hidden or _primary(key) in hidden))
        ):
            # Encoded straight into the ring (in C: decision 0020's addendum), by the
            # appender itself: ``FillRing.append_entry``'s frame is a Python call more on every fill.
            appender = ring.appender
            added = appender.append_entry(entry, reserve, ring.max_record)
            if added > 0:
                if added == 2:
                    self._wake_later(ring)
                in_ring = self._in_ring
                if len(in_ring) >= RING_KEYS_KEPT:
                    self._age_ring_keys(ring)
                    in_ring = self._in_ring
                in_ring[key] = appender.head
                if vary is not None and not self._vary_in_ring(ring, key, vary):
                    self.set_vary(*vary)
                return True
            if added == 0:
                # No room in the ring: dropped, counted (its Vary names still go to the writer).
                self.stats.dropped += 1
                if vary is not None:
                    self.set_vary(*vary)
                return False
            # Too large for the ring (-1, nothing done): the writer thread takes it, after a fence
            # (rare: memory's largest objects).
        taken = self._queued < MAX_QUEUED
        if taken:
            pending = self._pending
            with self._lock:
                pending[key] = pending.get(key, 0) + 1
            # A fill does not wake the writer: it waits for more of them (``GROUP_WAIT``).
            self._enqueue(("put", entry, reserve), wake=False)
        else:
            self.stats.dropped += 1
        if vary is not None:
            self.set_vary(*vary)
        return taken

    def _wake_later(self, ring: FillRing) -> None:
        """Wake the sleeping fill writer at the end of the loop's turn, once (decision 0020's
        addendum on the wake): the put is made before the fill's answer is written (the proxy stores
        a fill as its body completes), and the woken fill writer, on a machine with few cores, took
        the CPU from the loop inside the eventfd write, before that answer left. Off the loop's
        turn (no ``read_in_turns``, or another thread), at once: ``_waking`` is the loop's alone
        (a loop that stopped with its wake still scheduled leaves it set until ``read_in_turns``)."""
        # ``_in_turn``, inline: nearly every fill wakes the fill writer on a quiet node.
        if self._call_soon is not None and threading.get_ident() == self._turn_thread:
            if self._waking:
                return
            if self._at_turn_end(self._wake_deferred):
                self._waking = True
                return
        ring.wake_if_asleep()

    def _wake_deferred(self) -> None:
        self._waking = False
        ring = self._ring
        if ring is not None:
            ring.wake_if_asleep()

    def delete(self, key: str, below: int | None = None) -> None:
        """Remove the entry under ``key`` from both areas (hidden from readers at once, until the
        delete commits). With ``below`` (a purge's position), only a record stored before it: a
        purge's removal, queued here while another process may store a newer fill of the key
        before it commits, must not remove that fill, which the purge does not cover (decision
        0009, addendum on late purge removals); the check is made in the writer's transaction."""
        with self._lock:
            self._hidden[key] += 1
            self._bounds.setdefault(key, []).append(UNBOUNDED if below is None else below)
        self._enqueue(("del", key, below))

    def delete_primary(self, primary: str) -> None:
        """Remove every variant of one URL from both areas (hidden from readers at once)."""
        with self._lock:
            self._hidden[primary] += 1
            self._hidden_primaries[primary] += 1
        self._enqueue(("delprimary", primary))

    def _vary_in_ring(self, ring: FillRing, key: str, vary: VaryNames) -> bool:
        """Put a fill's Vary names (``vary``: its base key, the names) in the ring right after the
        fill of ``key`` just appended there, when they may go there; whether they went."""
        base_key, names = vary
        if (
            base_key in _bases(key)
            and not self._hides(base_key)
            # Older names for the base still queued on the writer thread, behind a fence: the fill
            # writer could commit these first, and the thread then write the older ones over them.
            and not self._varying.get(base_key)
        ):
            # Right after its fill: the fill writer writes both in one transaction (decision
            # 0020's addendum on Vary fills), where the writer thread would wait for the fill's
            # commit behind a fence, then commit the row on its own.
            added = ring.append_vary(base_key, names)
            if added:
                if added == 2:
                    self._wake_later(ring)
                return True
        return False

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        """Remember the Vary field names of a base key (ignored when nothing is stored under it), on
        the writer thread: after the fills put before (queued before it, or in the ring: a fence
        orders it). Names that come with their fill go with it (``put``'s ``vary``)."""
        with self._lock:
            self._varying[base_key] += 1
        self._enqueue(("vary", base_key, names), wake=False)

    def run_job(self, job: Job) -> Future[None]:
        """Run a removal job on the writer, a step per transaction, interleaved with other changes
        (ordered after everything queued before it); the future completes when it has finished."""
        fut: Future[None] = Future()
        self._enqueue(("job", job, fut))
        return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued change, and every renewal so far, is committed (tests,
        benchmarks)."""
        self._enqueue(("renew",))
        with self._idle:
            return self._idle.wait_for(lambda: self._queued == 0, timeout)

    # -- large objects (``store/chunked.py``) -----------------------------------------------------

    def write_chunk(self, object_id: bytes, index: int, data: bytes) -> Future[None]:
        """Queue one chunk of a large object, in order with every other change: it is committed
        before (or with) the record that will point to it, which is queued after it. The future
        completes once it is committed."""
        done: Future[None] = Future()
        self._enqueue(("chunk", object_id, index, data, done))
        return done

    def drop_object(self, object_id: bytes) -> None:
        """Queue the removal of a large object's chunks that no record points to (a write that gave
        up); a record that does point to them keeps them."""
        self._enqueue(("dropobject", object_id))

    def read_chunk(self, object_id: bytes, index: int) -> bytes | None:
        """One chunk of a large object (one copy out of the map), or None when it is gone."""
        with self.env.begin(db=self._chunks) as txn:
            return txn.get(chunk_key(object_id, index))

    def sweep_orphans(self, older_than: float = ORPHAN_AGE) -> Future[None]:
        """Remove the chunks that no record points to and that were written more than
        ``older_than`` seconds ago (writes interrupted by a crash); the future completes when done."""

        def job(view: WriteView) -> bool:
            cur = view.txn.cursor(db=self._chunks)
            now = time.time()
            orphans = []
            found = cur.first()
            while found:
                k = cast(bytes, cur.key())
                object_id = k[:16]
                if len(k) != 16 and object_age(object_id, now) > older_than:
                    orphans.append(object_id)
                found = cur.set_range(object_id + b"\xff" * 5)
            for object_id in orphans:
                self._delete_chunks(view.txn, object_id)
            return True

        return self.run_job(job)

    def _delete_chunks(self, txn: lmdb.Transaction, object_id: bytes) -> None:
        cur = txn.cursor(db=self._chunks)
        found = cur.set_range(object_id)
        while found and cast(bytes, cur.key())[:16] == object_id:
            found = cur.delete()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the environment."""
        self._closing = True
        self._filter_stop.set()
        if self._builder is not None:
            self._builder.join()
        if self._thread.is_alive():
            self._queue.put(None)
            self._wake.set()
            self._thread.join()
        self._call_soon = None
        self._turn = None
        self.env.close()

    def _enqueue(self, op: tuple[Any, ...], *, wake: bool = True) -> None:
        ring = self._ring
        with self._lock:
            if ring is not None and ring.head > self._fenced:
                # Ordered after the fills already in the ring: the writer waits for their commit.
                self._fenced = ring.head
                self._queued += 1
                self._queue.put(("fence", self._fenced))
            self._queued += 1
            self._queue.put(op)
        if wake:
            self._wake.set()

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while not stopping:
            try:
                op: tuple[Any, ...] | None = get(timeout=RENEW_EVERY)
            except queue.Empty:
                if self._renewals:
                    self._write_batch([])
                continue
            if op is not None and op[0] in _FILLS and self._queued < MAX_BATCH_OPS:
                # More fills share this transaction's commit (``GROUP_WAIT``) if they keep coming; a
                # change of any other kind, or a full batch already queued, does not wait.
                queued = self._queued
                if not self._wake.wait(GROUP_QUIET) and self._queued > queued:
                    self._wake.wait(GROUP_WAIT - GROUP_QUIET)
            # Cleared before the queue is drained: a change queued after this is in the batch or
            # wakes the next wait.
            self._wake.clear()
            batch: list[tuple[Any, ...]] = []
            size = 0
            while op is not None:
                batch.append(op)
                kind = op[0]
                if kind == "put":
                    size += len(op[1].body)
                elif kind == "chunk":
                    size += len(op[3])
                if len(batch) >= MAX_BATCH_OPS or size >= MAX_BATCH_BYTES:
                    break
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
            if op is None:
                stopping = True
            self._write_batch(batch)
        if self._reclaimed_later:
            with self.env.begin(write=True) as txn:
                self._seen = {}
                self._write_reclaimed_later(txn)

    def _batch_failed(self, batch: list[tuple[Any, ...]], what: str) -> None:
        """Count a batch that was not written (once in ``write_errors``, its fills, queued puts and
        ring fills, in ``dropped``) and log it with the error being handled."""
        self.stats.write_errors += 1
        self.stats.dropped += sum(map(_fills_in, batch))
        log.exception("disk tier: a batch of %d %s was not written", len(batch), what)

    def _write_batch(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            self._apply(batch)
        except Exception as exc:
            self._batch_failed(batch, "changes")
            for op in batch:
                if op[0] == "chunk":
                    op[4].set_exception(exc)
        else:
            for op in batch:
                if op[0] == "chunk":
                    op[4].set_result(None)
        finally:
            pending = self._pending
            with self._idle:
                self._queued -= len(batch)
                varying = self._varying
                for op in batch:
                    kind = op[0]
                    if kind == "put":
                        key = op[1].key
                        n = pending[key] - 1
                        if n > 0:
                            pending[key] = n
                        else:
                            del pending[key]
                    elif kind == "vary":
                        base = op[1]
                        varying[base] -= 1
                        if varying[base] <= 0:
                            del varying[base]
                self._idle.notify_all()

    def _unhide(self, batch: list[tuple[Any, ...]]) -> None:
        """The batch's deletes are committed (or failed): their keys are read from disk again."""
        hidden, primaries, bounds = self._hidden, self._hidden_primaries, self._bounds
        with self._lock:
            for op in batch:
                kind = op[0]
                if kind == "del":
                    left = bounds[op[1]]
                    left.remove(UNBOUNDED if op[2] is None else op[2])
                    if not left:
                        del bounds[op[1]]
                if kind == "del" or kind == "delprimary":
                    hidden[op[1]] -= 1
                    if hidden[op[1]] <= 0:
                        del hidden[op[1]]
                    if kind == "delprimary":
                        primaries[op[1]] -= 1
                        if primaries[op[1]] <= 0:
                            del primaries[op[1]]

    def _apply(self, batch: list[tuple[Any, ...]]) -> None:
        jobs: list[tuple[Any, ...]] = []
        self._delta = {}
        renewals: dict[str, int | None] = {}
        due = time.monotonic() - self._renewed >= RENEW_EVERY or any(op[0] == "renew" for op in batch)
        if self._renewals and due:
            # Readers keep adding to the set they see; a renewal lost in the swap is only a hint.
            renewals, self._renewals = self._renewals, {}
            self._renewed = time.monotonic()
        fence = max((op[1] for op in batch if op[0] == "fence"), default=0)
        # Only jobs (a purge's reclaim, usually): each has its own transaction, and an empty one
        # here would still take the environment's write lock from every process.
        only_jobs = not renewals and all(op[0] == "job" or op[0] == "fence" for op in batch)
        try:
            if fence:
                self._await_fills(fence)
            if not only_jobs:
                keys = self._keys
                announced = -1 if keys is None else self._announce(keys, batch)
                self._commit(batch, renewals, jobs, announced)
                self._publish()
        finally:
            self._new_dbs, self._new_hosts = {}, {}
            # Before the batch's jobs run (after ``_publish``, so that a reader finding the key no
            # longer hidden begins a snapshot with the delete in it): a record a job finds under
            # such a key was put after the delete, so no lookup credited it and the job counts it
            # (``WriteView.removing``).
            self._unhide(batch)
        if only_jobs:
            for op in batch:
                if op[0] == "job":
                    self._step(op[1], op[2])
            return
        self.stats.commits += 1
        for op in jobs:
            self._step(op[1], op[2])

    def _commit(
        self,
        batch: list[tuple[Any, ...]],
        renewals: dict[str, int | None],
        jobs: list[tuple[Any, ...]],
        announced: int,
    ) -> None:
        """Apply a batch's changes but its jobs (added to ``jobs``) in one write transaction. The fills
        it writes and drops are counted once it has committed: a batch that fails writes none.
        ``announced``: the key filter's generation ``_announce`` set the batch's keys at."""
        written = dropped = 0
        with self.env.begin(write=True) as txn:
            keys = self._keys
            if keys is not None and keys.generation != announced:
                # A rebuild of the filter began or ended since: announced again, in the halves in
                # use now that this transaction holds the write lock (``_rebuild_filter``).
                self._announce(keys, batch)
            self._seen, self._grown = {}, set()
            now = time.time()
            reclaimed = max(self._stored(txn, b"reclaimed_upto"), self._reclaimed_later)
            if renewals:
                self._renew(txn, renewals, now)
            for putting, run in groupby(batch, _is_put):
                if putting:
                    counts = self._put_fills(txn, list(map(_put_form, run)), now, reclaimed)
                    written, dropped = written + counts[0], dropped + counts[1]
                    continue
                for op in run:
                    kind = op[0]
                    if kind == "fills":
                        counts = self._put_fills(txn, op[1], now, reclaimed)
                        written, dropped = written + counts[0], dropped + counts[1]
                    elif kind == "del":
                        self._delete_key(txn, op[1], op[2])
                    elif kind == "delprimary":
                        self._delete_primary(txn, op[1])
                    elif kind == "vary":
                        self._set_vary(txn, op[1], op[2])
                    elif kind == "chunk":
                        txn.put(chunk_key(op[1], op[2]), op[3], db=self._chunks)
                    elif kind == "dropobject":
                        if txn.get(op[1], db=self._chunks) is None:
                            self._delete_chunks(txn, op[1])
                    elif kind == "open":
                        for area in AREAS:
                            self._zdb(txn, area, op[1], create=False)
                    elif kind == "job":
                        jobs.append(op)
            if len(jobs) < len(batch):
                self._write_reclaimed_later(txn)
            self._evict(txn, now)
            self._write_counts(txn)
        self.stats.writes += written
        self.stats.dropped += dropped

    def _step(self, job: Job, fut: Future[None]) -> None:
        self._delta = {}
        try:
            with self.env.begin(write=True) as txn:
                self._seen = {}
                view = WriteView(self, txn)
                done = job(view)
                self._write_counts(txn)
            self._publish()
            for fn in view._after_commit:
                fn()
        except Exception as exc:
            fut.set_exception(exc)
            return
        finally:
            self._new_dbs, self._new_hosts = {}, {}
            if self._taking:
                self._taking = set()
            if self._dropping:
                self._dropping = set()
        if done:
            fut.set_result(None)
        else:
            self._enqueue(("job", job, fut))

    def _publish(self) -> None:
        """After a commit: what it created is there for readers too."""
        # First: a reader that finds a database published here must also find its turn's snapshot
        # outdated (``_reader``), or it would use the database in a transaction begun before it.
        self._generation += 1
        if self._new_dbs:
            self._dbs.update(self._new_dbs)
            self._new_dbs = {}
            self._wheres = {}
        if self._new_hosts:
            self._hosts.update(self._new_hosts)
            self._new_hosts = {}
            self._wheres = {}

    def _zdb(self, txn: lmdb.Transaction, area: bytes, zone: str, *, create: bool) -> Any:
        """A zone area's database in the writer's transaction (opened, or created, when needed);
        None when it does not exist and ``create`` is False, or when ``MAX_ZONES`` zones already
        have one (what would go there is not stored; the rest of the batch is)."""
        key = (area, zone)
        db = self._dbs.get(key) or self._new_dbs.get(key)
        if db is not None:
            return db
        name = db_name(area, zone)
        if not create and txn.get(name) is None:
            return None
        try:
            db = self.env.open_db(name, txn=txn)
        except lmdb.DbsFullError:
            log.error("disk tier: no room for zone %s's database (%d zones at most)", zone, MAX_ZONES)
            return None
        self._new_dbs[key] = db
        return db

    def _put_fills(
        self, txn: lmdb.Transaction, fills: list[Fill], now: float, reclaimed: int
    ) -> tuple[int, int]:
        """Write a run of fills (a batch's consecutive puts queued on the writer thread, or a run
        of records read from the fill ring); how many it wrote and how many it dropped, for
        ``_commit`` to count once committed.
        The run, not each record, reads the clock and adds to the counters, looks up a zone's
        database and cursor and a tag's row prefix, and writes the new records' index rows (one
        ``putmulti`` per zone, before anything that may read them: a replacement, the run's end);
        a new record is one put, without overwriting, through its zone's cursor."""
        delta = self._delta
        clock = stored_clock = self._meta_get(txn, b"clock")
        dropped = 0
        zones: dict[str, _RunZone | None] = {}
        """Zone → what the run writes there (None: no database for it)."""
        tag_heads: dict[str, bytes] = {}
        new_hosts, hosts = self._new_hosts, self._hosts
        # Keys that start with ``last_prefix`` (``host_prefix``) are of a host whose row names
        # ``last_zone`` already: a run's fills are mostly a few sites'.
        last_prefix: str | None = None
        last_zone = ""
        # A run's fills are mostly of one ledger position (it moves with purges only): its ``s``
        # rows' head is packed once for each.
        last_seq = -1
        seq_rows = b""
        order_head, seq_head = ORDER_HEAD.pack, SEQ_HEAD.pack
        for record, zone, key, kb, seq, tags, reserve, chunked in fills:
            # Below the reclaimed position, a purge already applied to the disk may cover the entry
            # (its fetch began before the purge, or memory evicted it after the purge's disk job)
            # and would not be replayed after a restart: not written (see the module rules).
            if seq < reclaimed:
                run = None
            else:
                run = zones.get(zone)
                if run is None and zone not in zones:
                    cdb = self._zdb(txn, CACHE, zone, create=True)
                    if cdb is None:
                        run = zones[zone] = None
                    else:
                        cursor = txn.cursor(db=cdb)
                        run = zones[zone] = _RunZone(cdb, cursor, cursor.put)
            if run is None:
                dropped += 1
                if chunked is not None:
                    self._delete_chunks(txn, chunked.object_id)
                continue
            if zone != last_zone or last_prefix is None or not key.startswith(last_prefix):
                host = host_of(key)
                if (new_hosts.get(host) or hosts.get(host)) != zone:
                    txn.put(b"host:" + host.encode(), zone.encode(), db=self._meta)
                    new_hosts[host] = zone
                last_prefix, last_zone = host_prefix(key), zone
            # A new key (the usual fill): the record without overwriting (one call, its flags
            # positional: dupdata, overwrite); its index rows wait for the zone's next ``putmulti``.
            if chunked is None and run.put(ENTRY + kb, record, True, False):
                clock += 1
                place = order_head(ORDER, clock)
                if seq != last_seq:
                    # ``seq_row`` inline: a written fill's ``seq`` is at least ``reclaimed``.
                    seq_rows, last_seq = seq_head(SEQ, seq), seq
                rows = run.rows
                # The ``s`` row's value names the order row: layout 3 has no key → tick row.
                rows.append((seq_rows + kb, place))
                run.order.append((place + kb, b""))
                for tag in tags:
                    head = tag_heads.get(tag)
                    if head is None:
                        head = tag_heads[tag] = tag_row(tag, b"")
                    rows.append((head + kb, b""))
                run.size += len(record)
            else:
                # A replacement, or a large object: ``_insert`` removes what it replaces (its index
                # rows too: written first), and the clock its ``_place`` reads counts the run's ticks.
                _write_rows(zones)
                delta[b"clock"] = delta.get(b"clock", 0) + clock - stored_clock
                self._insert(txn, run.db, CACHE, zone, kb, record, seq, tags, chunked)
                clock = stored_clock = self._meta_get(txn, b"clock")
            # A large object never enters the reserve (store/chunked.py): its chunks have one owner.
            if reserve and chunked is None:
                # The pending index rows stay pending: a reserve copy reads and writes only the
                # reserve's database (``_remove`` with ``keep_vary`` does not look at Vary names).
                rdb = self._zdb(txn, RESERVE, zone, create=True)
                if rdb is not None:
                    expires = now + self._reserve_retention(zone)
                    self._insert(
                        txn, rdb, RESERVE, zone, kb, with_reserve_expires(record, expires), seq, tags, None
                    )
                    txn.put(expiry_row(expires, kb), b"", db=rdb)
        _write_rows(zones)
        if clock != stored_clock:
            delta[b"clock"] = delta.get(b"clock", 0) + clock - stored_clock
        for zone, run in zones.items():
            if run is not None and run.records:
                self._account(CACHE, zone, run.size, run.records)
        return len(fills) - dropped, dropped

    def _insert(
        self,
        txn: lmdb.Transaction,
        db: Any,
        area: bytes,
        zone: str,
        kb: bytes,
        record: bytes,
        seq: int,
        tags: tuple[str, ...],
        chunked: ChunkedEntry | None,
    ) -> None:
        """Write a record (of an entry stored at ``seq`` with ``tags``; ``chunked``: the large
        object it is) and its index rows, replacing the key's record in that area if there is one
        (its index rows go, its Vary names stay: the new record is under the same base key); in
        the disk cache, at the most recent end of the eviction order."""
        ek = ENTRY + kb
        # Tried without overwriting: for a new key (the usual fill) that is the one call, where
        # reading first for a record to replace was a second.
        if not txn.put(ek, record, db=db, overwrite=False):
            self._remove(txn, area, zone, kb, keep_vary=True)
            txn.put(ek, record, db=db)
        if area == CACHE:
            self._place(txn, db, seq_row(seq, kb), kb)
        else:
            txn.put(seq_row(seq, kb), b"", db=db)
        for tag in tags:
            txn.put(tag_row(tag, kb), b"", db=db)
        extra = 0
        if chunked is not None:
            txn.put(LARGE + kb, chunked.object_id, db=db)
            txn.put(chunked.object_id, handle(area, zone, kb), db=self._chunks)
            extra = chunked.length
        self._account(area, zone, len(record) + extra, 1)

    def _delete_key(self, txn: lmdb.Transaction, key: str, below: int | None) -> None:
        zone = self._writer_zone_of(key)
        if zone is None:
            return
        kb = key_bytes(key)
        for area in AREAS:
            if below is not None:
                db = self._zdb(txn, area, zone, create=False)
                raw = None if db is None else txn.get(ENTRY + kb, db=db)
                if raw is None or REC.unpack_from(raw)[1] >= below:
                    # Stored at or after the purge (a refill, maybe by another process): not covered.
                    continue
            self._remove(txn, area, zone, kb)

    def _hides(self, key: str) -> bool:
        """Whether a delete of ``key`` (or of its primary URL) is queued and not yet committed."""
        hidden = self._hidden
        return bool(hidden) and (key in hidden or _primary(key) in hidden)

    def _removes(self, key: str, stored_seq: int) -> bool:
        """Whether a delete queued in this process and not yet committed removes the record of
        ``key`` stored at ``stored_seq`` (see ``WriteView.removing``)."""
        if not self._hidden:
            return False
        if _primary(key) in self._hidden_primaries:
            return True
        bounds = self._bounds.get(key)
        return bounds is not None and any(stored_seq < b for b in tuple(bounds))

    def _delete_primary(self, txn: lmdb.Transaction, primary: str) -> None:
        zone = self._writer_zone_of(primary)
        if zone is None:
            return
        view = WriteView(self, txn)
        for h in view.scan_prefix(primary, None, 1 << 62, zone):
            # The peeked record is the one the delete removes: read once.
            entry = view.peek(h)
            if entry is not None and (entry.key == primary or entry.key.startswith(primary + VARIANT_SEP)):
                view.delete(h)

    def _set_vary(self, txn: lmdb.Transaction, base_key: str, names: tuple[str, ...]) -> None:
        zone = self._writer_zone_of(base_key)
        if zone is None or not self._under(txn, zone, base_key):
            return
        db = self._zdb(txn, CACHE, zone, create=True)
        if db is not None:
            txn.put(VARY + key_bytes(base_key), "\x00".join(names).encode(), db=db)

    def _under(self, txn: lmdb.Transaction, zone: str, base_key: str) -> bool:
        """Whether a record of ``zone`` is stored under ``base_key`` (in either area)."""
        bb, exact = prefix_bytes(base_key)
        if not exact:
            return True  # cut keys cannot be told apart by their stored form: keep the names
        row = ENTRY + bb
        for area in AREAS:
            db = self._zdb(txn, area, zone, create=False)
            if db is None:
                continue
            cur = txn.cursor(db=db)
            # A base's own record sorts first, then its variants (NUL sorts before any other byte).
            if cur.set_range(row):
                k = bytes(cur.key())
                if k == row or k.startswith(row + _SEP):
                    return True
        return False

    def _remove(
        self,
        txn: lmdb.Transaction,
        area: bytes,
        zone: str,
        kb: bytes,
        known: tuple[Record, int] | None = None,
        *,
        keep_vary: bool = False,
    ) -> int:
        """Remove a record and its index rows (``known``: the record already decoded, and its size);
        the Vary names it was the last record under go too, unless ``keep_vary`` (a replacement)."""
        db = self._zdb(txn, area, zone, create=False)
        if db is None:
            return 0
        if known is None:
            raw = txn.get(ENTRY + kb, db=db)
            if raw is None:
                return 0
            size = len(raw)
            try:
                rec = decode_entry(raw, body=False)
            except (struct.error, UnicodeDecodeError):
                txn.delete(ENTRY + kb, db=db)
                return size
        else:
            rec, size = known
        entry = rec.entry
        txn.delete(ENTRY + kb, db=db)
        if type(entry) is ChunkedEntry:
            txn.delete(LARGE + kb, db=db)
            self._delete_chunks(txn, entry.object_id)
            size += entry.length
        # In the disk cache the ``s`` row's value is the record's order row, less the key.
        place = txn.pop(seq_row(entry.stored_seq, kb), db=db)
        for tag in entry.tags:
            txn.delete(tag_row(tag, kb), db=db)
        if area == CACHE:
            if place:
                txn.delete(bytes(place) + kb, db=db)
        else:
            txn.delete(expiry_row(rec.reserve_expires, kb), db=db)
        self._account(area, zone, -size, -1)
        if not keep_vary:
            self._forget_vary(txn, zone, entry.key)
        return size

    def _forget_vary(self, txn: lmdb.Transaction, zone: str, key: str) -> None:
        """Delete the Vary names of the bases ``key`` was under once nothing is stored under them."""
        db = self._zdb(txn, CACHE, zone, create=False)
        if db is None:
            return
        for base in _bases(key):
            vk = VARY + key_bytes(base)
            if txn.get(vk, db=db) is not None and not self._under(txn, zone, base):
                txn.delete(vk, db=db)

    def _account(self, area: bytes, zone: str, size: int, count: int) -> None:
        # Summed in memory and written once per transaction (``_write_counts``): meta updates per
        # record would be a write per removed record more.
        names = self._count_names.get((area, zone))
        if names is None:
            z = zone.encode()
            names = (
                (b"used:c", b"count:c", b"used:c:" + z, b"count:c:" + z)
                if area == CACHE
                else (b"used:r:" + z, b"count:r:" + z)
            )
            self._count_names[(area, zone)] = names
        delta = self._delta
        for i in range(0, len(names), 2):
            used, records = names[i], names[i + 1]
            delta[used] = delta.get(used, 0) + size
            delta[records] = delta.get(records, 0) + count
        if area == RESERVE and size > 0:
            self._grown.add(zone)

    def _write_counts(self, txn: lmdb.Transaction) -> None:
        delta, self._delta = self._delta, {}
        for name, d in delta.items():
            if d:
                self._meta_put(txn, name, self._stored(txn, name) + d)

    def _renew(self, txn: lmdb.Transaction, renewals: dict[str, int | None], now: float) -> None:
        """Renew the records read from disk since the last renewal (key → the disk-cache record's
        ``stored_seq``, None for the reserve's): a disk-cache record moves to the most recent end
        of the order if it is among the oldest ``1/RENEW_OLDEST``, a reserve record's retention
        starts again (``_touch``). The clock and the count are read once per batch."""
        clock = start = self._meta_get(txn, b"clock")
        count = self._meta_get(txn, b"count:c")
        young = count - count // RENEW_OLDEST
        unpack, pack = ORDER_HEAD.unpack, ORDER_HEAD.pack
        for key, seq in renewals.items():
            zone = self._writer_zone_of(key)
            if zone is None:
                continue
            if seq is None:
                self._touch(txn, zone, key, now)
                continue
            db = self._zdb(txn, CACHE, zone, create=False)
            if db is None:
                continue
            kb = key_bytes(key)
            # The ``s`` row of the record read holds its place: none when that record is gone (a
            # record stored since at another position was placed when it was written).
            srow = seq_row(seq, kb)
            old = txn.get(srow, db=db)
            if not old or clock - unpack(old)[1] < young:
                continue
            txn.delete(bytes(old) + kb, db=db)
            clock += 1
            place = pack(ORDER, clock)
            txn.put(srow, place, db=db)
            txn.put(place + kb, b"", db=db)
        if clock != start:
            self._delta[b"clock"] = self._delta.get(b"clock", 0) + clock - start

    def _touch(self, txn: lmdb.Transaction, zone: str, key: str, now: float) -> None:
        """Start a reserve record's retention again."""
        db = self._zdb(txn, RESERVE, zone, create=False)
        if db is None:
            return
        kb = key_bytes(key)
        raw = txn.get(ENTRY + kb, db=db)
        if raw is None:
            return
        expires = now + self._reserve_retention(zone)
        txn.delete(expiry_row(reserve_expires_of(raw), kb), db=db)
        txn.put(expiry_row(expires, kb), b"", db=db)
        txn.put(ENTRY + kb, with_reserve_expires(raw, expires), db=db)

    def _place(self, txn: lmdb.Transaction, db: Any, srow: bytes, kb: bytes) -> None:
        """Put a disk-cache record (its ``s`` row ``srow``) at the most recent end of the eviction
        order. The order lives beside the record (a ``~`` row, named by the ``s`` row's value), so
        renewing it never rewrites the record."""
        # The clock is a counter like the others: read once per transaction, written at its end.
        delta = self._delta
        delta[b"clock"] = delta.get(b"clock", 0) + 1
        place = ORDER_HEAD.pack(ORDER, self._meta_get(txn, b"clock"))
        txn.put(srow, place, db=db)
        txn.put(place + kb, b"", db=db)

    def _zone_dbs(self, area: bytes) -> list[tuple[str, Any]]:
        return [(zone, db) for (a, zone), db in {**self._dbs, **self._new_dbs}.items() if a == area]

    def _evict(self, txn: lmdb.Transaction, now: float) -> None:
        """Least recently used first in the disk cache (the zones' orders merged by tick); per
        reserve zone, the expired and then the soonest to expire (the least recently accessed)
        while over its budget."""
        used = self._meta_get(txn, b"used:c")
        if used > self.budget:
            heads: list[tuple[bytes, int]] = []
            cursors = []
            for i, (zone, db) in enumerate(self._zone_dbs(CACHE)):
                cur = txn.cursor(db=db)
                cursors.append((zone, db, cur))
                if cur.set_range(ORDER) and bytes(cur.key()[:1]) == ORDER:
                    heads.append((bytes(cur.key()), i))
            heapq.heapify(heads)
            victims: list[tuple[str, bytes, tuple[Record, int] | None]] = []
            while heads and used > self.budget:
                k, i = heads[0]
                zone, db, cur = cursors[i]
                kb = k[_ORDER_AT:]
                raw = txn.get(ENTRY + kb, db=db)
                known = None
                if raw is not None:
                    used -= len(raw) + large_bytes(raw)
                    # Decoded here for its removal below, which would read it again.
                    try:
                        known = (decode_entry(raw, body=False), len(raw))
                    except (struct.error, UnicodeDecodeError):
                        known = None
                victims.append((zone, kb, known))
                if cur.next() and bytes(cur.key()[:1]) == ORDER:
                    heapq.heapreplace(heads, (bytes(cur.key()), i))
                else:
                    heapq.heappop(heads)
            for zone, kb, known in victims:
                self._remove(txn, CACHE, zone, kb, known)
                self.stats.evictions += 1
        grown, self._grown = self._grown, set()
        if time.monotonic() - self._reserve_swept >= RENEW_EVERY:
            self._reserve_swept = time.monotonic()
            reserves = self._zone_dbs(RESERVE)
        else:
            # Between the sweeps for expired records, only a reserve that grew can be over budget:
            # checking every zone's reserve was three reads per configured zone per batch.
            reserves = [(zone, self._zdb(txn, RESERVE, zone, create=False)) for zone in grown]
        for zone, db in reserves:
            if db is not None:
                self._evict_reserve(txn, zone, db, now)

    def _evict_reserve(self, txn: lmdb.Transaction, zone: str, db: Any, now: float) -> None:
        budget = self._reserve_budget(zone)
        used = self._meta_get(txn, b"used:r:" + zone.encode())
        cur = txn.cursor(db=db)
        if not cur.set_range(EXPIRY):
            return
        victims = []
        now_ms = int(now * 1000)
        for raw_key in cur.iternext(keys=True, values=False):
            k = bytes(raw_key)
            if not k.startswith(EXPIRY):
                break
            expires = U64.unpack_from(k, len(EXPIRY))[0]
            if expires > now_ms and used <= budget:
                break
            kb = k[len(EXPIRY) + U64.size :]
            raw = txn.get(ENTRY + kb, db=db)
            used -= 0 if raw is None else len(raw)
            victims.append((kb, expires <= now_ms))
        for kb, expired in victims:
            self._remove(txn, RESERVE, zone, kb)
            if expired:
                self.stats.reserve_expired += 1
            else:
                self.stats.reserve_evictions += 1

    # -- whole-zone removal -----------------------------------------------------------------------

    def _wipe(self, view: WriteView, zone: str, area: bytes | None, before: int, report: Reported) -> bool:
        txn = view.txn
        areas = AREAS if area is None else (area,)
        kept: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for a in areas:
            db = self._zdb(txn, a, zone, create=False)
            if db is None:
                continue
            rows = self._kept_rows(txn, db, before)
            if rows is None:
                return self._wipe_step(view, zone, areas, before, report)
            kept[a] = rows
        if not kept:
            view.after_commit(lambda: report(0, 0, 0))
            return True
        published = self._dbs.get((CACHE, zone))
        with self._lock:
            self._dropping.update((a, zone) for a in kept)
        # What the zone looked like before the drop, to find the records lookups removed meanwhile.
        before_drop = self.env.begin()
        removed = dict.fromkeys(AREAS, 0)
        freed = 0
        z = zone.encode()
        for a, rows in kept.items():
            db = self._zdb(txn, a, zone, create=False)
            names = (b"used:c:" + z, b"count:c:" + z) if a == CACHE else (b"used:r:" + z, b"count:r:" + z)
            used, count = (self._meta_get(txn, n) for n in names)
            if a == CACHE:
                self._drop_large(txn, db, {k for k, _ in rows if k[:1] == LARGE})
            txn.drop(db, delete=False)
            self._account(a, zone, -used, -count)
            kept_bytes = 0
            srow = b""
            for k, v in rows:
                txn.put(k, v, db=db)
                if k[:1] == SEQ:
                    srow = k
                elif k[:1] == ENTRY:
                    size = len(v) + large_bytes(v)
                    kept_bytes += size
                    self._account(a, zone, size, 1)
                    if a == CACHE:
                        self._place(txn, db, srow, k[len(ENTRY) :])
            removed[a] = count - sum(1 for k, _ in rows if k[:1] == ENTRY)
            freed += used - kept_bytes

        def settle() -> None:
            try:
                credited = 0
                if CACHE in kept and published is not None:
                    credited = self._credited(before_drop, published, zone, before)
            finally:
                before_drop.abort()
            report(removed[CACHE] - credited, removed[RESERVE], freed)

        view.after_commit(settle)
        return True

    def _kept_rows(self, txn: lmdb.Transaction, db: Any, before: int) -> list[tuple[bytes, bytes]] | None:
        """The rows of the records stored at or after ``before`` (each record's seq row, then its
        record, tag, expiry and Vary rows: the eviction place, the seq row's value in the disk
        cache, is given anew), or None when there are more than ``WIPE_KEEP_MAX``."""
        cur = txn.cursor(db=db)
        rows: list[tuple[bytes, bytes]] = []
        if not cur.set_range(SEQ + U64.pack(max(before, 0))):
            return rows
        n = 0
        for raw_key in cur.iternext(keys=True, values=False):
            k = bytes(raw_key)
            if k[:1] != SEQ:
                break
            n += 1
            if n > WIPE_KEEP_MAX:
                return None
            kb = k[_SEQ_AT:]
            raw = txn.get(ENTRY + kb, db=db)
            if raw is None:
                continue
            rows.append((k, b""))
            rows.append((ENTRY + kb, bytes(raw)))
            try:
                rec = decode_entry(raw, body=False)
            except (struct.error, UnicodeDecodeError):
                continue
            rows.extend((tag_row(t, kb), b"") for t in rec.entry.tags)
            if type(rec.entry) is ChunkedEntry:
                rows.append((LARGE + kb, rec.entry.object_id))
            if rec.reserve_expires:
                rows.append((expiry_row(rec.reserve_expires, kb), b""))
            for base in _bases(rec.entry.key):
                vk = VARY + key_bytes(base)
                names = txn.get(vk, db=db)
                if names is not None:
                    rows.append((vk, bytes(names)))
        return rows

    def _drop_large(self, txn: lmdb.Transaction, db: Any, kept: set[bytes]) -> None:
        """Delete the chunks of the large objects in a disk-cache database about to be dropped,
        except those of the records it keeps (their ``g`` rows in ``kept``)."""
        cur = txn.cursor(db=db)
        if not cur.set_range(LARGE):
            return
        for k, v in cur.iternext():
            if bytes(k[:1]) != LARGE:
                break
            if bytes(k) not in kept:
                self._delete_chunks(txn, bytes(v))

    def _credited(self, snapshot: lmdb.Transaction, db: Any, zone: str, before: int) -> int:
        """Disk-cache records of ``zone`` (in ``db``) stored before ``before`` that a lookup had
        queued a delete of (read in the ``snapshot`` taken before the drop): their lookup credit
        counts them. Only a database published before the drop can have been read by a lookup here."""
        with self._lock:
            keys = [k for k in self._hidden if k not in self._hidden_primaries]
            primaries = list(self._hidden_primaries)
        seen: set[bytes] = set()
        for key in keys:
            if self._hosts.get(host_of(key)) == zone:
                raw = snapshot.get(ENTRY + key_bytes(key), db=db)
                if raw is None:
                    continue
                seq = REC.unpack_from(raw)[1]
                if seq < before and self._removes(key, seq):
                    seen.add(key_bytes(key))
        for primary in primaries:
            if self._hosts.get(host_of(primary)) != zone:
                continue
            pb = key_bytes(primary)
            cur = snapshot.cursor(db=db)
            if not cur.set_range(ENTRY + pb):
                continue
            for k, raw in cur.iternext():
                kb = bytes(k[len(ENTRY) :])
                if not (kb == pb or kb.startswith(pb + _SEP)):
                    break
                if REC.unpack_from(raw)[1] < before:
                    seen.add(kb)
        return len(seen)

    def _wipe_step(
        self, view: WriteView, zone: str, areas: tuple[bytes, ...], before: int, report: Reported
    ) -> bool:
        """Too many records to keep for one transaction: remove the covered ones, oldest position
        first, ``JOB_STEP`` per transaction (those with a delete queued too, uncounted: see
        ``WriteView.removing``)."""
        txn = view.txn
        removed = dict.fromkeys(AREAS, 0)
        freed = 0
        budget = JOB_STEP
        for a in areas:
            db = self._zdb(txn, a, zone, create=False)
            if db is None:
                continue
            cur = txn.cursor(db=db)
            batch: list[bytes] = []
            if cur.set_range(SEQ):
                for raw_key in cur.iternext(keys=True, values=False):
                    k = bytes(raw_key)
                    if k[:1] != SEQ or U64.unpack_from(k, len(SEQ))[0] >= before or len(batch) >= budget:
                        break
                    batch.append(k)
            for k in batch:
                kb = k[_SEQ_AT:]
                entry = view.peek(handle(a, zone, kb))
                if entry is None:
                    txn.delete(k, db=db)  # a position row left without its record
                    continue
                credited = view.removing(entry.key, entry.stored_seq)
                view.taking(entry.key)
                freed += view.delete(handle(a, zone, kb))
                if not credited:
                    removed[a] += 1
            budget -= len(batch)
            if budget <= 0:
                break
        c, r = removed[CACHE], removed[RESERVE]
        view.after_commit(lambda: report(c, r, freed))
        return budget > 0

    # -- meta -------------------------------------------------------------------------------------

    def _meta_get(self, txn: lmdb.Transaction, name: bytes) -> int:
        """A counter as this transaction sees it (stored value plus this transaction's changes)."""
        return self._stored(txn, name) + self._delta.get(name, 0)

    def _stored(self, txn: lmdb.Transaction, name: bytes) -> int:
        """A counter as stored when the writer's transaction began (or as it last wrote it)."""
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = _int(txn.get(name, db=self._meta))
        return seen

    def _write_reclaimed_later(self, txn: lmdb.Transaction) -> None:
        # Each process's reclaim writes the shared position: the larger one wins, so that a
        # process behind another never moves it back (it would replay purges already applied).
        if self._reclaimed_later:
            stored = self._stored(txn, b"reclaimed_upto")
            if self._reclaimed_later > stored:
                self._meta_put(txn, b"reclaimed_upto", self._reclaimed_later)
            self._reclaimed_later = 0

    def _meta_put(self, txn: lmdb.Transaction, name: bytes, value: int) -> None:
        txn.put(name, INT.pack(value), db=self._meta)
        self._seen[name] = value


def _int(raw: bytes | memoryview | None) -> int:
    """A stored counter (0 when it was never written)."""
    return 0 if raw is None else int(INT.unpack(raw)[0])
