"""The data plane's request handler: a shared cache (RFC 9111) in front of each zone's origin.

Theory of operation, for one request:
1. The Host field, or an absolute-form target's authority, selects the zone (400 if malformed, 421
   if no zone serves it); from then on the zone's hostname is the only spelling the key and the
   origin see. Methods other than GET and HEAD pass through to the origin; a successful one that
   is not safe (RFC 9110 §9.2.1), extension methods included, invalidates the target URL
   (RFC 9111 §4.4).
2. The cache key is the primary key (scheme, host, path, query) plus the zone's variant parts; if
   the origin answered this URL with ``Vary``, the selected request fields are appended.
3. A fresh entry is a HIT, answered synchronously in the same call: no task, no future. This is the
   product's hot path; it builds the response head from the entry's pre-encoded header block.
4. A stale entry is served at once while a background revalidation runs if
   ``stale-while-revalidate`` allows (UPDATING); otherwise it is revalidated with the origin
   (REVALIDATED on 304, EXPIRED on a new response), or served stale if the origin fails and
   ``stale-if-error`` allows (STALE).
5. A miss joins the in-flight fetch for that key, or starts one (see ``fetch.py``), and streams the
   response as it arrives. With worker processes, the processes of a node coalesce too: one takes
   the key's fill lock and fetches, the others wait for its entry in the shared disk tier
   (``cluster/fill_locks.py``, decision 0021). A miss that starts its own fetch is answered from
   the fetch's callbacks when the whole response comes in one read (no task: ``_miss``,
   ``http1.PENDING``).
6. A GET with Range that finds no usable full entry looks for the URL's partial entry (stored 206
   parts, ``store/partial.py``): ranges it holds are a HIT; otherwise one client range is fetched
   from the origin, relayed, and combined with the stored parts; complete parts become a full
   entry (docs/decisions/0013-partial-content.md).
7. An object larger than ``max_object_bytes`` is written to disk in chunks while it streams to its
   first client, when the tier has a disk (``store/chunked.py``); its hits stream from disk chunk
   by chunk, waiting for the client to drain each one.

Decisions a reader might look for: request ``Cache-Control`` is ignored, as CDNs do (a client
cannot force an origin fetch); request cookies do not prevent caching (Cloudflare's behaviour),
response ``Set-Cookie`` does unless the zone opts in; the cache key ignores the port, because a
zone is served on one port per scheme and purge URLs should not have to name it; the origin gets
the key's authority as Host and the key's path (decision 0012).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from functools import partial
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

from edgecache.cluster.fill_locks import Fill, FillLocks
from edgecache.edge._answerhead import answer_head
from edgecache.edge.fetch import Fetch, Reader, interim_response
from edgecache.edge.forwarding import forward_headers
from edgecache.edge.hitmemo import HIT_MEMO_BODY_MAX, HIT_MEMO_BODY_MIN, HitMemos
from edgecache.edge.http1 import PENDING, Connection, Pending, Request
from edgecache.edge.lookup_credits import LookupCredits
from edgecache.edge.origin import OriginClient, OriginError, OriginInvalid, OriginTimeout
from edgecache.edge.stats import EdgeStats
from edgecache.edge.zones import BAD_HOST, NO_ZONE, ZoneRuntime, ZoneTable
from edgecache.httpcache.conditional import evaluate_preconditions, if_range_allows
from edgecache.httpcache.headers import connection_options, decode_head, encode_head, strip_hop_by_hop
from edgecache.httpcache.key import (
    fill_target,
    key_and_target,
    origin_target,
    primary_key,
    variant_suffix,
    vary_suffix,
)
from edgecache.httpcache.ranges import (
    content_range,
    multipart_byteranges,
    parse_range,
    single_range,
    unsatisfied_range,
)
from edgecache.httpcache.status import CfStatus, cache_status_fwd, cache_status_hit
from edgecache.httpcache.tags import TAG_HEADERS
from edgecache.purge.index import EpochIndex
from edgecache.store.base import Tier
from edgecache.store.chain import TierChain
from edgecache.store.chunked import ChunkedEntry
from edgecache.store.entry import VARIANT_SEP, Entry
from edgecache.store.memory import MemoryTier
from edgecache.store.partial import MAX_PARTS, PARTIAL_SUFFIX, PartialEntry

_time = time.time
_trunc = math.trunc
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
STATUS_LINES = {
    code: f"HTTP/1.1 {code} {_PHRASES.get(code, '')}\r\n".encode("latin-1") for code in range(100, 600)
}
"""Every valid status code (RFC 9110 §15: 100..599; the origin client rejects others). A code without
a registered reason phrase gets an empty one, which RFC 9112 §4 allows: clients must ignore it."""
CONDITIONAL = ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since")
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""RFC 9110 §9.2.1. Every other method, extension methods included, is unsafe (RFC 9111 §4.4)."""
HIT_FOR_MISS_SECONDS = 60.0
HIT_FOR_MISS_MAX = 10_000
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)
"""RFC 9110 §15.4.5: what a 304 carries."""

CF_HIT = b"CF-Cache-Status: HIT\r\n"
HIT_FIELDS = (
    b"Age: %d\r\nCache-Status: edgecache; hit; ttl=%d\r\nCF-Cache-Status: HIT\r\nContent-Length: %d\r\n\r\n"
)
"""The fields every plain hit adds to the stored head, and the blank line that ends it."""
HIT_FIELDS_MEMO_MAX = 4096
_HIT_FIELDS_MEMO: dict[tuple[int, int, int], bytes] = {}
"""(Age, ttl, Content-Length) → :data:`HIT_FIELDS` formatted. Age and ttl change once a second per
entry and hot entries share values, so formatting (the costliest step of a hit) is mostly skipped."""
TIER_HIT_FIELDS = (
    b"Age: %d\r\nCache-Status: edgecache; hit; ttl=%d; detail=%b\r\nCF-Cache-Status: HIT\r\n"
    b"Content-Length: %d\r\n\r\n"
)
"""The fields of a plain hit on an entry just read from a tier below memory (its detail names it)."""
_TIER_HIT_FIELDS_MEMO: dict[tuple[int, int, bytes, int], bytes] = {}
"""(Age, ttl, tier, Content-Length) → :data:`TIER_HIT_FIELDS` formatted, as ``_HIT_FIELDS_MEMO``."""
FWD_FIELDS_MEMO_MAX = 1024
_FWD_FIELDS_MEMO: dict[tuple[CfStatus, str, int, bool, bool, str | None], bytes] = {}
"""(CF-Cache-Status, fwd, origin status, stored, collapsed, detail) → the two status fields of a
forwarded answer: few distinct values, formatted once each rather than on every miss."""
HOST_ERRORS = {
    BAD_HOST: "The Host field is not a valid host[:port].\n",
    NO_ZONE: "No zone serves this host.\n",
}
ALLOW = b"GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"
"""What ``OPTIONS *`` answers: the methods the edge accepts (CONNECT is refused by the server)."""
KEY_MEMO_MAX = 65536
VARY_SEP = "\x00v:"
"""Where the Vary-selected part of a key starts (see ``httpcache.key.vary_suffix``)."""
RANGE_FLIGHT = "\x00range:"
"""Separates a key from the range a range fill forwards, in the key its readers share it under."""
FILL_POLL = 0.002
"""Seconds before the first look, by a process waiting for another's fill, at the disk tier and the
fill's lock (decision 0021); each look after it waits twice as long as the one before, up to
``FILL_POLL_MAX``."""
FILL_POLL_MAX = 0.05
"""The longest a waiting process goes between two looks at one key. A look (a Vary read, a read of
the disk tier, and the lock's probe: a load or two of shared memory, the claim and the fill's
outcome) is made per waiting key on the loop that serves the hits: at a fixed 2 ms, a burst of new
URLs on a slow origin kept hundreds of keys looked at 500 times a second each. A fill that ends
after the first looks is seen at most this late (nginx's waiters look every 500 ms)."""
FILL_WAIT_KEYS = 64
"""The most keys one process waits for at once (``Proxy.share_fills``): a miss on another key,
past them, fetches on its own, as without fill locks. The waits cost per key, not per client (one
poller per key), so this bounds their cost on the loop: at ``FILL_POLL_MAX``, some 1,300 looks a
second. Past it, a burst of new keys costs the origin a fetch per worker for those keys, which a
node without workers' coalescing paid for every key."""


