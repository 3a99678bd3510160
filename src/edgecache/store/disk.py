"""The persistent tier: entries in an LMDB environment on local disk, shared by a node's processes.

Rules of this module (the engine choice is measured in docs/decisions/0009-persistent-tier.md):
- Two areas in one environment, told apart by the first byte of the database key: the **disk cache**
  (``b"c"``), every storable object within ``budget`` bytes, and the **Cache Reserve** (``b"r"``),
  per zone, the eligible objects within that zone's own budget, each kept ``retention`` seconds after
  its last access. An object in both areas is two records: the areas evict independently.
- Reads are synchronous and take microseconds while the pages are in the page cache (one read
  transaction, one ``get``). They may run on any thread or process.
- Every change goes through one queue to one writer thread, which applies a batch of them in one
  write transaction and commits it (LMDB fsyncs on commit): the event loop never waits for the disk.
  The queue is ordered, so a put enqueued before a purge's removal job is on disk before that job
  looks for it. A delete is hidden from readers from the moment it is enqueued.
- Indexes live in the environment, maintained in the same transaction as the record, never rebuilt at
  start: the records themselves are ordered by key (URL, host and prefix ranges), ``tags`` maps
  ``zone NUL tag`` to database keys, ``zones`` maps a zone to its database keys, ``order`` (with
  ``ticks``) keeps the disk cache's eviction order and ``retain`` each reserve zone's expiry order.
- Eviction in the disk cache is least-recently-used by a logical clock: a record's position is
  renewed when it is read from disk (a memory-tier miss), if it is among the oldest
  ``1/RENEW_OLDEST`` of the order; memory hits never write. Argued in decision 0009. Reserve
  records expire ``retention`` after their last read, and over a zone's budget the one expiring
  soonest goes first.
- A key longer than ``_MAX_INLINE_KEY`` bytes is stored under its first bytes plus a digest (LMDB
  keys are at most 511 bytes); range lookups then compare the full key kept in the record.
- Removing a whole zone (a reserve clear, a hard purge of everything) walks the ``zones`` index with
  one cursor and unpacks each record's header in place (``WriteView.wipe_zone``), in transactions of
  ``WIPE_SLICE`` seconds of work: every index row still goes with its record, in the same
  transaction, so an interrupted removal leaves a consistent store that the rerun finishes.
- ``reclaimed_upto`` is the purge-ledger position up to which every purge has been applied to what
  is on disk. It is written in the transaction that finishes a purge's removal job, so after a crash
  the node replays the purges after it (``Node.__init__``, ``PurgeService.replay``). A job that
  changed nothing does not write it (a commit, with its sync, per purge that covers nothing on disk
  cost more than the rest of the purge): the position rides in the next transaction that writes
  anyway, and at close. A crash before then replays purges that had nothing to remove here.
- A crash (kill -9) loses at most the queued changes: a committed transaction is whole, an
  uncommitted one is invisible, so no torn record is ever read.
- Only whole responses are stored (``TierChain`` keeps 206 parts in memory). Up to the memory
  tier's ``max_object_bytes`` a record holds the body and is read whole on a hit; a larger object's
  record holds a manifest, and its bytes are in the ``chunks`` database (``store/chunked.py``): its
  record is written after its chunks, and removed with them, in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lmdb

from edgecache.store.chunked import MANIFEST, ORPHAN_AGE, ChunkedEntry, chunk_key, chunked_from, object_age
from edgecache.store.entry import VARIANT_SEP, Entry

log = logging.getLogger(__name__)

CACHE = b"c"
RESERVE = b"r"

_MAX_INLINE_KEY = 440
"""Key bytes stored as they are; longer keys are cut here and get a digest (LMDB's limit is 511)."""
_DIGEST_MARK = b"\xff"
"""Never in UTF-8, so a cut key cannot collide with a stored-as-is one."""
_MAX_BATCH_OPS = 512
_MAX_BATCH_BYTES = 64 << 20
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
WIPE_SLICE = 0.05
"""Seconds of work per write transaction of a whole-zone removal: its records cost a few µs each,
so a slice of ``JOB_STEP`` would pay a commit (an fsync) per few ms of work, and the fsyncs, not the
work, would set the rate (``bench/disk_tier.py``). Fills wait at most this long behind it."""
_WIPE_CHUNK = 512

_REC = struct.Struct("<HqdddddddBHIHI")
"""status, stored_seq, response_time, initial_age, freshness_lifetime, swr, sie,
stale_since (NaN: none), reserve_expires, flags, len(zone), len(key), len(tags), len(head);
then zone, key, tags (NUL-joined), head, body."""
_F_MUST_REVALIDATE = 1
_F_NO_CACHE = 2
_F_AUTH_OK = 4
_F_LENGTH_KNOWN = 8
_F_CHUNKED = 16
"""The body is a large object's manifest (``store/chunked.py``)."""
_FLAGS_AT = struct.calcsize("<Hqddddddd")
_TICK = struct.Struct(">Q")
"""Big-endian, so that order keys sort by tick."""
_INT = struct.Struct("<q")


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
    dropped: int = 0


@dataclass(slots=True)
class JobProgress:
    """What a removal job has done so far."""

    objects: int = 0
    bytes: int = 0
    done: bool = False


def db_key(area: bytes, key: str) -> bytes:
    """The database key of a cache key in an area."""
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= _MAX_INLINE_KEY:
        return area + raw
    return area + raw[:_MAX_INLINE_KEY] + _DIGEST_MARK + hashlib.sha256(raw).digest()[:16]


def _primary(key: str) -> str:
    i = key.find(VARIANT_SEP)
    return key if i < 0 else key[:i]


def _range_start(area: bytes, prefix: str) -> bytes:
    return area + prefix.encode("utf-8", "surrogatepass")[:_MAX_INLINE_KEY]


def _tag_key(zone: str, tag: str) -> bytes:
    raw = (zone + "\x00" + tag).encode()
    return (
        raw
        if len(raw) <= _MAX_INLINE_KEY
        else raw[:_MAX_INLINE_KEY] + _DIGEST_MARK + hashlib.sha256(raw).digest()[:16]
    )


def encode_entry(entry: Entry, reserve_expires: float) -> bytes:
    """The record of an entry."""
    zone = entry.zone.encode()
    key = entry.key.encode("utf-8", "surrogatepass")
    tags = "\x00".join(entry.tags).encode()
    flags = (
        (_F_MUST_REVALIDATE if entry.must_revalidate else 0)
        | (_F_NO_CACHE if entry.no_cache else 0)
        | (_F_AUTH_OK if entry.auth_ok else 0)
        | (_F_LENGTH_KNOWN if entry.length_known else 0)
        | (_F_CHUNKED if type(entry) is ChunkedEntry else 0)
    )
    return b"".join(
        (
            _REC.pack(
                entry.status,
                entry.stored_seq,
                entry.response_time,
                entry.initial_age,
                entry.freshness_lifetime,
                entry.stale_while_revalidate,
                entry.stale_if_error,
                math.nan if entry.stale_since is None else entry.stale_since,
                reserve_expires,
                flags,
                len(zone),
                len(key),
                len(tags),
                len(entry.head),
            ),
            zone,
            key,
            tags,
            entry.head,
            entry.manifest if type(entry) is ChunkedEntry else entry.body,
        )
    )


@dataclass(slots=True)
class Record:
    """A decoded record: the entry and the bookkeeping the store keeps beside it."""

    entry: Entry
    reserve_expires: float


def decode_entry(raw: bytes | memoryview, *, body: bool = True) -> Record:
    """An entry from its record (raises ``struct.error`` or ``UnicodeDecodeError`` on a bad one);
    without ``body`` the entry's body is left empty (what removal jobs match on needs no copy)."""
    status, seq, rtime, iage, life, swr, sie, stale, rexp, flags, lz, lk, lt, lh = _REC.unpack_from(raw)
    p = _REC.size
    view = memoryview(raw)
    zone = bytes(view[p : p + lz]).decode()
    p += lz
    key = bytes(view[p : p + lk]).decode("utf-8", "surrogatepass")
    p += lk
    tags_raw = bytes(view[p : p + lt]).decode()
    p += lt
    head = bytes(view[p : p + lh])
    p += lh
    entry = Entry(
        zone=zone,
        key=key,
        status=status,
        head=head,
        body=bytes(view[p:]) if body else b"",
        tags=tuple(tags_raw.split("\x00")) if tags_raw else (),
        stored_seq=seq,
        response_time=rtime,
        initial_age=iage,
        freshness_lifetime=life,
        stale_while_revalidate=swr,
        stale_if_error=sie,
        must_revalidate=bool(flags & _F_MUST_REVALIDATE),
        no_cache=bool(flags & _F_NO_CACHE),
        auth_ok=bool(flags & _F_AUTH_OK),
        length_known=bool(flags & _F_LENGTH_KNOWN),
        stale_since=None if math.isnan(stale) else stale,
    )
    if flags & _F_CHUNKED:
        entry = chunked_from(entry, view[p:])
    return Record(entry, rexp)


def decode_hit(raw: bytes | memoryview, key: str, raw_key: bytes) -> Record | None:
    """The record of ``key`` as the hit path needs it, or None when the record is another key's (a
    long key's digest collided): the key is compared as bytes, never decoded, and the head and
    body are the only copies taken from ``raw`` (raises as ``decode_entry``)."""
    status, seq, rtime, iage, life, swr, sie, stale, rexp, flags, lz, lk, lt, lh = _REC.unpack_from(raw)
    view = memoryview(raw)
    p = _REC.size + lz
    q = p + lk
    if view[p:q] != raw_key:
        return None
    zone_raw = bytes(view[_REC.size : p])
    zone = _ZONE_NAMES.get(zone_raw)
    if zone is None:
        zone = _zone_name(zone_raw)
    h = q + lt
    # Positional: with keywords, building the entry cost more than the rest of the decoding.
    entry = Entry(
        zone,
        key,
        status,
        bytes(view[h : h + lh]),
        bytes(view[h + lh :]),
        tuple(str(view[q:h], "utf-8").split("\x00")) if lt else (),
        seq,
        rtime,
        iage,
        life,
        swr,
        sie,
        bool(flags & _F_MUST_REVALIDATE),
        bool(flags & _F_NO_CACHE),
        bool(flags & _F_AUTH_OK),
        bool(flags & _F_LENGTH_KNOWN),
        None if math.isnan(stale) else stale,
    )
    if flags & _F_CHUNKED:
        entry = chunked_from(entry, view[h + lh :])
    return Record(entry, rexp)


_ZONE_NAMES: dict[bytes, str] = {}
"""Zone ids as read from records, decoded once (there are few)."""


def _zone_name(raw: bytes) -> str:
    name = raw.decode()
    if len(_ZONE_NAMES) >= 4096:
        _ZONE_NAMES.clear()
    _ZONE_NAMES[raw] = name
    return name


def large_bytes(raw: bytes | memoryview) -> int:
    """The chunk bytes a record stands for beyond itself (0 unless it is a large object's)."""
    if not _chunked(raw):
        return 0
    return int(MANIFEST.unpack_from(raw, len(raw) - MANIFEST.size)[0])


def _chunked(raw: bytes | memoryview) -> bool:
    """Whether a record is a large object's (an unreadable, too short one is not)."""
    return len(raw) >= _REC.size + MANIFEST.size and bool(raw[_FLAGS_AT] & _F_CHUNKED)


class WriteView:
    """The store as seen inside the writer's transaction: what removal jobs use.

    Handles are database keys (opaque to callers): a cache key may have one in each area."""

    def __init__(self, store: DiskStore, txn: lmdb.Transaction) -> None:
        self._s = store
        self.txn = txn
        self._peeked: tuple[bytes, Record, int] | None = None

    def scan_prefix(self, prefix: str, after: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records whose key starts with ``prefix``,
        in both areas (the disk cache's first)."""
        out: list[bytes] = []
        exact = len(prefix.encode("utf-8", "surrogatepass")) <= _MAX_INLINE_KEY
        cur = self.txn.cursor(db=self._s._entries)
        for area in (CACHE, RESERVE):
            if after is not None and after[:1] > area:
                continue
            start = _range_start(area, prefix)
            if not cur.set_range(after if after is not None and after[:1] == area else start):
                continue
            for raw_key in cur.iternext(keys=True, values=False):
                k = bytes(raw_key)
                if not k.startswith(start):
                    break
                if k == after:
                    continue
                if not exact or _DIGEST_MARK in k[len(start) :]:
                    rec = self.peek(k)
                    if rec is None or not rec.key.startswith(prefix):
                        continue
                out.append(k)
                if len(out) >= limit:
                    return out
        return out

    def scan_tag(self, zone: str, tag: str, after: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records of ``zone`` carrying ``tag``."""
        return self._scan_dup(self._s._tags, _tag_key(zone, tag), after, limit)

    def scan_zone(self, zone: str, after: bytes | None, limit: int, area: bytes | None = None) -> list[bytes]:
        """Up to ``limit`` handles, after ``after``, of the records of ``zone`` (one area or both)."""
        return self._scan_dup(self._s._zones, zone.encode(), after, limit, area)

    def wipe_zone(
        self, zone: str, area: bytes | None, before: int, after: bytes | None, limit: int
    ) -> tuple[int, int, int, bytes | None]:
        """Remove up to ``limit`` records of ``zone`` (one area or both) stored before ledger
        position ``before``, walking the zone index after ``after``; returns the disk-cache and
        reserve records removed, their bytes, and where to resume (None once the zone is done; b"":
        from the start).

        The whole-zone path of clears and purges of everything: the record's header is unpacked in
        place, no ``Entry`` is built, and the zone index is walked and trimmed by one cursor, so a
        record costs a handful of C calls (``bench/disk_tier.py``)."""
        s = self._s
        txn = self.txn
        entries, tags_db, ticks, order, retain = s._entries, s._tags, s._ticks, s._order, s._retain
        zkey = zone.encode()
        tag_prefix = zkey + b"\x00"
        cur = txn.cursor(db=s._zones)
        start = after or area
        found = cur.set_range_dup(zkey, start) if start else cur.set_key(zkey)
        removed_c = removed_r = freed_c = freed_r = 0
        seen = 0
        last: bytes | None = None
        unpack = _REC.unpack_from
        pack_tick = _TICK.pack
        while found and seen < limit:
            # The write transaction hands out bytes, never buffers.
            handle = cast(bytes, cur.value())
            if handle == after:
                found = cur.next_dup()
                continue
            if area is not None and handle[:1] != area:
                found = False
                break
            seen += 1
            raw = cast(bytes | None, txn.get(handle, db=entries))
            if raw is None:
                # An index row without its record: not a record to count, but garbage to drop.
                found = cur.delete() and cur.key() == zkey
                continue
            try:
                _, seq, _, _, _, _, _, _, rexp, _, lz, lk, lt, _ = unpack(raw)
            except struct.error:
                seq, rexp, lz, lk, lt = -1, 0.0, 0, 0, 0
            if seq >= before:
                last = handle
                found = cur.next_dup()
                continue
            p = _REC.size + lz + lk
            tags_raw = raw[p : p + lt]
            txn.delete(handle, db=entries)
            if tags_raw:
                for tag in tags_raw.split(b"\x00"):
                    tk = tag_prefix + tag
                    if len(tk) > _MAX_INLINE_KEY:
                        tk = tk[:_MAX_INLINE_KEY] + _DIGEST_MARK + hashlib.sha256(tk).digest()[:16]
                    txn.delete(tk, handle, db=tags_db)
            size = len(raw) + s._drop_large(txn, raw)
            if handle[:1] == CACHE:
                tick = cast(bytes | None, txn.pop(handle, db=ticks))
                if tick is not None:
                    txn.delete(tick + handle, db=order)
                removed_c += 1
                freed_c += size
            else:
                txn.delete(tag_prefix + pack_tick(int(rexp * 1000)) + handle, db=retain)
                removed_r += 1
                freed_r += size
            found = cur.delete() and cur.key() == zkey
        s._account(txn, CACHE, zone, -freed_c, -removed_c)
        s._account(txn, RESERVE, zone, -freed_r, -removed_r)
        freed = freed_c + freed_r
        if not found:
            return removed_c, removed_r, freed, None
        # Not done: resume after the last record kept, or from the start (b"") when none was kept.
        return removed_c, removed_r, freed, last or after or b""

    def wipe_zone_slice(
        self, zone: str, area: bytes | None, before: int, after: bytes | None
    ) -> tuple[int, int, int, bytes | None]:
        """``wipe_zone`` for about ``WIPE_SLICE`` seconds of work (the same answer, summed)."""
        c = r = freed = 0
        end = time.monotonic() + WIPE_SLICE
        resume: bytes | None = after or b""
        while resume is not None and time.monotonic() < end:
            dc, dr, df, resume = self.wipe_zone(zone, area, before, resume or None, _WIPE_CHUNK)
            c, r, freed = c + dc, r + dr, freed + df
        return c, r, freed, resume

    def _scan_dup(
        self, db: Any, key: bytes, after: bytes | None, limit: int, area: bytes | None = None
    ) -> list[bytes]:
        cur = self.txn.cursor(db=db)
        # Handles sort by area first: start at the area (or just after ``after``) and stop past it.
        start = after if after is not None else area
        found = cur.set_range_dup(key, start) if start is not None else cur.set_key(key)
        if not found:
            return []
        out: list[bytes] = []
        for raw in cur.iternext_dup():
            v = bytes(raw)
            if v == after:
                continue
            if area is not None and v[:1] != area:
                break
            out.append(v)
            if len(out) >= limit:
                break
        return out

    def peek(self, handle: bytes) -> Entry | None:
        """The entry under a handle, without its body."""
        raw = self.txn.get(handle, db=self._s._entries)
        if raw is None:
            return None
        rec = decode_entry(raw, body=False)
        # Kept for a ``delete`` of the same handle next (the reclaimer peeks, then deletes).
        self._peeked = (handle, rec, len(raw))
        return rec.entry

    def removing(self, key: str) -> bool:
        """Whether a delete of ``key`` (or of its primary URL) is queued in this process: the record
        is as good as gone, and whoever asked for the delete accounts for it."""
        hidden = self._s._hidden
        return bool(hidden) and (key in hidden or _primary(key) in hidden)

    def taking(self, key: str) -> None:
        """This job removes ``key``: until its transaction commits, reads on other threads (which
        still see the record) treat it as gone, so that the job alone accounts for it."""
        self._s._taking.add(key)

    def delete(self, handle: bytes) -> int:
        """Remove a record; returns the bytes it freed (0 when there was none)."""
        peeked = self._peeked
        self._peeked = None
        if peeked is not None and peeked[0] == handle:
            return self._s._remove(self.txn, handle, peeked[1:])
        return self._s._remove(self.txn, handle)

    def mark_stale(self, handle: bytes, at: float) -> bool:
        """Make a record stale from ``at`` (or its earlier stale time)."""
        self._peeked = None
        raw = self.txn.get(handle, db=self._s._entries)
        if raw is None:
            return False
        rec = decode_entry(raw)
        e = rec.entry
        if e.stale_since is None or at < e.stale_since:
            e.stale_since = at
            self.txn.put(handle, encode_entry(e, rec.reserve_expires), db=self._s._entries)
        return True

    def set_reclaimed(self, seq: int, *, changed: bool = True) -> None:
        """Record that every purge up to ``seq`` has been applied to what is on disk; when the job
        ``changed`` nothing, with the next transaction that writes anyway."""
        if changed:
            self._s._meta_put(self.txn, b"reclaimed_upto", max(seq, self._s._reclaimed_later))
            self._s._reclaimed_later = 0
        else:
            self._s._reclaimed_later = max(seq, self._s._reclaimed_later)


@dataclass(slots=True)
class Lookup:
    """What :meth:`DiskStore.lookup` read for a base key: its record and area, or None."""

    key: str
    found: tuple[Record, bytes] | None


Job = Callable[[WriteView], bool]
"""A removal job: one step per call (at most ``JOB_STEP`` records), True once finished."""


def clear_reserve_job(zone: str, progress: JobProgress) -> Job:
    """A job removing every reserve record of ``zone``, counting into ``progress``. Running it
    again after a crash finishes what is left (it removes whatever is still there)."""
    return ZoneWipe(zone, RESERVE, 1 << 62, progress)


class ZoneWipe:
    """A job removing every record of a zone (one area, or both when ``area`` is None) stored before
    ledger position ``before``, a slice of ``WIPE_SLICE`` seconds per transaction."""

    def __init__(
        self, zone: str, area: bytes | None, before: int, progress: JobProgress | None = None
    ) -> None:
        self.zone = zone
        self.area = area
        self.before = before
        self.progress = progress or JobProgress()
        self._after: bytes | None = None

    def __call__(self, view: WriteView) -> bool:
        removed_c, removed_r, freed, self._after = view.wipe_zone_slice(
            self.zone, self.area, self.before, self._after
        )
        self.progress.objects += removed_c + removed_r
        self.progress.bytes += freed
        if self._after is None:
            self.progress.done = True
            return True
        return False


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
    ) -> None:
        """Open (or create) the store at ``path``. ``position`` is the purge-ledger position to
        record as reclaimed when the store is new (nothing on disk predates it)."""
        path.mkdir(parents=True, exist_ok=True)
        self.budget = budget
        self._reserve_budget = reserve_budget
        self._reserve_retention = reserve_retention
        self.env = lmdb.open(
            str(path),
            map_size=map_size or max(1 << 30, 4 * budget),
            max_dbs=16,
            readahead=True,
            max_readers=1024,
        )
        self._entries = self.env.open_db(b"entries")
        self._tags = self.env.open_db(b"tags", dupsort=True)
        self._zones = self.env.open_db(b"zones", dupsort=True)
        self._order = self.env.open_db(b"order")
        self._ticks = self.env.open_db(b"ticks")
        self._retain = self.env.open_db(b"retain")
        self._vary = self.env.open_db(b"vary")
        self._meta = self.env.open_db(b"meta")
        self._chunks = self.env.open_db(b"chunks")
        """Large objects' chunks (``store/chunked.py``), and each object id → its record's handle."""
        with self.env.begin(write=True) as txn:
            if txn.get(b"reclaimed_upto", db=self._meta) is None:
                self._meta_put(txn, b"reclaimed_upto", position)
        self.stats = DiskStats()
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._queued = 0
        self._hidden: Counter[str] = Counter()
        self._delta: dict[bytes, int] = {}
        self._reclaimed_later = 0
        """A reclaimed position not written yet (see the module rules); 0 when none."""
        self._taking: set[str] = set()
        """Keys the running job removes in its uncommitted transaction (``WriteView.taking``)."""
        """Counter changes of the writer's open transaction (see ``_account``)."""
        self._renewals: set[tuple[bytes, str]] = set()
        """Records read from disk whose place (or retention) to renew, written every
        ``RENEW_EVERY`` seconds: a commit, and its fsync, per few hits slowed the hits several times
        (measured with bench/disk_hits.py)."""
        self._renewed = 0.0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="edgecache-disk-writer", daemon=True)
        self._thread.start()

    # -- reads (any thread) -----------------------------------------------------------------------

    def get(
        self,
        key: str,
        *,
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
        if self._hidden and (key in self._hidden or _primary(key) in self._hidden):
            return None
        if self._taking and key in self._taking:
            return None
        if looked_up is not None and looked_up.key == key:
            found = looked_up.found
        else:
            # Buffers: the record is read in place from the map; only the head and body are copied.
            with self.env.begin(buffers=True) as txn:
                found = self._read(txn, key, reserve)
        if found is None:
            self.stats.misses += 1
            return None
        rec, area = found
        entry = rec.entry
        if type(entry) is ChunkedEntry:
            entry.read_chunk = self.read_chunk
        if area == CACHE:
            self.stats.hits += 1
            # Whether the place needs renewing is the writer's question (``_renew``): asking it here
            # cost three more reads per hit.
            self._renewals.add((CACHE, key))
        else:
            self.stats.reserve_hits += 1
            retention = self._reserve_retention(entry.zone)
            if rec.reserve_expires - time.time() <= retention * 29 / 30:
                self._renewals.add((RESERVE, key))
        return entry, area == RESERVE

    def lookup(
        self, base_key: str, *, reserve: Callable[[str], bool] | None = None
    ) -> tuple[tuple[str, ...] | None, Lookup | None]:
        """The Vary field names recorded for a base key and, when it has none, the record under the
        base key itself (for the :meth:`get` that follows), in one read transaction: a memory miss
        asks both. Counts nothing: the ``get`` does."""
        with self.env.begin(buffers=True) as txn:
            names = txn.get(db_key(CACHE, base_key), db=self._vary)
            if names is not None:
                return tuple(bytes(names).decode().split("\x00")), None
            return None, Lookup(base_key, self._read(txn, base_key, reserve))

    def _read(
        self, txn: lmdb.Transaction, key: str, reserve: Callable[[str], bool] | None
    ) -> tuple[Record, bytes] | None:
        """The record of ``key`` and its area, or None."""
        raw_key = key.encode("utf-8", "surrogatepass")
        ck = CACHE + raw_key if len(raw_key) <= _MAX_INLINE_KEY else db_key(CACHE, key)
        entries = self._entries
        raw = txn.get(ck, db=entries)
        area = CACHE
        if raw is None and reserve is not None:
            area = RESERVE
            raw = txn.get(db_key(RESERVE, key), db=entries)
        if raw is None:
            return None
        try:
            rec = decode_hit(raw, key, raw_key)
        except (struct.error, UnicodeDecodeError):
            log.error("unreadable disk record for %r: ignored", key)
            return None
        if rec is None or (area == RESERVE and (reserve is None or not reserve(rec.entry.zone))):
            return None
        return rec, area

    def has(self, key: str) -> bool:
        """Whether the disk cache holds a record under ``key``; a key with a delete still queued
        counts as held, so that nothing is written back over a pending removal."""
        if self._hidden and (key in self._hidden or _primary(key) in self._hidden):
            return True
        with self.env.begin(db=self._entries) as txn:
            return txn.get(db_key(CACHE, key)) is not None

    def vary(self, base_key: str) -> tuple[str, ...] | None:
        """The Vary field names recorded for a base key."""
        with self.env.begin(db=self._vary) as txn:
            raw = txn.get(db_key(CACHE, base_key))
        return None if raw is None else tuple(raw.decode().split("\x00"))

    @property
    def reclaimed_upto(self) -> int:
        """The ledger position up to which every purge is applied on disk."""
        with self.env.begin(db=self._meta) as txn:
            return self._meta_get(txn, b"reclaimed_upto")

    def usage(self) -> tuple[int, int]:
        """Bytes and records in the disk cache."""
        with self.env.begin(db=self._meta) as txn:
            return self._meta_get(txn, b"used:c"), self._meta_get(txn, b"count:c")

    def reserve_usage(self, zone: str) -> tuple[int, int]:
        """Bytes and records in one zone's reserve."""
        with self.env.begin(db=self._meta) as txn:
            z = zone.encode()
            return self._meta_get(txn, b"used:r:" + z), self._meta_get(txn, b"count:r:" + z)

    def __len__(self) -> int:
        with self.env.begin(db=self._entries) as txn:
            return int(txn.stat(self._entries)["entries"])

    def __iter__(self) -> Iterator[Entry]:
        with self.env.begin(db=self._entries) as txn:
            return iter([decode_entry(v).entry for v in txn.cursor().iternext(keys=False, values=True)])

    @property
    def queue_depth(self) -> int:
        """Changes waiting for the writer."""
        return self._queued

    # -- writes (queued) --------------------------------------------------------------------------

    def put(self, entry: Entry, *, reserve: bool = False) -> None:
        """Store an entry in the disk cache, and in its zone's reserve when ``reserve``."""
        if self._queued >= MAX_QUEUED:
            self.stats.dropped += 1
            return
        self._enqueue(("put", entry, reserve))

    def delete(self, key: str) -> None:
        """Remove the entry under ``key`` from both areas (hidden from readers at once)."""
        with self._lock:
            self._hidden[key] += 1
        self._enqueue(("del", key))

    def delete_primary(self, primary: str) -> None:
        """Remove every variant of one URL from both areas (hidden from readers at once)."""
        with self._lock:
            self._hidden[primary] += 1
        self._enqueue(("delprimary", primary))

    def set_vary(self, base_key: str, names: tuple[str, ...]) -> None:
        """Remember the Vary field names of a base key."""
        self._enqueue(("vary", base_key, names))

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

    def _drop_large(self, txn: lmdb.Transaction, raw: bytes) -> int:
        """Remove the chunks of a large object's record; the bytes they were accounted as."""
        if not _chunked(raw):
            return 0
        length, _, object_id = MANIFEST.unpack_from(raw, len(raw) - MANIFEST.size)
        self._delete_chunks(txn, object_id)
        return int(length)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the environment."""
        self._queue.put(None)
        self._thread.join()
        self.env.close()

    def _enqueue(self, op: tuple[Any, ...]) -> None:
        with self._lock:
            self._queued += 1
        self._queue.put(op)

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                op: tuple[Any, ...] | None = self._queue.get(timeout=RENEW_EVERY)
            except queue.Empty:
                if self._renewals:
                    self._write_batch([])
                continue
            batch: list[tuple[Any, ...]] = []
            size = 0
            while op is not None:
                batch.append(op)
                if op[0] == "put":
                    size += len(op[1].body)
                elif op[0] == "chunk":
                    size += len(op[3])
                if len(batch) >= _MAX_BATCH_OPS or size >= _MAX_BATCH_BYTES:
                    break
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
            if op is None:
                stopping = True
            self._write_batch(batch)
        if self._reclaimed_later:
            with self.env.begin(write=True) as txn:
                self._write_reclaimed_later(txn)

    def _write_batch(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            self._apply(batch)
        except Exception as exc:
            self.stats.write_errors += 1
            log.exception("disk tier: a batch of %d changes was not written", len(batch))
            for op in batch:
                if op[0] == "chunk":
                    op[4].set_exception(exc)
        else:
            for op in batch:
                if op[0] == "chunk":
                    op[4].set_result(None)
        finally:
            with self._idle:
                self._queued -= len(batch)
                for op in batch:
                    if op[0] in ("del", "delprimary"):
                        self._hidden[op[1]] -= 1
                        if self._hidden[op[1]] <= 0:
                            del self._hidden[op[1]]
                self._idle.notify_all()

    def _apply(self, batch: list[tuple[Any, ...]]) -> None:
        jobs = []
        self._delta = {}
        renewals: set[tuple[bytes, str]] = set()
        due = time.monotonic() - self._renewed >= RENEW_EVERY or any(op[0] == "renew" for op in batch)
        if self._renewals and due:
            # Readers keep adding to the set they see; a renewal lost in the swap is only a hint.
            renewals, self._renewals = self._renewals, set()
            self._renewed = time.monotonic()
        if not renewals and all(op[0] == "job" for op in batch):
            # Only jobs (a purge's reclaim, usually): each has its own transaction below, and an
            # empty one here would still take the environment's write lock from every process.
            for op in batch:
                self._step(op[1], op[2])
            return
        with self.env.begin(write=True) as txn:
            now = time.time()
            if renewals:
                self._renew(txn, renewals, now)
            for op in batch:
                kind = op[0]
                if kind == "put":
                    self._put(txn, op[1], op[2], now)
                elif kind == "del":
                    self._remove(txn, db_key(CACHE, op[1]))
                    self._remove(txn, db_key(RESERVE, op[1]))
                elif kind == "delprimary":
                    primary = op[1]
                    for handle in WriteView(self, txn).scan_prefix(primary, None, 1 << 62):
                        key = self._key_of(txn, handle)
                        if key == primary or key.startswith(primary + VARIANT_SEP):
                            self._remove(txn, handle)
                elif kind == "vary":
                    txn.put(db_key(CACHE, op[1]), "\x00".join(op[2]).encode(), db=self._vary)
                elif kind == "chunk":
                    txn.put(chunk_key(op[1], op[2]), op[3], db=self._chunks)
                elif kind == "dropobject":
                    if txn.get(op[1], db=self._chunks) is None:
                        self._delete_chunks(txn, op[1])
                elif kind == "job":
                    jobs.append(op)
            if len(jobs) < len(batch):
                self._write_reclaimed_later(txn)
            # Written before evicting too: eviction finds the reserve zones by their counters.
            self._write_counts(txn)
            self._evict(txn, now)
            self._write_counts(txn)
        self.stats.commits += 1
        for op in jobs:
            self._step(op[1], op[2])

    def _step(self, job: Job, fut: Future[None]) -> None:
        self._delta = {}
        try:
            with self.env.begin(write=True) as txn:
                done = job(WriteView(self, txn))
                self._write_counts(txn)
        except Exception as exc:
            fut.set_exception(exc)
            return
        finally:
            if self._taking:
                self._taking = set()
        if done:
            fut.set_result(None)
        else:
            self._enqueue(("job", job, fut))

    def _put(self, txn: lmdb.Transaction, entry: Entry, reserve: bool, now: float) -> None:
        ck = db_key(CACHE, entry.key)
        self._remove(txn, ck)
        self._insert(txn, ck, encode_entry(entry, 0.0), entry)
        self._place(txn, ck)
        self.stats.writes += 1
        if reserve:
            rk = db_key(RESERVE, entry.key)
            self._remove(txn, rk)
            expires = now + self._reserve_retention(entry.zone)
            self._insert(txn, rk, encode_entry(entry, expires), entry)
            txn.put(self._retain_key(entry.zone, expires, rk), b"", db=self._retain)

    @staticmethod
    def _retain_key(zone: str, expires: float, handle: bytes) -> bytes:
        return zone.encode() + b"\x00" + _TICK.pack(int(expires * 1000)) + handle

    def _insert(self, txn: lmdb.Transaction, handle: bytes, record: bytes, entry: Entry) -> None:
        txn.put(handle, record, db=self._entries)
        zone = entry.zone
        txn.put(zone.encode(), handle, db=self._zones)
        for tag in entry.tags:
            txn.put(_tag_key(zone, tag), handle, db=self._tags)
        extra = 0
        if type(entry) is ChunkedEntry:
            txn.put(entry.object_id, handle, db=self._chunks)
            extra = entry.length
        self._account(txn, handle[:1], zone, len(record) + extra, 1)

    def _remove(self, txn: lmdb.Transaction, handle: bytes, known: tuple[Record, int] | None = None) -> int:
        """Remove a record and its index rows (``known``: the record already decoded, and its size)."""
        if known is None:
            raw = txn.get(handle, db=self._entries)
            if raw is None:
                return 0
            size = len(raw)
            try:
                rec = decode_entry(raw, body=False)
            except (struct.error, UnicodeDecodeError):
                txn.delete(handle, db=self._entries)
                return size
        else:
            rec, size = known
        entry = rec.entry
        txn.delete(handle, db=self._entries)
        if type(entry) is ChunkedEntry:
            self._delete_chunks(txn, entry.object_id)
            size += entry.length
        txn.delete(entry.zone.encode(), handle, db=self._zones)
        for tag in entry.tags:
            txn.delete(_tag_key(entry.zone, tag), handle, db=self._tags)
        if handle[:1] == CACHE:
            tick = txn.pop(handle, db=self._ticks)
            if tick is not None:
                txn.delete(bytes(tick) + handle, db=self._order)
        else:
            txn.delete(self._retain_key(entry.zone, rec.reserve_expires, handle), db=self._retain)
        self._account(txn, handle[:1], entry.zone, -size, -1)
        return size

    def _account(self, txn: lmdb.Transaction, area: bytes, zone: str, size: int, count: int) -> None:
        # Summed in memory and written once per transaction (``_write_counts``): two meta updates per
        # record would double the cost of a clear.
        suffix = b"c" if area == CACHE else b"r:" + zone.encode()
        delta = self._delta
        delta[b"used:" + suffix] = delta.get(b"used:" + suffix, 0) + size
        delta[b"count:" + suffix] = delta.get(b"count:" + suffix, 0) + count

    def _write_counts(self, txn: lmdb.Transaction) -> None:
        delta, self._delta = self._delta, {}
        for name, d in delta.items():
            if d:
                self._meta_put(txn, name, self._stored(txn, name) + d)

    def _renew(self, txn: lmdb.Transaction, renewals: set[tuple[bytes, str]], now: float) -> None:
        """Renew the records read from disk since the last renewal: a disk-cache record moves to the
        most recent end of the order if it is among the oldest ``1/RENEW_OLDEST``, a reserve record's
        retention starts again (``_touch``). The clock and the count are read once per batch."""
        ticks, order = self._ticks, self._order
        clock = start = self._meta_get(txn, b"clock")
        count = self._meta_get(txn, b"count:c")
        young = count - count // RENEW_OLDEST
        unpack, pack = _TICK.unpack, _TICK.pack
        for area, key in renewals:
            if area != CACHE:
                self._touch(txn, key, now)
                continue
            handle = db_key(CACHE, key)
            old = txn.get(handle, db=ticks)
            if old is None or clock - unpack(old)[0] < young:
                continue
            txn.delete(bytes(old) + handle, db=order)
            clock += 1
            packed = pack(clock)
            txn.put(handle, packed, db=ticks)
            txn.put(packed + handle, b"", db=order)
        if clock != start:
            self._meta_put(txn, b"clock", clock)

    def _touch(self, txn: lmdb.Transaction, key: str, now: float) -> None:
        """Start a reserve record's retention again."""
        handle = db_key(RESERVE, key)
        raw = txn.get(handle, db=self._entries)
        if raw is None:
            return
        rec = decode_entry(raw)
        zone = rec.entry.zone
        expires = now + self._reserve_retention(zone)
        txn.delete(self._retain_key(zone, rec.reserve_expires, handle), db=self._retain)
        txn.put(self._retain_key(zone, expires, handle), b"", db=self._retain)
        txn.put(handle, encode_entry(rec.entry, expires), db=self._entries)

    def _place(self, txn: lmdb.Transaction, handle: bytes) -> None:
        """Put a disk-cache record at the most recent end of the eviction order. The order lives
        beside the record (``ticks``, ``order``), so renewing it never rewrites the record."""
        tick = self._meta_get(txn, b"clock") + 1
        self._meta_put(txn, b"clock", tick)
        packed = _TICK.pack(tick)
        txn.put(handle, packed, db=self._ticks)
        txn.put(packed + handle, b"", db=self._order)

    def _evict(self, txn: lmdb.Transaction, now: float) -> None:
        """Least recently used first in the disk cache; per reserve zone, the expired and then the
        soonest to expire (the least recently accessed) while over its budget."""
        used = self._meta_get(txn, b"used:c")
        if used > self.budget:
            cur = txn.cursor(db=self._order)
            victims = []
            for k in cur.iternext(keys=True, values=False):
                if used <= self.budget:
                    break
                handle = bytes(k[_TICK.size :])
                raw = txn.get(handle, db=self._entries)
                used -= 0 if raw is None else len(raw) + large_bytes(raw)
                victims.append(handle)
            for handle in victims:
                self._remove(txn, handle)
                self.stats.evictions += 1
        cur = txn.cursor(db=self._meta)
        zones = []
        if cur.set_range(b"used:r:"):
            for raw_key in cur.iternext(keys=True, values=False):
                k = bytes(raw_key)
                if not k.startswith(b"used:r:"):
                    break
                zones.append(k[len(b"used:r:") :].decode())
        for zone in zones:
            self._evict_reserve(txn, zone, now)

    def _evict_reserve(self, txn: lmdb.Transaction, zone: str, now: float) -> None:
        budget = self._reserve_budget(zone)
        used = self._meta_get(txn, b"used:r:" + zone.encode())
        start = zone.encode() + b"\x00"
        cur = txn.cursor(db=self._retain)
        if not cur.set_range(start):
            return
        victims = []
        now_ms = int(now * 1000)
        for raw_key in cur.iternext(keys=True, values=False):
            k = bytes(raw_key)
            if not k.startswith(start):
                break
            expires = _TICK.unpack_from(k, len(start))[0]
            if expires > now_ms and used <= budget:
                break
            handle = k[len(start) + _TICK.size :]
            raw = txn.get(handle, db=self._entries)
            used -= 0 if raw is None else len(raw)
            victims.append((handle, expires <= now_ms))
        for handle, expired in victims:
            self._remove(txn, handle)
            if expired:
                self.stats.reserve_expired += 1
            else:
                self.stats.reserve_evictions += 1

    def _key_of(self, txn: lmdb.Transaction, handle: bytes) -> str:
        raw = txn.get(handle, db=self._entries)
        return "" if raw is None else decode_entry(raw).entry.key

    def _meta_get(self, txn: lmdb.Transaction, name: bytes) -> int:
        """A counter as this transaction sees it (stored value plus this transaction's changes)."""
        return self._stored(txn, name) + self._delta.get(name, 0)

    def _stored(self, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=self._meta)
        return 0 if raw is None else int(_INT.unpack(raw)[0])

    def _write_reclaimed_later(self, txn: lmdb.Transaction) -> None:
        if self._reclaimed_later:
            self._meta_put(txn, b"reclaimed_upto", self._reclaimed_later)
            self._reclaimed_later = 0

    def _meta_put(self, txn: lmdb.Transaction, name: bytes, value: int) -> None:
        txn.put(name, _INT.pack(value), db=self._meta)
