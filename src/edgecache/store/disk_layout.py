"""The persistent tier's on-disk layout: what is stored under which LMDB key (layout version 3).

Rules of this module (pure encoding, no LMDB calls; the store is ``store/disk.py``):
- Every zone has two named databases, one per area: ``c/<zone>`` (the disk cache) and ``r/<zone>``
  (the zone's Cache Reserve). A record and every index row that refers to it live in the same
  database, so emptying that database (one ``mdb_drop``) removes a zone's area whole, with no row
  left behind elsewhere (decision 0009). Rows are told apart by their first byte:
  ``e`` + key → the record; ``t`` + tag digest + key → tag index; ``s`` + stored_seq + key → the
  records by ledger position (what a purge of everything keeps: those stored after it), whose
  value in the disk cache is ``~`` + tick, its order row's key less the key (empty in the
  reserve); ``~`` + tick + key (disk cache: the eviction order; ``~`` sorts above every other
  row's byte, and ticks only grow, so a run of fills appends its order rows at the database's
  end); ``x`` + expiry + key (reserve: the retention order); ``v`` + base key → Vary names (disk
  cache database only); ``g`` + key → object id (disk cache only: the zone's large objects, so
  that removing the zone whole finds their chunks without reading every record).
- ``chunks`` (one database for the environment) holds large objects' bytes under ``object id +
  chunk number``, and ``object id`` → the handle of the record pointing to them
  (``store/chunked.py``); a large object's record holds a manifest in place of the body and has
  ``_F_CHUNKED`` set.
- ``meta`` holds the counters (global and per zone), the clock, ``reclaimed_upto``, ``layout`` (this
  module's ``LAYOUT``) and ``host:<host>`` → zone: the hit path knows the URL, not the zone, and a
  key's host names its zone (zones own distinct hostnames).
- A key longer than ``MAX_INLINE_KEY`` bytes is stored under its first bytes plus a digest (LMDB keys
  are at most 511 bytes); range lookups then compare the full key kept in the record.
- A *handle* (what removal jobs see) is ``area + zone + NUL + key bytes``: it names the database.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass

from edgecache.store.chunked import MANIFEST, ChunkedEntry, chunked_from
from edgecache.store.entry import Entry

LAYOUT = 3
"""On-disk layout version. 1 (no ``layout`` row): one ``entries`` database for every zone, with
global index databases. 2: a ``k`` + key → tick row per disk-cache record, the ``s`` rows empty,
the order rows under ``o`` (``V2_TICK``, ``V2_ORDER``). A layout-2 store is converted at open, any
other is emptied (``DiskStore``, decision 0033)."""

CACHE = b"c"
RESERVE = b"r"
AREAS = (CACHE, RESERVE)

MAX_INLINE_KEY = 440
"""Key bytes stored as they are; longer keys are cut here and get a digest (LMDB's limit is 511)."""
DIGEST_MARK = b"\xff"
"""Never in UTF-8, so a cut key cannot collide with a stored-as-is one."""

ENTRY = b"e"
TAG = b"t"
SEQ = b"s"
ORDER = b"~"
V2_TICK = b"k"
V2_ORDER = b"o"
EXPIRY = b"x"
VARY = b"v"
LARGE = b"g"

REC = struct.Struct("<HqdddddddBHIHI")
"""status, stored_seq, response_time, initial_age, freshness_lifetime, swr, sie,
stale_since (NaN: none), reserve_expires, flags, len(zone), len(key), len(tags), len(head);
then zone, key, tags (NUL-joined), head, body."""
_FILL_HEAD = struct.Struct("<2xq56xBHIH4x")
"""``REC``'s layout with only what ``fill_fields`` reads unpacked (stored_seq, flags, the lengths
of zone, key and tags): the other nine fields would be Python objects made and dropped per record
(``test_fill_fields_read_what_decode_entry_reads`` holds the two layouts to the same fields)."""
_F_MUST_REVALIDATE = 1
_F_NO_CACHE = 2
_F_AUTH_OK = 4
_F_LENGTH_KNOWN = 8
_F_CHUNKED = 16
"""The body is a large object's manifest (``store/chunked.py``)."""
_FLAGS_AT = struct.calcsize("<Hqddddddd")
_EXPIRES = struct.Struct("<d")
_EXPIRES_AT = struct.calcsize("<Hqdddddd")
U64 = struct.Struct(">Q")
"""Big-endian, so that ticks, expiries and positions sort as numbers."""
SEQ_HEAD = struct.Struct(">cQ")
"""``SEQ`` and a ledger position (as ``U64``) packed in one call: every fill writes a ``seq_row``."""
ORDER_HEAD = SEQ_HEAD
"""``ORDER`` and a tick: a disk-cache record's place, its ``s`` row's value (layout 3)."""
INT = struct.Struct("<q")


def key_bytes(key: str) -> bytes:
    """The stored form of a cache key (cut and digested when too long)."""
    return _stored_key(key.encode("utf-8", "surrogatepass"))


def _stored_key(raw: bytes) -> bytes:
    if len(raw) <= MAX_INLINE_KEY:
        return raw
    return raw[:MAX_INLINE_KEY] + DIGEST_MARK + hashlib.sha256(raw).digest()[:16]


def prefix_bytes(prefix: str) -> tuple[bytes, bool]:
    """The stored form of a key prefix, and whether it is exact (False: cut, compare full keys)."""
    raw = prefix.encode("utf-8", "surrogatepass")
    return raw[:MAX_INLINE_KEY], len(raw) <= MAX_INLINE_KEY


def tag_row(tag: str, kb: bytes) -> bytes:
    """The tag index row of a record (the tag as a digest, so that any tag fits beside any key)."""
    return TAG + tag_digest(tag) + kb


@functools.lru_cache(maxsize=4096)
def tag_digest(tag: str) -> bytes:
    """Twelve bytes naming a tag in its zone's databases (remembered for the most used tags: the
    writer names each tag of every record it writes or removes, and a digest costs a microsecond)."""
    return hashlib.blake2b(tag.encode(), digest_size=12).digest()


def seq_row(seq: int, kb: bytes) -> bytes:
    """The row placing a record by the ledger position it was stored at."""
    return SEQ_HEAD.pack(SEQ, seq if seq > 0 else 0) + kb


def expiry_row(expires: float, kb: bytes) -> bytes:
    """A reserve record's place in its zone's retention order."""
    return EXPIRY + U64.pack(max(int(expires * 1000), 0)) + kb


def db_name(area: bytes, zone: str) -> bytes:
    """The named database of one zone's area."""
    return area + b"/" + zone.encode()


def handle(area: bytes, zone: str, kb: bytes) -> bytes:
    """The handle removal jobs use for a record."""
    return area + zone.encode() + b"\x00" + kb


def parse_handle(h: bytes) -> tuple[bytes, str, bytes]:
    """Area, zone and key bytes of a handle."""
    i = h.index(b"\x00", 1)
    return h[:1], h[1:i].decode(), h[i + 1 :]


def host_of(key: str) -> str:
    """The host part of a cache key (``scheme://host/...``), or the empty string."""
    i = key.find("://")
    if i < 0:
        return ""
    j = key.find("/", i + 3)
    return key[i + 3 :] if j < 0 else key[i + 3 : j]


def host_prefix(key: str) -> str | None:
    """The start of a cache key up to the end of its host (``scheme://host/``): every key that
    starts with it has the host ``host_of`` finds in this one. None when no path follows the host."""
    i = key.find("://")
    if i < 0:
        return None
    j = key.find("/", i + 3)
    return None if j < 0 else key[: j + 1]


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
            REC.pack(
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


def with_reserve_expires(record: bytes | memoryview, reserve_expires: float) -> bytes:
    """The same record with another reserve expiry: the copy of a fill written to the reserve, a
    retention renewed, without decoding and encoding the entry again."""
    out = bytearray(record)
    _EXPIRES.pack_into(out, _EXPIRES_AT, reserve_expires)
    return bytes(out)


def reserve_expires_of(record: bytes | memoryview) -> float:
    """The reserve expiry a record holds (0 in the disk cache)."""
    return float(_EXPIRES.unpack_from(record, _EXPIRES_AT)[0])


@dataclass(slots=True)
class Record:
    """A decoded record: the entry and the bookkeeping the store keeps beside it."""

    entry: Entry
    reserve_expires: float


def decode_entry(raw: bytes | memoryview, *, body: bool = True) -> Record:
    """An entry from its record (raises ``struct.error`` or ``UnicodeDecodeError`` on a bad one);
    without ``body`` the entry's body is left empty (what removal jobs match on needs no copy)."""
    status, seq, rtime, iage, life, swr, sie, stale, rexp, flags, lz, lk, lt, lh = REC.unpack_from(raw)
    p = REC.size
    view = memoryview(raw)
    zone = bytes(view[p : p + lz]).decode()
    p += lz
    key = bytes(view[p : p + lk]).decode("utf-8", "surrogatepass")
    p += lk
    tags_raw = bytes(view[p : p + lt]).decode()
    p += lt
    head = bytes(view[p : p + lh])
    p += lh
    # Positional, as in ``decode_hit``: the writer decodes every record it removes or evicts.
    entry = Entry(
        zone,
        key,
        status,
        head,
        bytes(view[p:]) if body else b"",
        tuple(tags_raw.split("\x00")) if tags_raw else (),
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
        entry = chunked_from(entry, view[p:])
    return Record(entry, rexp)


_REC_SIZE = REC.size
_REMEMBERED = 4096
"""Distinct zone and tag-list bytes ``fill_fields`` keeps decoded (forgotten all at once beyond)."""
_REMEMBERED_TAGS_MAX = 256
"""The longest tag list (in bytes) ``fill_fields`` remembers, as ``httpcache/tags.py`` memoises
only short fields: the origin chooses the lists, and 4,096 long lists held hundreds of MiB in every
fill writer child (the review's count, decision 0020's addendum ``childlmdb``)."""
_zone_names: dict[bytes, str] = {}
_tag_lists: dict[bytes, tuple[str, ...]] = {}


def _make_room(seen: dict[bytes, str] | dict[bytes, tuple[str, ...]]) -> None:
    if len(seen) >= _REMEMBERED:
        seen.clear()


def fill_fields(
    raw: bytes, reserve: bool = False
) -> tuple[bytes, str, str, bytes, int, tuple[str, ...], bool, None] | None:
    """What a writer needs to store a whole entry's record as it is (the fill writer's records:
    decision 0020's addendum ``fillchild``), as ``store/disk.py``'s ``Fill``: the record, its zone,
    key, key bytes (``key_bytes``), stored_seq and tags, without decoding the rest, ``reserve``,
    and None (not a large object). None for a large object's record (the fill ring never holds
    one). Raises as ``decode_entry`` on a bad one (the same fields are decoded the same way:
    ``test_fill_fields_read_what_decode_entry_reads``)."""
    seq, flags, lz, lk, lt = _FILL_HEAD.unpack_from(raw)
    if flags & _F_CHUNKED:
        return None
    p = _REC_SIZE + lz
    q = p + lk
    # A node's fills name a few zones and, mostly, a few tag lists: their decoded forms are looked
    # up by their bytes (a dictionary read) instead of decoded and split per record
    # (decision 0020's addendum ``childlmdb``). Bytes that do not decode are never remembered, nor
    # long tag lists.
    zraw = raw[_REC_SIZE:p]
    zone = _zone_names.get(zraw)
    if zone is None:
        zone = zraw.decode()
        _make_room(_zone_names)
        _zone_names[zraw] = zone
    kraw = raw[p:q]
    key = kraw.decode("utf-8", "surrogatepass")
    traw = raw[q : q + lt]
    tags = _tag_lists.get(traw)
    if tags is None:
        text = traw.decode()
        tags = tuple(text.split("\x00")) if text else ()
        if lt <= _REMEMBERED_TAGS_MAX:
            _make_room(_tag_lists)
            _tag_lists[traw] = tags
    kb = kraw if len(kraw) <= MAX_INLINE_KEY else _stored_key(kraw)
    return raw, zone, key, kb, seq, tags, reserve, None


def decode_hit(raw: bytes | memoryview, key: str, zone: str, cut: bytes | None) -> tuple[Entry, float] | None:
    """The entry of ``key`` in ``zone``'s database as the hit path needs it, with its reserve
    expiry. ``cut``: the full key's bytes when the row's key was cut (``key_bytes``), to compare
    with the record's; None when the row's key is the key. None when the record is another key's (a
    cut key's digest collided). The zone is the database's (a record is stored in its own zone's),
    the key is never decoded, and the head and body are the only copies taken from ``raw`` (raises
    as ``decode_entry``)."""
    status, seq, rtime, iage, life, swr, sie, stale, rexp, flags, lz, lk, lt, lh = REC.unpack_from(raw)
    # ``raw`` is sliced as it is: a memoryview (LMDB's buffer) gives views, copied once by bytes().
    q = REC.size + lz + lk
    if cut is not None and raw[q - lk : q] != cut:
        return None
    h = q + lt
    # Positional, and flags tested without bool(): this runs on every disk hit, and keyword
    # arguments and bool() calls are extra interpreter work per field.
    entry = Entry(
        zone,
        key,
        status,
        bytes(raw[h : h + lh]),
        bytes(raw[h + lh :]),
        tuple(str(raw[q:h], "utf-8").split("\x00")) if lt else (),
        seq,
        rtime,
        iage,
        life,
        swr,
        sie,
        flags & _F_MUST_REVALIDATE != 0,
        flags & _F_NO_CACHE != 0,
        flags & _F_AUTH_OK != 0,
        flags & _F_LENGTH_KNOWN != 0,
        None if stale != stale else stale,  # NaN: not stale
    )
    if flags & _F_CHUNKED:
        entry = chunked_from(entry, raw[h + lh :])
    return entry, rexp


def large_bytes(raw: bytes | memoryview) -> int:
    """The chunk bytes a record stands for beyond itself (0 unless it is a large object's)."""
    if not is_chunked(raw):
        return 0
    return int(MANIFEST.unpack_from(raw, len(raw) - MANIFEST.size)[0])


def is_chunked(raw: bytes | memoryview) -> bool:
    """Whether a record is a large object's (an unreadable, too short one is not)."""
    return len(raw) >= REC.size + MANIFEST.size and bool(raw[_FLAGS_AT] & _F_CHUNKED)