class Proxy:
    """The data-plane handler: call it with each parsed request."""

    def __init__(
        self,
        zones: ZoneTable,
        store: Tier,
        origin: OriginClient,
        stats: EdgeStats,
        *,
        max_object_bytes: int,
        index: EpochIndex,
        memory: MemoryTier,
        credits: LookupCredits | None = None,
    ) -> None:
        self.zones = zones
        self.store = store
        self._memory = memory
        """The memory tier behind ``store`` (itself, or the chain's first tier): the hot path asks it
        alone."""
        self._key_memo: dict[str, str] = {}
        """``host + " " + target`` as received → primary key, for zones without variant parts (at most
        ``KEY_MEMO_MAX`` entries). The hot path looks it up before the Host field is validated; a
        target has no space, so the last space splits every such string one way only, and an
        invalid Host cannot spell a valid pair's entry."""
        self.origin = origin
        self.stats = stats
        self._max = max_object_bytes
        self.index = index
        self.credits = LookupCredits() if credits is None else credits
        """What lookups removed or marked stale for a purge before the reclaimer got there."""
        self._hit_memos = HitMemos()
        """The whole answers of large hot entries (``_plain_hit``)."""
        self.inflight: dict[str, Fetch] = {}
        self._hit_for_miss: dict[str, float] = {}
        self._fetch_seqs: dict[int, int] = {}
        """stored_seq of every origin fetch in flight: the reclaimer may not compact past the oldest."""
        self._open_large = store.open_large if isinstance(store, TierChain) else None
        """Where fills too large for memory are written (in chunks), when the tier has a disk."""
        # Bound once: every miss hands these to its fetch (a bound method made per miss else).
        self._on_store = self._store_entry
        self._on_fetch_done = self._fetch_done
        self._on_answer_fill = self._answer_fill
        self.fill_locks: FillLocks | None = None
        """The node's fill locks, when its worker processes coalesce fills (:meth:`share_fills`)."""
        self._fill_lock_timeout = 0.0
        self._fill_wait_keys = FILL_WAIT_KEYS
        self._elsewhere: dict[str, tuple[asyncio.Future[None], asyncio.Task[None]]] = {}
        """Keys whose fill another process holds → what this process's waiters for it await, and
        the task that looks for the fill's end (this reference is the one that keeps it alive: the
        loop holds its tasks weakly)."""

    def share_fills(self, locks: FillLocks, timeout: float, *, wait_keys: int = FILL_WAIT_KEYS) -> None:
        """Coalesce fills with the node's other processes (decision 0021): a miss whose key another
        process is fetching waits, at most ``timeout`` seconds, for its entry in the shared disk
        tier instead of fetching it again; for at most ``wait_keys`` keys at once (a miss on
        another key past them fetches on its own)."""
        self.fill_locks = locks
        self._fill_lock_timeout = timeout
        self._fill_wait_keys = wait_keys

    def purge_applied(self) -> None:
        """A purge was just put in effect here (``Node.apply_purge``): the fill locks date what
        other processes announced as stored before it, which the purge may remove from the disk
        tier, from now; not from this process's next miss, which would take the fills announced
        in between for older than the purge and fetch them again (decision 0028)."""
        if self.fill_locks is not None:
            self.fill_locks.purged()

    async def stop_waiting(self) -> None:
        """End every wait for another process's fill now (the node stops, after its server has
        cancelled the answers): the pollers end, and a waiter still there looks its key up again
        and fetches what is still missing."""
        polls = [poll for _, poll in self._elsewhere.values()]
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)

    # -- entry point ------------------------------------------------------------------------------

    def __call__(self, req: Request, conn: Connection) -> Awaitable[None] | Pending | None:
        """Answer one request: synchronously on a fresh hit; a small miss from its fetch's callbacks
        (``PENDING``); anything else through a coroutine."""
        target = req.target
        method = req.method
        # The hot path: a plain GET or HEAD whose (Host, target) was seen before, answered by a fresh
        # entry of the memory tier stored under its primary key (no Vary). It needs neither the zone
        # nor the request's header dict; anything else takes the general path below.
        if req.plain and target[0] == "/" and (method == "GET" or method == "HEAD"):
            base = self._key_memo.get(req.host + " " + target)
            if base is not None:
                entry = self._memory.get_plain(base)
                if (
                    entry is not None
                    and entry.stored_seq >= self.index.position
                    and entry.stale_since is None
                    and not entry.no_cache
                    and not entry.tier
                ):
                    now = _time()
                    age = entry.initial_age + (now - entry.response_time)
                    ttl = entry.freshness_lifetime - age
                    if ttl > 0:
                        self._plain_hit(req, conn, entry, age, ttl)
                        return None
        # Everything but the hot path: the zone, then the key (variants, Vary), purge check, hit,
        # stale or miss in it. Here rather than in a method of its own: one frame less per miss.
        origin_form = target[0] == "/"
        if origin_form:
            found = self.zones.for_host(req.host)
        else:
            other = self._other_target_form(req, conn)
            if other is None:
                return None
            found = other
        if isinstance(found, int):
            self._plain(conn, req, found, HOST_ERRORS[found])
            return None
        zone, host = found
        if method != "GET" and method != "HEAD":
            return self._pass(req, conn, zone, host)
        return self._lookup_in(req, conn, zone, host, origin_form)

    def _lookup_in(
        self, req: Request, conn: Connection, zone: ZoneRuntime, host: str, origin_form: bool
    ) -> Awaitable[None] | Pending | None:
        """A GET or HEAD in the zone already chosen (by Host, or by an absolute-form authority)."""
        target = req.target
        method = req.method
        # The target a fill sends, when the key was made here: the key's own path and query, the
        # path normalised once (``key_and_target``). A key from the memo leaves it to ``_start_fetch``.
        sent = None
        if zone.has_variants:
            base, sent = key_and_target(host, target, zone.key_options)
            base += variant_suffix(req.headers, zone.key_options, zone.trusted_from(req.client_ip))
        elif origin_form:
            # The primary key of a (Host, target) never changes (zones are fixed for the process's
            # life): it is normalised once and found again by the two fields as received. Not for
            # absolute-form, whose authority, not Host, chose the zone.
            memo = self._key_memo
            memo_key = req.host + " " + target
            cached = memo.get(memo_key)
            if cached is None:
                cached, sent = key_and_target(host, target, zone.key_options)
                if len(memo) >= KEY_MEMO_MAX:
                    memo.clear()
                memo[memo_key] = cached
            base = cached
        else:
            base, sent = key_and_target(host, target, zone.key_options)
        key = base
        store = self.store
        vary = store.vary(base)
        if vary:
            key = base + vary_suffix(vary, req.headers)
        entry = store.get(key)
        if entry is not None and entry.stored_seq < self.index.position:
            entry = self._purge_check(entry)
        # A plain request (Request.plain) carries no Authorization, Range or conditional: its fresh
        # hit is decided without the request's header dict, which is then never built.
        plain = req.plain
        if entry is not None and (plain or entry.auth_ok or "authorization" not in req.headers):
            now = _time()
            age = entry.initial_age + (now - entry.response_time)
            # Entry.ttl, inlined for an entry no soft purge has touched.
            ttl = entry.freshness_lifetime - age if entry.stale_since is None else entry.ttl(now)
            if ttl > 0 and not entry.no_cache:
                if entry.tier:
                    return self._hit(req, conn, entry, now, ttl)
                if not plain:
                    headers = req.headers
                    if (
                        "range" in headers
                        or "if-none-match" in headers
                        or "if-modified-since" in headers
                        or "if-match" in headers
                        or "if-unmodified-since" in headers
                    ):
                        self._hit(req, conn, entry, now, ttl)
                        return None
                self._plain_hit(req, conn, entry, age, ttl)
                return None
        else:
            entry = None
        headers = req.headers
        if "connection" in headers and _drop_connection_options(headers):
            # A field named in Connection does not reach the origin, so it may not select what the
            # fill is filed under either: key the request again without it, in the zone already
            # chosen (an absolute-form target chose it by its authority, not by Host).
            return self._lookup_in(req, conn, zone, host, origin_form)
        if entry is not None:
            return self._stale(req, conn, zone, host, key, entry, _time())
        if method == "GET" and "range" in headers:
            return self._range_miss(req, conn, zone, host, key)
        return self._miss(req, conn, zone, host, key, headers, sent)

    def _other_target_form(self, req: Request, conn: Connection) -> tuple[ZoneRuntime, str] | int | None:
        """A request-target that is not origin-form (RFC 9112 §3.2). Absolute-form selects the zone by
        its authority, whatever Host says (§3.2.2), and is reduced to origin-form in ``req.target``;
        ``OPTIONS *`` is answered here (§3.2.4). Returns None when the request has been answered."""
        if self.zones.for_host(req.host) == BAD_HOST:
            # Ignored for routing, but still a field that must be valid (RFC 9112 §3.2).
            self._plain(conn, req, BAD_HOST, HOST_ERRORS[BAD_HOST])
            return None
        target = req.target
        if target == "*":
            if req.method == "OPTIONS":
                conn.write(
                    STATUS_LINES[200]
                    + b"Allow: "
                    + ALLOW
                    + b"\r\nContent-Length: 0\r\n"
                    + _connection_field(req)
                    + b"\r\n"
                )
                conn.finish(req.keep_alive)
            else:
                self._plain(conn, req, 400, "The asterisk-form target is for OPTIONS only.\n")
            return None
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            self._plain(conn, req, 400, "The request-target must be origin-form or an http(s) URI.\n")
            return None
        end = len(rest)
        for c in "/?":
            i = rest.find(c, 0, end)
            if i >= 0:
                end = i
        path = rest[end:]
        req.target = path if path[:1] == "/" else "/" + path
        return self.zones.for_host(rest[:end])

    def _purge_check(self, entry: Entry) -> Entry | None:
        """Apply the purges accepted since the entry was fetched (design: the epoch index)."""
        index = self.index
        verdict = index.check(entry.zone, entry.key, entry.tags, entry.stored_seq)
        if verdict is None:
            # Checked against every purge applied so far: later lookups take the one-comparison path
            # until the next purge. Not the zone's newest purge, which another zone's purges leave
            # behind the position, and compaction sets to 0 once the zone's rows are all reclaimed:
            # the entry would then take this path on every hit until it is fetched again.
            entry.stored_seq = index.position
            return entry
        if verdict.hard:
            # Bounded by the purge: another worker's newer fill of the key may reach the disk
            # tier before this removal does (store/chain.py).
            self.store.delete(entry.key, verdict.seq)
            self.stats.purged_on_lookup += 1
            self.credits.removed(entry, verdict.seq)
            return None
        if entry.stale_since is None or verdict.at < entry.stale_since:
            entry.stale_since = verdict.at
            self.credits.marked(entry, verdict.seq)
        return entry

    # -- hits -------------------------------------------------------------------------------------

    def _plain_hit(self, req: Request, conn: Connection, entry: Entry, age: float, ttl: float) -> None:
        """Write a fresh entry as it is: its varying fields (Age, ttl, Content-Length) are formatted
        once per distinct value, not once per hit, and head and body leave in one write (a large
        entry's whole answer is joined once a second: ``edge/hitmemo.py``)."""
        self.stats.hits += 1
        body = entry.body
        # Age is a non-negative integer (RFC 9111 §5.1); a clock stepped back since the fetch makes the
        # computed age negative, and truncation would round -2.5 up to -2. math.trunc is int() for a
        # float, without the type call.
        stamp = (_trunc(age) if age > 0 else 0, _trunc(ttl), len(body))
        fields = _HIT_FIELDS_MEMO.get(stamp)
        if fields is None:
            fields = _hit_fields(stamp)
        keep = req.keep_alive
        connection = b"" if keep and req.http_version == "1.1" else _connection_field(req)
        # Joined once: a chain of concatenations would copy the head twice, and a small body once more.
        if req.method == "HEAD":
            head = b"".join((STATUS_LINES[entry.status], entry.head, connection, fields))
            self.stats.bytes_sent += len(head)
            conn.respond(head, keep)
        elif len(body) < HIT_MEMO_BODY_MIN:
            out = b"".join((STATUS_LINES[entry.status], entry.head, connection, fields, body))
            self.stats.bytes_sent += len(out)
            conn.respond(out, keep)
        else:
            out = b""
            if not connection and len(body) <= HIT_MEMO_BODY_MAX:
                # Joined once a second, from the second hit of that second (edge/hitmemo.py).
                out = self._hit_memos.answer(entry, fields, STATUS_LINES[entry.status])
            if out:
                self.stats.bytes_sent += len(out)
                conn.respond(out, keep)
            else:
                # A large body is not copied: head and body leave in one gathered write.
                head = b"".join((STATUS_LINES[entry.status], entry.head, connection, fields))
                self.stats.bytes_sent += len(head) + len(body)
                conn.writelines([head, body])
                conn.finish(keep)

    def _hit(
        self, req: Request, conn: Connection, entry: Entry, now: float, ttl: float
    ) -> Awaitable[None] | None:
        """A fresh hit that is not the memory tier's plain one: the request has Range or
        conditionals, or the entry was just read from a tier below memory (the answer names it)."""
        self.stats.hits += 1
        tier = entry.tier
        entry.tier = b""
        if req.plain and type(entry) is not ChunkedEntry:
            # Nothing to evaluate (the request's header dict is never built): the memory tier's
            # plain hit, with the tier named in Cache-Status.
            body = entry.body
            age = entry.initial_age + (now - entry.response_time)
            stamp = (_trunc(age) if age > 0 else 0, _trunc(ttl), tier, len(body))
            fields = _TIER_HIT_FIELDS_MEMO.get(stamp)
            if fields is None:
                fields = _tier_hit_fields(stamp)
            keep = req.keep_alive
            if not keep or req.http_version != "1.1":
                fields = _connection_field(req) + fields
            if req.method == "HEAD":
                head = b"".join((STATUS_LINES[entry.status], entry.head, fields))
                self.stats.bytes_sent += len(head)
                conn.respond(head, keep)
            elif len(body) < HIT_MEMO_BODY_MIN:
                # Joined once, as the memory tier's plain hit (a chain of concatenations copies more).
                out = b"".join((STATUS_LINES[entry.status], entry.head, fields, body))
                self.stats.bytes_sent += len(out)
                conn.respond(out, keep)
            else:
                head = b"".join((STATUS_LINES[entry.status], entry.head, fields))
                self.stats.bytes_sent += len(head) + len(body)
                conn.writelines([head, body])
                conn.finish(keep)
            return None
        status = cache_status_hit(ttl, tier.decode())
        status_fields = b"Cache-Status: " + status.encode() + b"\r\n" + CF_HIT
        if type(entry) is ChunkedEntry:
            return self._stream_large(req, conn, entry, now, status_fields)
        self._answer_from_entry(req, conn, entry, now, status_fields)
        return None

    async def _stream_large(
        self, req: Request, conn: Connection, entry: ChunkedEntry, now: float, status_fields: bytes
    ) -> None:
        """Answer from an object on disk in chunks: the whole of it, or one range (206); several
        ranges get the whole object (RFC 9110 §14.2 lets a server ignore Range), since a multipart
        body would have to be built in memory. A chunk read only once the client has taken the one
        before (back-pressure); if the object vanishes mid-way the connection is reset, never ended
        as if the body were whole."""
        fields = b"Age: %d\r\n" % max(0, int(entry.age(now))) + status_fields
        length = entry.length
        first, last = 0, length - 1
        status = entry.status
        if not req.plain:
            headers = req.headers
            if any(h in headers for h in CONDITIONAL) and self._precondition_failed(req, conn, entry, fields):
                return
            if_range = headers.get("if-range")
            if (
                "range" in headers
                and req.method == "GET"
                and (if_range is None or if_range_allows(if_range, entry.etag, entry.last_modified))
            ):
                ranges = parse_range(headers["range"], length)
                if ranges == "unsatisfiable":
                    self._write_ranges(req, conn, entry.head, ranges, length, lambda s, e: b"", fields)
                    return
                if ranges is not None and len(ranges) == 1:
                    first, last = ranges[0]
                    status = 206
                    fields += b"Content-Range: " + content_range(first, last, length).encode() + b"\r\n"
        out = (
            STATUS_LINES[status]
            + entry.head
            + fields
            + b"Content-Length: %d\r\n" % (last - first + 1)
            + _connection_field(req)
            + b"\r\n"
        )
        conn.write(out)
        self.stats.bytes_sent += len(out)
        if req.method != "HEAD":
            for piece in entry.pieces(first, last):
                if piece is None:
                    conn.abort()
                    return
                conn.write(piece)
                self.stats.bytes_sent += len(piece)
                await conn.drain()
                if conn.closed:
                    return
        conn.finish(req.keep_alive)

    def _precondition_failed(self, req: Request, conn: Connection, entry: Entry, fields: bytes) -> bool:
        """Answer 304 or 412 when a conditional says so (RFC 9110 §13.2.2); whether it did."""
        verdict = evaluate_preconditions(req.method, req.headers, entry.etag, entry.last_modified)
        if verdict == 304:
            head = encode_head(
                [(k, v) for k, v in decode_head(entry.head) if k.lower() in NOT_MODIFIED_FIELDS]
            )
            conn.write(STATUS_LINES[304] + head + fields + _connection_field(req) + b"\r\n")
            conn.finish(req.keep_alive)
            return True
        if verdict == 412:
            self._plain(conn, req, 412, "Precondition failed.\n")
            return True
        return False

    def _answer_from_entry(
        self, req: Request, conn: Connection, entry: Entry, now: float, status_fields: bytes
    ) -> None:
        """Write a stored response, honouring the client's conditionals and Range (RFC 9110 §13, §14)."""
        headers = req.headers
        age = b"Age: %d\r\n" % max(0, int(entry.age(now)))
        body = entry.body
        status = entry.status
        if any(h in headers for h in CONDITIONAL) and self._precondition_failed(
            req, conn, entry, age + status_fields
        ):
            return
        if "range" in headers and status == 200 and req.method == "GET":
            if_range = headers.get("if-range")
            if if_range is None or if_range_allows(if_range, entry.etag, entry.last_modified):
                ranges = parse_range(headers["range"], len(body))
                if ranges is not None:
                    self._write_ranges(
                        req,
                        conn,
                        entry.head,
                        ranges,
                        len(body),
                        lambda s, e: body[s : e + 1],
                        age + status_fields,
                    )
                    return
        self._write_full(conn, req, status, entry.head, age + status_fields, body)

    def _write_ranges(
        self,
        req: Request,
        conn: Connection,
        head: bytes,
        ranges: list[tuple[int, int]] | Literal["unsatisfiable"],
        size: int,
        slice_of: Callable[[int, int], bytes],
        fields: bytes,
    ) -> None:
        """Answer a Range from a stored representation of ``size`` bytes: 206 or 416 (RFC 9110 §14)."""
        if ranges == "unsatisfiable":
            conn.write(
                STATUS_LINES[416]
                + b"Content-Range: "
                + unsatisfied_range(size).encode()
                + b"\r\nContent-Length: 0\r\n"
                + fields
                + _connection_field(req)
                + b"\r\n"
            )
            conn.finish(req.keep_alive)
            return
        if len(ranges) == 1:
            start, end = ranges[0]
            extra = b"Content-Range: " + content_range(start, end, size).encode() + b"\r\n"
            self._write_full(conn, req, 206, head, extra + fields, slice_of(start, end))
            return
        body, ctype = multipart_byteranges(slice_of, ranges, _content_type(head), size)
        head = encode_head([(k, v) for k, v in decode_head(head) if k.lower() != "content-type"])
        self._write_full(conn, req, 206, head, b"Content-Type: " + ctype.encode() + b"\r\n" + fields, body)

    def _write_full(
        self, conn: Connection, req: Request, status: int, head: bytes, fields: bytes, body: bytes
    ) -> None:
        """Write a complete response with a known length."""
        out = (
            STATUS_LINES[status]
            + head
            + fields
            + b"Content-Length: %d\r\n" % len(body)
            + _connection_field(req)
            + b"\r\n"
        )
        if req.method == "HEAD":
            conn.write(out)
        elif len(body) < 16384:
            conn.write(out + body)
        else:
            conn.writelines([out, body])
        self.stats.bytes_sent += len(out) + len(body)
        conn.finish(req.keep_alive)

    # -- partial entries --------------------------------------------------------------------------

    def _range_miss(
        self, req: Request, conn: Connection, zone: ZoneRuntime, host: str, key: str
    ) -> Awaitable[None] | None:
        """A GET with Range and no usable full entry: from the stored parts if they hold every range,
        else a range fill (one client range forwarded) or, for other Range fields, a full fill."""
        headers = req.headers
        coalesce = "authorization" not in headers
        part = self.store.get(key + PARTIAL_SUFFIX)
        if part is not None and part.stored_seq < self.index.position:
            part = self._purge_check(part)
        if isinstance(part, PartialEntry) and (part.auth_ok or coalesce):
            now = _time()
            ttl = part.ttl(now)
            if ttl > 0 and not part.no_cache and self._answer_from_part(req, conn, part, now, ttl):
                return None
        forward = single_range(headers["range"])
        if forward is None:
            return self._fill(req, conn, zone, host, key, None, coalesce=coalesce)
        return self._fill(req, conn, zone, host, key, None, coalesce=coalesce, ranged=forward)

    def _answer_from_part(
        self, req: Request, conn: Connection, part: PartialEntry, now: float, ttl: float
    ) -> bool:
        """Answer a Range from the stored parts when they hold all of it; whether it was answered.

        If-Range must hold against the parts' validators (else the client wants the whole current
        representation: the origin's business), and the Range must be valid.
        """
        headers = req.headers
        if_range = headers.get("if-range")
        if if_range is not None and not if_range_allows(if_range, part.etag, part.last_modified):
            return False
        ranges = parse_range(headers["range"], part.length)
        if ranges is None or (ranges != "unsatisfiable" and not part.covers(ranges)):
            return False
        self.stats.hits += 1
        fields = (
            b"Age: %d\r\n" % max(0, int(part.age(now)))
            + b"Cache-Status: "
            + cache_status_hit(ttl).encode()
            + b"\r\n"
            + CF_HIT
        )
        if any(h in headers for h in CONDITIONAL) and self._precondition_failed(req, conn, part, fields):
            return True
        self._write_ranges(req, conn, part.head, ranges, part.length, part.slice, fields)
        return True

    def _store_part(
        self, part: PartialEntry, vary: tuple[str, ...], request_headers: Mapping[str, str]
    ) -> None:
        """Store a 206 under its key's partial slot, combined with the parts stored there when both
        have the same strong validator and length (RFC 9111 §3.4); complete parts become the full
        entry. A purge accepted since either fetch started is honoured as for any fill."""
        base = _strip_vary(part.key)
        key = base + vary_suffix(vary, request_headers) if vary else part.key
        part.key = key + PARTIAL_SUFFIX
        verdict = self.index.check(part.zone, part.key, part.tags, part.stored_seq)
        if verdict is not None:
            if verdict.hard:
                self.store.delete(part.key)
                return
            part.stale_since = verdict.at
        old = self.store.peek(part.key)
        if old is not None and old.stored_seq < self.index.position:
            old = self._purge_check(old)
        if (
            isinstance(old, PartialEntry)
            and part.validator
            and old.validator == part.validator
            and old.length == part.length
            and old.stale_since is None
            and part.stale_since is None
        ):
            joined = PartialEntry.holding(part, part.length, part.joined_with(old), part.validator)
            if joined.held > self._max or len(joined.parts) > MAX_PARTS:
                return
            part = joined
        if part.complete:
            self._store_entry(part.as_full(key), vary, request_headers)
            return
        self._forget_other_vary(base, vary, self.store.variants(part.primary))
        self.store.put(part, (base, vary) if vary else None)

    # -- stale entries ----------------------------------------------------------------------------

    def _stale(
        self, req: Request, conn: Connection, zone: ZoneRuntime, host: str, key: str, entry: Entry, now: float
    ) -> Awaitable[None] | None:
        if type(entry) is ChunkedEntry:
            # Not revalidated: a 304 would have to rewrite the record around its chunks. Refetched.
            return self._fill(req, conn, zone, host, key, None, coalesce="authorization" not in req.headers)
        staleness = -entry.ttl(now)
        if not entry.must_revalidate and not entry.no_cache and staleness <= entry.stale_while_revalidate:
            # RFC 5861 §3: serve stale now, refresh in the background (one refresh per key).
            if key not in self.inflight:
                self._start_fetch(zone, host, key, req, entry, True)
            self.stats.count(CfStatus.UPDATING)
            fields = (
                b"Cache-Status: "
                + cache_status_hit(-staleness).encode()
                + b'; detail="stale-while-revalidate"\r\nCF-Cache-Status: UPDATING\r\n'
            )
            self._answer_from_entry(req, conn, entry, now, fields)
            return None
        return self._fill(req, conn, zone, host, key, entry, coalesce="authorization" not in req.headers)

    def _serve_stale_on_error(
        self, req: Request, conn: Connection, zone: ZoneRuntime, entry: Entry, why: str
    ) -> bool:
        """RFC 5861 §4 stale-if-error, or the zone's own allowance when the origin is gone (RFC 9111
        §4.2.4: serving stale while disconnected); never when must-revalidate or no-cache forbid it."""
        now = time.time()
        staleness = -entry.ttl(now)
        allowed = max(entry.stale_if_error, zone.config.stale_if_error)
        if entry.must_revalidate or entry.no_cache or staleness > allowed:
            return False
        self.stats.count(CfStatus.STALE)
        fields = (
            b"Cache-Status: "
            + cache_status_fwd("stale", ttl=-staleness, detail=why).encode()
            + b"\r\nCF-Cache-Status: STALE\r\n"
        )
        self._answer_from_entry(req, conn, entry, now, fields)
        return True

    # -- fills ------------------------------------------------------------------------------------

    def _start_fetch(
        self,
        zone: ZoneRuntime,
        host: str,
        key: str,
        req: Request,
        stale: Entry | None,
        coalesce: bool,
        ranged: str | None = None,
        lock: int = 0,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fetch:
        """Start an origin fetch; ``lock``: the fill lock it holds for the node's other processes,
        released when it ends, or as soon as its head shows it will not be stored; ``target``: what
        ``fill_target`` gives for the request's target, when the caller has it (``key_and_target``);
        ``headers``: ``req.headers``, when the caller holds it (the property's call is a frame)."""
        flight = key if ranged is None else _flight(key, req, ranged)
        # Positional, in the signature's order: keywords cost more, on every miss (decision 0008,
        # "Update 4").
        fetch = Fetch(
            zone,
            host,
            key,
            flight,
            ranged,  # range_value
            "GET",  # method
            zone.origin + (fill_target(req.target, zone.key_options) if target is None else target),  # url
            req.headers if headers is None else headers,
            req.client_ip,
            self.index.position,  # stored_seq
            stale,
            self._max,  # max_object_bytes
            self._on_store,
            self._on_fetch_done,
            self._open_large,
        )
        if coalesce:
            self.inflight[flight] = fetch
        if lock:
            fetch.lock = lock
        seqs = self._fetch_seqs
        seqs[fetch.stored_seq] = seqs.get(fetch.stored_seq, 0) + 1
        self.stats.origin_fetches += 1
        fetch.start(self.origin)
        return fetch

    def _release_lock(self, fetch: Fetch) -> None:
        """Hand back the fill lock ``fetch`` holds, announcing whether its fill went into the store
        (what the other processes' waiters then look for in the disk tier, or fetch at once)."""
        locks = self.fill_locks
        assert locks is not None
        # Only a fill that is in the store is announced: one a purge covered (its fetch began before
        # the purge) or one given up releases the other processes' waiters at once.
        locks.release(fetch.lock, stored=fetch.done and fetch.error is None and fetch.stored)
        fetch.lock = 0

    def _store_entry(self, entry: Entry, vary: tuple[str, ...], request_headers: Mapping[str, str]) -> bool:
        """Store a fill under the key its Vary fields select (RFC 9111 §4.1), unless a purge
        accepted after its fetch started covers it (design: no purge/fetch race). A full response
        replaces the parts stored for its key. Returns whether the entry went into the store as a
        whole response, and with a disk tier whether the disk took it (a full queue drops a put):
        what the fill lock announces to the other processes, which look for it there. A part
        returns False, even when it completes a full entry with the parts stored before it: range
        fills take no fill lock, and parts live in this process's memory only."""
        if isinstance(entry, PartialEntry):
            self._store_part(entry, vary, request_headers)
            return False
        key = entry.key
        # _strip_vary and Entry.primary, inline (every fill): the key without its Vary part, and
        # the URL's key (without any variant part).
        cut = key.find(VARY_SEP)
        base = key if cut < 0 else key[:cut]
        cut = base.find(VARIANT_SEP)
        primary = base if cut < 0 else base[:cut]
        # The fetch's key had a Vary part: the URL had Vary names when it was looked up, in memory
        # or in the disk tier.
        varied = len(base) < len(key)
        # A refill of a variant whose response no longer varies is stored under the URL itself,
        # where lookups now look (the old variants go below).
        entry.key = base + vary_suffix(vary, request_headers) if vary else base
        # No purge accepted since the fetch began (the usual fill): no purge can cover it, and the
        # index's call is skipped (its zones' last positions are at most ``position``).
        index = self.index
        verdict = (
            None
            if entry.stored_seq >= index.position
            else index.check(entry.zone, entry.key, entry.tags, entry.stored_seq)
        )
        # What memory holds under the URL: nothing for a new one (most fills), and then neither
        # its parts nor other variants need looking for.
        listed = self.store.variants(primary)
        if listed:
            partial = entry.key + PARTIAL_SUFFIX
            if partial in listed:
                # Parts live in memory only (store/chain.py), so memory lists them all; a delete of
                # a key that is not there would still cost the disk tier a queued removal.
                self.store.delete(partial)
                listed.remove(partial)
        if verdict is not None:
            if verdict.hard:
                self.store.delete(entry.key, verdict.seq)
                return False
            entry.stale_since = verdict.at
        else:
            # Checked against every purge so far: the disk tier would drop a fill still numbered
            # below a purge it has reclaimed meanwhile (store/disk.py).
            entry.stored_seq = index.position
        # ``listed and``: no generator for a new URL's fill (nothing listed), the usual miss.
        if not vary and (varied or (listed and any(VARY_SEP in key for key in listed))):
            # The origin dropped its Vary. Every tier forgets the URL's variants, and with them its
            # Vary names (the disk tier reads those before the record under the URL, so while they
            # stay the fill is never found there, and old variants stay servable). Memory may list
            # none of them (evicted, or filled by another process): the disk's removal goes by the
            # URL, queued before the put below, which the disk tier orders behind it.
            self.store.delete_primary(primary)
        elif listed:
            self._forget_other_vary(base, vary, listed)
        # The other processes look for the fill in the disk tier: whether it took it is the answer.
        return self.store.put(entry, (base, vary) if vary else None)

    def _forget_other_vary(self, base: str, vary: tuple[str, ...], listed: list[str]) -> None:
        """When the origin changed its Vary, the variants (and parts) selected by the old fields
        are unreachable: remove the ones memory lists (``listed``, what ``variants`` returned for
        the URL: the caller asks once)."""
        store = self.store
        stale = [
            key
            for key in listed
            if key == base or key.startswith(base + VARY_SEP) or key == base + PARTIAL_SUFFIX
        ]
        if not stale or store.vary(base) == (vary or None):
            return
        for key in stale:
            store.delete(key)

    def oldest_fetch_seq(self) -> int | None:
        """The lowest stored_seq of the origin fetches in flight, or None when there are none."""
        return min(self._fetch_seqs) if self._fetch_seqs else None

    def _fetch_done(self, fetch: Fetch) -> None:
        flight = fetch.flight
        if fetch.done:
            seqs = self._fetch_seqs
            seq = fetch.stored_seq
            n = seqs.get(seq, 0) - 1
            if n > 0:
                seqs[seq] = n
            else:
                seqs.pop(seq, None)
            if fetch.latency is not None:
                self.stats.observe_origin(fetch.latency)
            hit_for_miss = self._hit_for_miss
            if fetch.storable:
                # ``hit_for_miss and``: no call when nothing is remembered (the usual case).
                if hit_for_miss:
                    hit_for_miss.pop(flight, None)
            elif fetch.decision is not None and fetch.error is None:
                if len(hit_for_miss) >= HIT_FOR_MISS_MAX:
                    del hit_for_miss[next(iter(hit_for_miss))]
                hit_for_miss[flight] = time.monotonic() + HIT_FOR_MISS_SECONDS
        inflight = self.inflight
        if inflight.get(flight) is fetch:
            del inflight[flight]
        if fetch.lock and (fetch.done or not (fetch.storable or fetch.storing_large)):
            # A fill that will not be stored releases the other processes' waiters at once: they
            # fetch on their own, as the waiters of this process do (hit-for-miss).
            self._release_lock(fetch)

    def _miss(
        self,
        req: Request,
        conn: Connection,
        zone: ZoneRuntime,
        host: str,
        key: str,
        headers: dict[str, str],
        sent: str | None,
    ) -> Awaitable[None] | Pending | None:
        """A miss with nothing stored and no Range. Joining a fill in flight is ``_fill``'s job;
        a fetch of its own is answered from the fetch's callbacks (``Fetch.follow``) when the
        whole response arrives in one read, as a small object's usually does: no task, no
        future. If a read leaves the body unfinished, the answer streams on in a task from there.
        With worker processes, a miss that would start a fetch takes the key's fill lock first, or
        waits for another process's fill (``_wait_elsewhere``, decision 0021), unless this process
        already waits for as many other keys as it may (``FILL_WAIT_KEYS``): then it fetches.
        ``headers``: ``req.headers``, handed on (the property's call once a miss, not twice);
        ``sent``: the key's path and query, when ``_lookup_in`` made the key."""
        lock = 0
        coalesce = "authorization" not in headers
        if coalesce:
            until = self._hit_for_miss.get(key)
            if until is not None and until > time.monotonic():
                coalesce = False
            elif key in self.inflight:
                return self._fill(req, conn, zone, host, key, None, coalesce=True)
            elif self.fill_locks is not None:
                locks = self.fill_locks
                token = locks.token(key)
                may_wait = key in self._elsewhere or len(self._elsewhere) < self._fill_wait_keys
                if locks.take(token):
                    if locks.stored_recently(token) and may_wait:
                        # Another process has just stored it: on its way to the disk tier.
                        locks.unlock(token)
                        return self._wait_elsewhere(req, conn, zone, host, key, token)
                    lock = token
                elif may_wait:
                    return self._wait_elsewhere(req, conn, zone, host, key, token)
        fetch = self._start_fetch(zone, host, key, req, None, coalesce, None, lock, sent, headers)
        reader = fetch.join()
        if fetch.done:
            # It failed as it was sent (nothing to wait for): answered now.
            self._answer_fill(req, conn, fetch, reader)
            return None
        if req.http_version == "1.1":
            fetch.relay_interim(partial(_write_interim, req, conn))
        # A partial, not a lambda: a closure would make a cell of each name it reads, on every
        # miss, and put a Python frame between the fetch's callback and the answer.
        fetch.follow(partial(self._on_answer_fill, req, conn, fetch, reader))
        return PENDING

    def _answer_fill(self, req: Request, conn: Connection, fetch: Fetch, reader: Reader) -> None:
        """Answer a miss of ``_miss`` once its fetch has ended, or hand it to a task that streams
        the rest when a read has left the body unfinished. Called from the origin connection's
        callbacks: a failure here is the client connection's (``Connection.fail``), never the
        origin's."""
        if not fetch.done:
            conn.follow(self._stream_rest(req, conn, fetch, reader))
            return
        try:
            if fetch.error is not None:
                self._origin_failure(req, conn, fetch.error)
                return
            fields = self._forwarded_fields(req, conn, fetch, None, False)
            if fields is None:
                return
            length = fetch.content_length
            status = fetch.status
            if length is None or req.method == "HEAD" or status == 204 or status == 304:
                # Chunked, until the close, or no body: the streaming path's framing.
                started = self._relay_start(req, conn, status, fetch.head_bytes, fields, length)
                if started is not None:
                    pending, keep, chunked = started
                    self._relay_end(conn, fetch, reader, pending, keep, chunked, length, 0)
                return
            # The same bytes as ``_relay_start`` and ``_relay_end`` in one step, here rather than in
            # a method of its own (a frame less per miss): head and body in one write.
            keep = req.keep_alive
            connection = b"" if keep and req.http_version == "1.1" else _connection_field(req)
            chunks = fetch.available(reader)
            sent = sum(map(len, chunks))
            self.stats.bytes_sent += sent
            if fetch.error is not None or sent != length:
                conn.abort()
                return
            # In C: the length's "%d" formatting and the join cost ~1.6k instructions more in
            # Python, on every such miss (decision 0008, update 12).
            head = answer_head(STATUS_LINES[status], fetch.head_bytes, fields, length, connection)
            # As ``_flush``: one piece when small; else the head as one piece (the access log's
            # capture reads it from the first buffer written) and the body without a copy.
            if len(head) + sent <= 65536:
                conn.write(head + chunks[0] if len(chunks) == 1 else b"".join([head, *chunks]))
            else:
                conn.writelines([head, *chunks])
            conn.finish(keep)
        except Exception as exc:
            conn.fail(exc)
        finally:
            fetch.leave(reader)

    async def _stream_rest(self, req: Request, conn: Connection, fetch: Fetch, reader: Reader) -> None:
        """The rest of ``_answer_fill``'s answer, streamed as the body arrives."""
        try:
            await self._stream(req, conn, fetch, reader, None, False)
        finally:
            fetch.leave(reader)

    def _fill(
        self,
        req: Request,
        conn: Connection,
        zone: ZoneRuntime,
        host: str,
        key: str,
        stale: Entry | None,
        *,
        coalesce: bool,
        ranged: str | None = None,
        lock: int = 0,
    ) -> Awaitable[None]:
        """Join the fill in flight for the key (or start one) now, and return the coroutine that
        answers from it. The join happens here, not when the coroutine's task first runs: the
        fill may end (and leave ``inflight``) before then, and a client that found it in flight
        would otherwise fetch the object a second time (issue 11). ``lock``: a fill lock the caller
        took for the fetch this starts (it must not be in flight here). The answer leaves the fill
        when it ends, or when it is dropped unstarted (``_JoinedAnswer``)."""
        flight = _flight(key, req, ranged)
        assert lock == 0 or flight not in self.inflight
        if coalesce:
            until = self._hit_for_miss.get(flight)
            if until is not None and until > time.monotonic():
                coalesce = False
        fetch = self.inflight.get(flight) if coalesce else None
        collapsed = fetch is not None
        if fetch is None:
            fetch = self._start_fetch(zone, host, key, req, stale, coalesce, ranged, lock)
        reader = fetch.join()
        if req.http_version == "1.1" and not fetch.head_in:
            fetch.relay_interim(_interim_sink(req, conn))
        return _JoinedAnswer(
            self._answer_joined(req, conn, zone, host, key, stale, fetch, reader, collapsed, ranged),
            fetch,
            reader,
        )

    async def _answer_joined(
        self,
        req: Request,
        conn: Connection,
        zone: ZoneRuntime,
        host: str,
        key: str,
        stale: Entry | None,
        fetch: Fetch,
        reader: Reader,
        collapsed: bool,
        ranged: str | None,
    ) -> None:
        """Answer one client from the fill it joined, once the fill's head is in."""
        try:
            await fetch.wait_head()
            if fetch.error is not None or (stale is not None and fetch.origin_status >= 500):
                why = str(fetch.error) if fetch.error is not None else f"origin status {fetch.origin_status}"
                if stale is not None and self._serve_stale_on_error(req, conn, zone, stale, why):
                    return
                if fetch.error is not None:
                    self._origin_failure(req, conn, fetch.error)
                    return
            if collapsed and not fetch.storable:
                fetch.leave(reader)
                await self._fill(req, conn, zone, host, key, stale, coalesce=False, ranged=ranged)
                return
            vary = fetch.decision.vary if fetch.decision is not None else ()
            if (
                collapsed
                and vary
                and vary_suffix(vary, req.headers) != vary_suffix(vary, fetch.request_headers)
            ):
                # Joined before the origin said Vary: this client selects another variant.
                fetch.leave(reader)
                await self._fill(
                    req,
                    conn,
                    zone,
                    host,
                    _strip_vary(key) + vary_suffix(vary, req.headers),
                    stale,
                    coalesce=True,
                    ranged=ranged,
                )
                return
            await self._stream(req, conn, fetch, reader, stale, collapsed)
        finally:
            fetch.leave(reader)

    async def _wait_elsewhere(
        self, req: Request, conn: Connection, zone: ZoneRuntime, host: str, key: str, lock: int
    ) -> None:
        """Another process of the node is fetching this new object (it holds the fill lock): wait
        for its entry in the shared disk tier, at most ``fill_lock_timeout``, then answer as a
        lookup would; still a miss, the object is fetched here (nginx's ``proxy_cache_lock``)."""
        waiting = self._elsewhere.get(key)
        if waiting is None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            poll = loop.create_task(self._poll_elsewhere(key, lock, req.headers, done))
            waiting = self._elsewhere[key] = (done, poll)
        # Shielded: the future is every waiter's, and a cancelled waiter must not cancel it for
        # the others.
        await asyncio.shield(waiting[0])
        base = _strip_vary(key)
        vary = self.store.vary(base)
        if vary:
            key = base + vary_suffix(vary, req.headers)
        entry = self.store.get(key)
        if entry is not None and entry.stored_seq < self.index.position:
            entry = self._purge_check(entry)
        if entry is not None:
            now = _time()
            ttl = entry.ttl(now)
            if ttl > 0 and not entry.no_cache:
                answer = self._hit(req, conn, entry, now, ttl)
                if answer is not None:
                    await answer
                return
        locks = self.fill_locks
        assert locks is not None
        lock = 0
        if key not in self.inflight:
            lock = locks.token(key)
            if not locks.take(lock):
                lock = 0  # another process fetches it (the wait timed out, or it took the lock first)
        await self._fill(req, conn, zone, host, key, None, coalesce=True, lock=lock)

    async def _poll_elsewhere(
        self, key: str, lock: int, headers: Mapping[str, str], done: asyncio.Future[None]
    ) -> None:
        """Look for the end of another process's fill of ``key``, after ``FILL_POLL`` seconds, then
        twice as long each time up to ``FILL_POLL_MAX``: its entry in the store, its lock released
        without a recent stored fill announced (one whose entry did not show up in time included),
        or the timeout. A key looked up before its URL's Vary names were known (no Vary part) ends
        the wait as soon as they are: the lock and the announcement are the base key's, the fill
        stored may be another variant than the first waiter's, and each waiter must look up (and
        lock, or fetch) its own."""
        locks = self.fill_locks
        assert locks is not None
        clock = time.monotonic
        deadline = clock() + self._fill_lock_timeout
        base = _strip_vary(key)
        unvaried = base == key
        store = self.store
        pause = FILL_POLL
        try:
            while clock() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, FILL_POLL_MAX)
                vary = store.vary(base)
                if vary and unvaried:
                    return
                if store.get(base + vary_suffix(vary, headers) if vary else base) is not None:
                    return
                if locks.probe(lock) is Fill.GONE:
                    return
        finally:
            del self._elsewhere[key]
            if not done.done():
                done.set_result(None)

    async def _stream(
        self,
        req: Request,
        conn: Connection,
        fetch: Fetch,
        reader: Reader,
        stale: Entry | None,
        collapsed: bool,
    ) -> None:
        fields = self._forwarded_fields(req, conn, fetch, stale, collapsed)
        if fields is not None:
            await self._relay(
                req, conn, fetch.status, fetch.head_bytes, fields, fetch.content_length, fetch, reader
            )

    def _forwarded_fields(
        self, req: Request, conn: Connection, fetch: Fetch, stale: Entry | None, collapsed: bool
    ) -> bytes | None:
        """The status fields (and Age) of an answer from a fetch whose head is in; None when the
        client's conditionals were answered with a 304 here."""
        # A large object written to disk in chunks is stored too, though not held by the fetch.
        stored = fetch.storable or fetch.storing_large
        if stale is None:
            cf = CfStatus.MISS if stored else CfStatus.BYPASS
            fwd = "uri-miss" if stored else "bypass"
        else:
            cf = CfStatus.REVALIDATED if fetch.revalidated else CfStatus.EXPIRED
            fwd = "stale"
        self.stats.by_status[cf] += 1  # EdgeStats.count, inline: every miss
        detail = None if stored or fetch.decision is None else fetch.decision.reason or None
        stamp = (cf, fwd, fetch.origin_status, stored, collapsed, detail)
        fields = _FWD_FIELDS_MEMO.get(stamp)
        if fields is None:
            fields = _fwd_fields(stamp)
        if fetch.initial_age >= 1:
            fields += b"Age: %d\r\n" % int(fetch.initial_age)
        if req.plain:
            return fields
        headers = req.headers
        if fetch.status == 200 and any(name in headers for name in CONDITIONAL):
            shown = fetch.client_headers
            etag = _field(shown, "etag")
            last_modified = _field(shown, "last-modified")
            if evaluate_preconditions(req.method, req.headers, etag, last_modified) == 304:
                head = encode_head([(k, v) for k, v in shown if k.lower() in NOT_MODIFIED_FIELDS])
                conn.write(STATUS_LINES[304] + head + fields + _connection_field(req) + b"\r\n")
                conn.finish(req.keep_alive)
                return None
        return fields

    async def _relay(
        self,
        req: Request,
        conn: Connection,
        status: int,
        head: bytes,
        fields: bytes,
        length: int | None,
        fetch: Fetch,
        reader: Reader,
    ) -> None:
        """Stream a fetch's body to one client, framed by Content-Length, chunked, or close."""
        started = self._relay_start(req, conn, status, head, fields, length)
        if started is None:
            return
        pending, keep, chunked = started
        sent = 0
        while not fetch.done:
            chunks = fetch.available(reader)
            for chunk in chunks:
                sent += len(chunk)
                if chunked:
                    pending += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
                else:
                    pending.append(chunk)
            if pending:
                _flush(conn, pending)
                pending = []
                await conn.drain()
                if conn.closed:
                    return
            if not chunks:
                await fetch.wait()
        self._relay_end(conn, fetch, reader, pending, keep, chunked, length, sent)

    def _relay_start(
        self, req: Request, conn: Connection, status: int, head: bytes, fields: bytes, length: int | None
    ) -> tuple[list[bytes], bool, bool] | None:
        """The head of a relayed answer, framed, as the first piece to write, whether the connection
        is kept and whether the body is chunked; None when the answer has no body and is written.
        The head is one piece, joined once: a large body is written after it with ``writelines``,
        and the access log's capture reads the answer's head from the first buffer written."""
        keep = req.keep_alive
        bodyless = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked = False
        pieces = [STATUS_LINES[status], head, fields]
        if length is not None:
            pieces.append(b"Content-Length: %d\r\n" % length)
        elif bodyless:
            pass
        elif req.http_version == "1.1":
            chunked = True
            pieces.append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep = False
        pieces += (_connection_field(req) if keep else b"Connection: close\r\n", b"\r\n")
        first = b"".join(pieces)
        if bodyless:
            conn.write(first)
            conn.finish(keep)
            return None
        return [first], keep, chunked

    def _relay_end(
        self,
        conn: Connection,
        fetch: Fetch,
        reader: Reader,
        pending: list[bytes],
        keep: bool,
        chunked: bool,
        length: int | None,
        sent: int,
    ) -> None:
        """The last chunks of an ended fetch, written with what is pending (on a miss of a small
        object, its head: head and body leave in one write); a body that fell short is an abort."""
        for chunk in fetch.available(reader):
            sent += len(chunk)
            if chunked:
                pending += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                pending.append(chunk)
        self.stats.bytes_sent += sent
        if fetch.error is not None or (length is not None and sent != length):
            conn.abort()
            return
        if chunked:
            pending.append(b"0\r\n\r\n")
        _flush(conn, pending)
        conn.finish(keep)

    def _origin_failure(self, req: Request, conn: Connection, error: OriginError) -> None:
        if isinstance(error, OriginTimeout):
            self._plain(conn, req, 504, "The origin did not answer in time.\n")
        elif isinstance(error, OriginInvalid):
            self._plain(conn, req, 502, "The origin sent an invalid response.\n")
        else:
            self._plain(conn, req, 502, "The origin could not be reached.\n")

    # -- pass-through -----------------------------------------------------------------------------

    async def _pass(self, req: Request, conn: Connection, zone: ZoneRuntime, host: str) -> None:
        """Methods the cache does not store: forwarded, streamed back, never stored (DYNAMIC)."""
        self.stats.count(CfStatus.DYNAMIC)
        try:
            resp = await self.origin.request(
                req.method,
                zone.origin + origin_target(req.target),
                forward_headers(req.headers, req.client_ip, zone, host),
                req.body,
                on_interim=None if req.http_version != "1.1" else _interim_writer(req, conn),
            )
        except OriginError as exc:
            self._origin_failure(req, conn, exc)
            return
        if req.method not in SAFE and 200 <= resp.status < 400:
            self._invalidate_after_unsafe(zone, host, req, resp.headers)
        headers = [
            (k, v)
            for k, v in strip_hop_by_hop(resp.headers)
            if k.lower() not in TAG_HEADERS and k.lower() != "content-length"
        ]
        fields = (
            b"Cache-Status: "
            + cache_status_fwd("method", fwd_status=resp.status).encode()
            + b"\r\nCF-Cache-Status: DYNAMIC\r\n"
        )
        keep = req.keep_alive
        bodyless = req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.content_length
        chunked = False
        if length is not None:
            fields += b"Content-Length: %d\r\n" % length
        elif not bodyless:
            if req.http_version == "1.1":
                chunked = True
                fields += b"Transfer-Encoding: chunked\r\n"
            else:
                keep = False
        line = STATUS_LINES[resp.status]
        conn.write(
            line
            + encode_head(headers)
            + fields
            + (_connection_field(req) if keep else b"Connection: close\r\n")
            + b"\r\n"
        )
        if bodyless:
            resp.close()
            conn.finish(keep)
            return
        try:
            async for chunk in resp.chunks():
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
                if conn.closed:
                    resp.close()
                    return
        except OriginError:
            conn.abort()
            return
        if chunked:
            conn.write(b"0\r\n\r\n")
        conn.finish(keep)

    def _invalidate_after_unsafe(
        self, zone: ZoneRuntime, host: str, req: Request, response_headers: list[tuple[str, str]]
    ) -> None:
        """RFC 9111 §4.4: a successful unsafe request invalidates the target URI, and the
        Location / Content-Location URIs when they are on the same host."""
        targets = [req.target]
        for k, v in response_headers:
            if k.lower() not in ("location", "content-location"):
                continue
            if v.startswith("/"):
                targets.append(v)
                continue
            parts = urlsplit(v)
            if parts.scheme in ("http", "https") and (parts.hostname or "").rstrip(".") == host:
                targets.append((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        for target in targets:
            removed = self.store.delete_primary(primary_key("http", host, target, zone.key_options))
            self.stats.invalidated_by_unsafe += removed

    # -- small answers ----------------------------------------------------------------------------

    def _plain(self, conn: Connection, req: Request, status: int, text: str) -> None:
        body = text.encode()
        conn.write(
            STATUS_LINES[status]
            + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body)
            + b"Cache-Status: edgecache; fwd=request\r\n"
            + _connection_field(req)
            + b"\r\n"
            + (b"" if req.method == "HEAD" else body)
        )
        conn.finish(req.keep_alive)


def _hit_fields(stamp: tuple[int, int, int]) -> bytes:
    """Format and remember the fields of a plain hit (the memo is emptied when full)."""
    fields = HIT_FIELDS % stamp
    if len(_HIT_FIELDS_MEMO) >= HIT_FIELDS_MEMO_MAX:
        _HIT_FIELDS_MEMO.clear()
    _HIT_FIELDS_MEMO[stamp] = fields
    return fields


def _tier_hit_fields(stamp: tuple[int, int, bytes, int]) -> bytes:
    """Format and remember the fields of a plain hit from a lower tier (emptied when full)."""
    fields = TIER_HIT_FIELDS % stamp
    if len(_TIER_HIT_FIELDS_MEMO) >= HIT_FIELDS_MEMO_MAX:
        _TIER_HIT_FIELDS_MEMO.clear()
    _TIER_HIT_FIELDS_MEMO[stamp] = fields
    return fields


def _fwd_fields(stamp: tuple[CfStatus, str, int, bool, bool, str | None]) -> bytes:
    """Format and remember the Cache-Status and CF-Cache-Status fields of a forwarded answer."""
    cf, fwd, status, stored, collapsed, detail = stamp
    value = cache_status_fwd(fwd, fwd_status=status, stored=stored, collapsed=collapsed, detail=detail)
    fields = b"Cache-Status: " + value.encode() + b"\r\nCF-Cache-Status: " + cf.encode() + b"\r\n"
    if len(_FWD_FIELDS_MEMO) >= FWD_FIELDS_MEMO_MAX:
        _FWD_FIELDS_MEMO.clear()
    _FWD_FIELDS_MEMO[stamp] = fields
    return fields


def _interim_sink(req: Request, conn: Connection) -> Callable[[int, bytes], None]:
    """Where a fetch's 1xx responses go for this client (HTTP/1.1 only: RFC 9110 §15.2). Made for
    every miss and rarely called: the request is looked at only when a 1xx arrives."""
    return partial(_write_interim, req, conn)


def _write_interim(req: Request, conn: Connection, status: int, data: bytes) -> None:
    # A 100 answers an Expect: 100-continue; a client that did not send one is not told.
    if status != 100 or req.headers.get("expect", "").lower() == "100-continue":
        conn.write(data)


def _interim_writer(req: Request, conn: Connection) -> Callable[[int, list[tuple[str, str]]], None]:
    sink = _interim_sink(req, conn)
    return lambda status, fields: sink(status, interim_response(status, fields))


def _flush(conn: Connection, pieces: list[bytes]) -> None:
    """Write pieces: joined when small, gathered when large (no big copy); one send either way."""
    if not pieces:
        return
    if sum(map(len, pieces)) <= 65536:
        conn.write(b"".join(pieces))
    else:
        conn.writelines(pieces)


def _connection_field(req: Request) -> bytes:
    if not req.keep_alive:
        return b"Connection: close\r\n"
    if req.http_version == "1.0":
        return b"Connection: keep-alive\r\n"
    return b""


def _drop_connection_options(headers: dict[str, str]) -> bool:
    """Remove the fields named in Connection (RFC 9110 §7.6.1), except Host, which selected the zone
    and is replaced on the way to the origin anyway; True if any was present."""
    dropped = False
    for name in connection_options(headers["connection"]):
        if name in headers and name != "host" and name != "connection":
            del headers[name]
            dropped = True
    return dropped


class _JoinedAnswer:
    """The answer of a client that joined a fill (``Proxy._fill``): awaits the coroutine that gives
    it, which leaves the fill's reader when it ends. Dropped before it was awaited (its task
    cancelled before its first step, say, when the node stops), it leaves the reader itself: the
    coroutine's own ``finally`` never runs then, and the fill would keep its chunks for a reader
    that never reads."""

    __slots__ = ("_answer", "_awaited", "_fetch", "_reader")

    def __init__(self, answer: Coroutine[Any, Any, None], fetch: Fetch, reader: Reader) -> None:
        self._answer = answer
        self._fetch = fetch
        self._reader = reader
        self._awaited = False

    def __await__(self) -> Generator[Any, None, None]:
        self._awaited = True
        return self._answer.__await__()

    def __del__(self) -> None:
        if not self._awaited:
            self._answer.close()
            self._fetch.leave(self._reader)


def _flight(key: str, req: Request, ranged: str | None) -> str:
    """The key a fill's readers share it under: a range fill only with the same range and If-Range."""
    if ranged is None:
        return key
    return key + RANGE_FLIGHT + ranged + "\x00if-range:" + req.headers.get("if-range", "")


def _strip_vary(key: str) -> str:
    i = key.find(VARY_SEP)
    return key if i < 0 else key[:i]


def _content_type(head: bytes) -> str | None:
    return _field(decode_head(head), "content-type")


def _field(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None
