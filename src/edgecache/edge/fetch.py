"""Origin fetches that many clients share: request coalescing and streaming while storing.

Theory of operation:
- A :class:`Fetch` is one origin request for one cache key. It is driven by the origin
  connection's own callbacks (it is the response's listener, ``origin_conn.py`` rule 8), not by the
  task of the client that started it, so a client that goes away does not abort a fill that other
  clients (or the cache) still want. On an idle keep-alive connection the request is sent at once
  and the response is taken as it is parsed: no task, no future and no loop iteration of its own.
  Only when a connection must be opened or waited for (or a failed exchange is retried) does a
  short task run, and it ends once the request is sent.
- Clients do not wait for the whole body: each one is a :class:`Reader` that follows the fetch's
  chunk list and writes chunks as they arrive (Varnish calls this streaming). The client that
  started a fetch may instead ask to be called back (``follow``) when the fetch ends or when a
  read leaves the body unfinished, whichever comes first: a small object's whole response usually
  comes in one read, and is then answered from the origin connection's callbacks, with no task;
  otherwise it streams from there on like any reader.
- Only a response that will be stored is shared: N concurrent misses on one key cause one origin
  fetch. A response that turns out not to be storable (private, no-store, too large...) belongs to
  the client that started the fetch; the others fetch on their own, and the key is remembered as
  uncacheable for a while so later misses on it do not queue behind each other (Varnish's
  hit-for-miss).
- Memory: a stored response is held once (its chunks become the entry's body). A response that is
  not stored keeps only the chunks some reader has not written yet, and the fetch stops reading
  from the origin while more than ``HIGH_WATER`` bytes wait for the slowest reader.
- Interim (1xx) responses are not part of the object: each one is passed, as it arrives, to the
  readers waiting for the head (``relay_interim``), and never stored.
- ``stored_seq`` is the purge-ledger position read *before* the origin request is sent: a purge
  accepted while the fetch is in flight is newer than the entry it produces, so the entry is never
  served as fresh after that purge.
- A fill brings the full, unconditional object, except a *range fill*: it forwards one client
  range (and the client's If-Range, so the origin decides which representation the bytes are of).
  Its 206 is stored as a :class:`~edgecache.store.partial.PartialEntry` when Content-Range places
  it; the proxy combines it with the parts already stored (docs/decisions/0013-partial-content.md).
  Its readers share it under its own ``flight`` key, never with a full fill of the same key.
- A response larger than ``max_object_bytes`` that is otherwise storable is streamed like one that
  is not stored, and written to disk in chunks as it arrives when the tier offers ``open_large``
  (``store/chunked.py``); it is stored only when its body arrived whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING

from edgecache.edge.forwarding import forward_headers
from edgecache.edge.origin import (
    FieldLines,
    OriginClient,
    OriginError,
    OriginResponse,
    OriginUnreachable,
    retryable,
)
from edgecache.httpcache.dates import format_http_date
from edgecache.httpcache.freshness import StorageDecision, decide_from_fields, decide_storage, initial_age
from edgecache.httpcache.headers import (
    HOP_BY_HOP,
    decode_head,
    encode_head,
    merge_304,
    strip_hop_by_hop,
)
from edgecache.httpcache.memo import remember
from edgecache.httpcache.ranges import parse_content_range, strong_validator
from edgecache.httpcache.tags import TAG_HEADERS, parse_tags
from edgecache.store.chunked import LargeWrite
from edgecache.store.entry import Entry
from edgecache.store.partial import PartialEntry

if TYPE_CHECKING:
    from edgecache.edge._originhead import Fill
    from edgecache.edge.zones import ZoneRuntime

HIGH_WATER = 1024 * 1024

NOT_FORWARDED_TO_ORIGIN_ON_FILL = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)
"""A fill must bring the full, unconditional object: the cache answers ranges and conditionals."""

NOT_STORED = TAG_HEADERS | {"age", "content-length", "cdn-cache-control"}
"""Fields the cache consumes itself: tags are never shown to clients, Age and Content-Length are
recomputed on every answer, CDN-Cache-Control is addressed to us (RFC 9213)."""


_SHOWN, _HOP_BY_HOP, _CONNECTION, _TAG, _AGE, _NOT_SHOWN, _CDN_CACHE_CONTROL = range(7)
_CACHE_CONTROL, _DATE, _LAST_MODIFIED, _ETAG, _EXPIRES, _VARY, _SET_COOKIE = range(7, 14)
_KIND_BY_NAME = {
    **dict.fromkeys(HOP_BY_HOP, _HOP_BY_HOP),
    **dict.fromkeys(TAG_HEADERS, _TAG),
    "connection": _CONNECTION,
    "age": _AGE,
    "content-length": _NOT_SHOWN,
    "cdn-cache-control": _CDN_CACHE_CONTROL,
    "cache-control": _CACHE_CONTROL,
    "date": _DATE,
    "last-modified": _LAST_MODIFIED,
    "etag": _ETAG,
    "expires": _EXPIRES,
    "vary": _VARY,
    "set-cookie": _SET_COOKIE,
}
"""What a fill does with a response field, by lower-case name: shown to clients and stored
(``_SHOWN``, the default) or not (hop-by-hop, tags, Age, Content-Length, CDN-Cache-Control: see
``NOT_STORED``), and whether the storage decision reads it."""
_FILL_FIELDS: dict[tuple[int, str, str, tuple[tuple[str, str], ...]], tuple[ZoneRuntime, FieldLines]] = {}
"""(zone, host, client address, the request's fields) → what a fill of it sends to the origin,
encoded; bounded (``httpcache.memo.remember``: emptied when full)."""
_FILL_FIELDS_MAX = 256
_FILL_FIELDS_CHARS = 2048
"""Requests whose field names and values add up to more characters are encoded each time: a key
holds the request's whole fields, so the memo's size stays ~``_FILL_FIELDS_MAX`` times this."""
_CREDENTIALS = frozenset(("authorization", "cookie", "proxy-authorization"))
"""Requests carrying any of these are encoded each time: their values are one client's secrets,
which the memo would keep after the request has ended."""


def _fill_fields(headers: Mapping[str, str], client_ip: str, zone: ZoneRuntime, host: str) -> FieldLines:
    """The fields a plain fill (no range, no revalidation) sends: ``forward_headers`` encoded, once
    per distinct request without credentials and short (``_CREDENTIALS``, ``_FILL_FIELDS_CHARS``;
    ``headers``' names are lower-case, as ``Request.headers`` keeps them, and the credentials check
    compares them as they are).
    What it returns is a function of exactly these four inputs, so a remembered answer is the one
    ``forward_headers`` would give; a client's connection usually repeats its fields, and deciding
    and encoding them was a miss's largest Python step (decision 0008, "Update 4")."""
    # One C pass over the request's field names: ``any()`` over a generator cost every miss a
    # generator and four resumptions (decision 0008, update 7).
    if not _CREDENTIALS.isdisjoint(headers):
        return _encode_fill_fields(headers, client_ip, zone, host)
    fields = tuple(headers.items())
    memo_key = (id(zone), host, client_ip, fields)
    found = _FILL_FIELDS.get(memo_key)
    # The zone is kept with the lines, so its id cannot name another zone while they are here.
    if found is not None and found[0] is zone:
        return found[1]
    lines = _encode_fill_fields(headers, client_ip, zone, host)
    if sum(len(name) + len(value) for name, value in fields) <= _FILL_FIELDS_CHARS:
        remember(_FILL_FIELDS, memo_key, (zone, lines), _FILL_FIELDS_MAX)
    return lines


def _encode_fill_fields(
    headers: Mapping[str, str], client_ip: str, zone: ZoneRuntime, host: str
) -> FieldLines:
    """``_fill_fields``' answer, made afresh."""
    drop = NOT_FORWARDED_TO_ORIGIN_ON_FILL
    return FieldLines.of(forward_headers(headers, client_ip, zone, host, drop=drop))


def _field_pass(fields: Sequence[tuple[str, str]]) -> Fill:
    """What ``_originhead.scan`` returns for a fill, from the fields in Python, for the heads the
    scan leaves to Python (a Connection field naming a field the fill reads or more than 16
    names, a Content-Length of over 18 digits): hop-by-hop fields and those Connection names
    dropped (``strip_hop_by_hop``), the tags and the fields clients are shown kept (encoded as
    the stored head), what the storage decision reads gathered."""
    shown: list[tuple[str, str]] = []
    tag_fields: list[tuple[str, str]] = []
    cache_control: list[str] = []
    cdn_cache_control: list[str] = []
    expires: list[str] = []
    vary: list[str] = []
    date = age = last_modified = None
    etag = set_cookie = False
    for field in strip_hop_by_hop(fields):
        kind = _KIND_BY_NAME.get(field[0].lower(), _SHOWN)
        if kind == _SHOWN:
            shown.append(field)
        elif kind == _DATE:
            if date is None:
                date = field[1]
            shown.append(field)
        elif kind == _CACHE_CONTROL:
            cache_control.append(field[1])
            shown.append(field)
        elif kind == _LAST_MODIFIED:
            if last_modified is None:
                last_modified = field[1]
            shown.append(field)
        elif kind == _ETAG:
            etag = True
            shown.append(field)
        elif kind == _TAG:
            tag_fields.append(field)
        elif kind == _AGE:
            if age is None:
                age = field[1]
        elif kind == _EXPIRES:
            expires.append(field[1])
            shown.append(field)
        elif kind == _VARY:
            vary.append(field[1])
            shown.append(field)
        elif kind == _SET_COOKIE:
            set_cookie = True
            shown.append(field)
        elif kind == _CDN_CACHE_CONTROL:
            cdn_cache_control.append(field[1])
        # Content-Length (_NOT_SHOWN) is recomputed on every answer.
    head = encode_head(shown)
    return (
        head,
        cache_control,
        cdn_cache_control,
        expires,
        vary,
        date,
        last_modified,
        age,
        etag,
        set_cookie,
        tag_fields,
    )


InterimSink = Callable[[int, bytes], None]
"""``sink(status, response_bytes)``: writes one 1xx response to a client waiting for the head."""


class Reader:
    """One client's position in a fetch's chunk list."""

    # A class default and no ``__init__``: made on every miss, and a Python ``__init__`` cost each
    # one a frame.
    pos = 0


class Fetch:
    """One origin request for one cache key, shared by every reader that joins it."""

    # Slots, every one set in ``__init__``: a fill sets some thirty-five attributes, and an instance
    # dict holds at most 29 names in its class's shared keys; past them CPython makes the fetch a
    # dict of its own, mid-fill, and every store after that is a dict insert; a class default
    # read through an instance takes the generic attribute lookup. Slots took a miss with the disk
    # tier from 230.3k to 212.4k instructions (decision 0008's update 11).
    __slots__ = (
        "_base", "_buffered", "_client_headers", "_followers", "_fwd", "_head_waiter", "_interim",
        "_interim_sinks", "_large", "_max", "_method", "_on_done", "_open_large", "_origin",
        "_paused", "_request_time", "_resp", "_response_time", "_size", "_store_entry",
        "_tag_source", "_url", "_waiters", "chunks", "content_length", "content_range", "decision",
        "done", "error", "flight", "head_bytes", "head_in", "initial_age", "key", "latency",
        "length_known", "lock", "origin_status", "readers", "request_headers", "revalidated",
        "stale", "status", "storable", "stored", "stored_seq", "storing_large", "task", "zone",
    )  # fmt: skip

    _large: LargeWrite | None
    """The write to disk of a response too large for memory, while it goes on."""
    storing_large: bool
    """The body is written to disk in chunks (too large for memory), and the write has not given up
    (it stays True once the object is stored)."""
    status: int
    head_bytes: bytes
    content_length: int | None
    length_known: bool
    """The origin's response (or, after a 304, the stored one's) carried a Content-Length."""
    content_range: tuple[int, int, int] | None
    """Where a 206's body lies in the representation, when its Content-Range says so exactly."""
    decision: StorageDecision | None
    initial_age: float
    storable: bool
    revalidated: bool
    origin_status: int
    error: OriginError | None
    latency: float | None
    """Seconds from sending the request to receiving the response head."""
    done: bool
    _base: int
    """Index (in the whole body's chunk sequence) of ``chunks[0]``: non-stored fetches trim."""
    _buffered: int
    _size: int
    _origin: OriginClient | None
    _resp: OriginResponse | None
    """The exchange in progress, once sent; None again when it has ended or been dropped."""
    _paused: bool
    _request_time: float
    _response_time: float
    task: asyncio.Task[None] | None
    """Opens or waits for a connection, when none was idle; done once the request is sent."""
    _followers: list[Callable[[], None]] | None
    stored: bool
    """Whether its response went into the store whole (a purge accepted since the fetch began may
    have kept it out), and the disk tier took it when there is one (a full queue drops a put):
    what the fill lock announces to the node's other processes."""
    lock: int
    """The fill lock this fetch holds for the node's other processes (the proxy's), or 0. A fetch
    holding one calls ``on_done`` at its head too when it will not be stored, so that the proxy
    hands the lock back at once."""
    _tag_source: Sequence[tuple[str, str]]
    head_in: bool
    """The final head is in, or the fetch ended without one: readers may start (``wait_head``)."""
    _head_waiter: asyncio.Future[None] | None
    """What ``wait_head`` awaits, made by the first reader that has to wait: a small miss answered
    from the fetch's callbacks never waits, so never makes one."""
    _interim: tuple[tuple[int, bytes], ...]
    """The 1xx responses relayed so far (a new tuple per 1xx: they are rare)."""
    _interim_sinks: list[InterimSink] | None
    """Made by the first reader that joins before the head (most misses have one: their own)."""
    _waiters: list[asyncio.Future[None]] | None
    """Made by the first reader that waits for more of the body (a small miss never does)."""
    _client_headers: Sequence[tuple[str, str]] | None
    """``client_headers``, once decoded."""

    def __init__(
        self,
        zone: ZoneRuntime,
        host: str,
        key: str,
        flight: str,
        range_value: str | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        client_ip: str,
        stored_seq: int,
        stale: Entry | None,
        max_object_bytes: int,
        store_entry: Callable[[Entry, tuple[str, ...], Mapping[str, str]], bool],
        on_done: Callable[[Fetch], None],
        open_large: Callable[[], LargeWrite] | None = None,
    ) -> None:
        # The attributes' first values, chained by value (one constant load for each group).
        self._large = self.content_range = self.decision = self.error = self.latency = None
        self._origin = self._resp = self.task = self._followers = self._head_waiter = None
        self._interim_sinks = self._waiters = self._client_headers = self.content_length = None
        self.storing_large = self.length_known = self.storable = self.revalidated = False
        self.done = self._paused = self.stored = self.head_in = False
        self.status = self.origin_status = self._base = self._buffered = self._size = self.lock = 0
        self.initial_age = self._request_time = self._response_time = 0.0
        self.head_bytes = b""
        self._tag_source = self._interim = ()
        self.zone = zone
        self.key = key
        self.flight = flight
        """The key readers share this fetch under: ``key``, or ``key`` and the range forwarded."""
        self.stale = stale
        """The stored entry being revalidated, if any."""
        self.stored_seq = stored_seq
        self._max = max_object_bytes
        self._store_entry = store_entry
        self._on_done = on_done
        self._open_large = open_large
        self.request_headers = headers
        self._method = method
        self._url = url
        self.chunks: list[bytes] = []
        self.readers: list[Reader] = []
        if range_value is None and stale is None:
            self._fwd: Mapping[str, str] | FieldLines = _fill_fields(headers, client_ip, zone, host)
            return
        fwd = forward_headers(headers, client_ip, zone, host, drop=NOT_FORWARDED_TO_ORIGIN_ON_FILL)
        if range_value is not None:
            fwd["range"] = range_value
            if_range = headers.get("if-range")
            if if_range is not None:
                fwd["if-range"] = if_range
        if stale is not None:
            if stale.etag:
                fwd["if-none-match"] = stale.etag
            if stale.last_modified:
                fwd["if-modified-since"] = stale.last_modified
        self._fwd = fwd

    # -- sending ----------------------------------------------------------------------------------

    def start(self, origin: OriginClient) -> None:
        """Send the request: at once on an idle connection, else from a task that gets one."""
        self._origin = origin
        self._request_time = time.time()
        resp = origin.send_idle(self._method, self._url, self._fwd, self, self._on_interim)
        if resp is None:
            self.task = asyncio.get_running_loop().create_task(self._send(origin, retry=False))
        elif not resp.ended:
            # (An exchange that failed as it was sent has been handled by origin_failed already.)
            self._resp = resp

    async def _send(self, origin: OriginClient, *, retry: bool) -> None:
        try:
            resp = await origin.send_new(
                self._method, self._url, self._fwd, self, on_interim=self._on_interim, retry=retry
            )
        except OriginError as exc:
            self.error = exc
            self._finish()
            return
        except asyncio.CancelledError:
            # Every reader left before the head: later misses must not join a fetch that never ends.
            self.error = OriginUnreachable("the origin request was abandoned")
            self._finish()
            raise
        if not resp.ended:
            self._resp = resp

    # -- the response, as the origin connection parses it (ResponseListener) ----------------------

    def origin_head(self, resp: OriginResponse) -> None:
        """The final head: decide storage, and let the readers start."""
        response_time = self._response_time = time.time()
        request_time = self._request_time
        self.latency = response_time - request_time
        self.origin_status = resp.status
        # A 304, or any response to HEAD, has no body (the connection reuses or closes itself):
        # once finished here, the fetch ignores the exchange's end.
        if resp.status == 304 and self.stale is not None:
            self._revalidate(resp.headers, request_time, response_time)
            self._finish()
            return
        self._accept_head(resp, request_time, response_time)
        if self._method == "HEAD":
            self._finish()

    def origin_body(self, resp: OriginResponse, data: bytes) -> None:
        """Body bytes: kept for the readers (and the entry), reading paused while they lag."""
        self.chunks.append(data)
        self._size += len(data)
        self._buffered += len(data)
        if self.storable and self._size > self._max:
            # Learnt mid-body (no Content-Length): stop storing, keep streaming to those reading.
            self.storable = False
            self._begin_large()
            self._on_done(self)
        elif self._large is not None and not self._large.add(data):
            self._large = None
            self.storing_large = False
        if self._waiters is not None:
            self._wake()
        if not self.storable:
            self._trim()
            if self._buffered > HIGH_WATER and self.readers and not self._paused:
                self._paused = True
                resp.pause()

    def origin_done(self, resp: OriginResponse) -> None:
        """The whole body is in: store it if it is storable."""
        if self.done:
            return
        self._resp = None
        if self.storable:
            # What ``_store`` was, inline: its one caller, on every stored fill.
            decision = self.decision
            assert decision is not None
            body = b"".join(self.chunks)
            tags = parse_tags(self._tag_source)
            if self.content_range is None:
                entry = self._entry(decision, body, tags, self._response_time, self.head_bytes)
                self.stored = self._store_entry(entry, decision.vary, self.request_headers)
            else:
                first, last, length = self.content_range
                if len(body) == last - first + 1:
                    entry = self._part(decision, (first, body), length, tags, self._response_time)
                    self.stored = self._store_entry(entry, decision.vary, self.request_headers)
        elif self._large is not None:
            self._store_large(self._response_time)
        self._finish()

    def origin_failed(self, resp: OriginResponse, error: OriginError) -> None:
        """The exchange failed: re-sent once when the retry rule allows, else the fetch ends."""
        if self.done:
            return
        self._resp = None
        self._give_up_large()
        origin = self._origin
        if origin is not None and retryable(resp):
            self.task = asyncio.get_running_loop().create_task(self._send(origin, retry=True))
            return
        self.error = error
        self.storable = False
        self._finish()

    def origin_read_end(self, resp: OriginResponse) -> None:
        """A read left the response unfinished: followers that have the head stop hoping for the
        whole of it at once."""
        if self._followers is not None and self.head_in and not self.done:
            self._call_followers()

    def _abandon(self) -> None:
        """Every reader left a fetch that will not be stored: stop it."""
        resp = self._resp
        if self.task is not None and not self.task.done():
            self.task.cancel()
            return
        if self.head_in:
            self.storable = False
            self._give_up_large()
        else:
            self.error = OriginUnreachable("the origin request was abandoned")
        self._finish()
        if resp is not None:
            self._resp = None
            resp.close()

    def _on_interim(self, status: int, fields: list[tuple[str, str]]) -> None:
        data = interim_response(status, fields)
        self._interim += ((status, data),)
        for sink in self._interim_sinks or ():
            sink(status, data)

    def _accept_head(self, resp: OriginResponse, request_time: float, response_time: float) -> None:
        # What the storage decision reads and the stored head, read from the head's bytes in C
        # (decision 0024), or by the same pass in Python for a head the C scan leaves to it.
        fill = resp.fill
        if fill is None:
            fill = _field_pass(resp.headers)
        (
            head,
            cache_control,
            cdn_cache_control,
            expires,
            vary,
            date,
            last_modified,
            age,
            etag,
            set_cookie,
            tag_fields,
        ) = fill
        if date is None:
            # RFC 9110 §6.6.1: a recipient with a clock adds Date to what it caches or forwards.
            date = format_http_date(response_time)
            head += b"Date: %s\r\n" % date.encode("latin-1")
        zone = self.zone
        authorization = "authorization" in self.request_headers
        # Positional, in the signature's order, as the Entry's below: keywords cost more on this
        # path, every miss (decision 0008, "Update 4").
        decision = decide_from_fields(
            resp.status,
            cache_control,
            cdn_cache_control,
            expires,
            date,
            last_modified,
            etag,
            vary,
            set_cookie,
            authorization,
            response_time,  # now
            response_time,
            zone.cache_set_cookie,
            zone.heuristic_fraction,
            zone.heuristic_max,
        )
        self.decision = decision
        self.status = resp.status
        self.content_length = resp.content_length
        self.length_known = resp.content_length is not None
        self.initial_age = initial_age(age, date, request_time, response_time)
        self._tag_source = tag_fields
        self._interim_sinks = None
        self.head_bytes = head
        too_big = resp.content_length is not None and resp.content_length > self._max
        placed = True
        if resp.status == 206:
            cr = _field(self.client_headers, "content-range")
            self.content_range = parse_content_range(cr) if cr is not None else None
            placed = self.content_range is not None and (
                resp.content_length is None
                or resp.content_length == self.content_range[1] - self.content_range[0] + 1
            )
        storable = (
            decision.storable and placed and self._method == "GET" and (not authorization or decision.auth_ok)
        )
        self.storable = storable and not too_big
        if storable and too_big:
            self._begin_large()
        if self.lock and not self.storable and not self.storing_large:
            # Not shared: the fill lock goes back now, not when the body ends (decision 0021).
            self._on_done(self)
        self._head_is_in()

    def _revalidate(self, fresh: list[tuple[str, str]], request_time: float, response_time: float) -> None:
        """RFC 9111 §4.3.4: a 304 freshens the stored response with the fields it carries."""
        stale = self.stale
        assert stale is not None
        stored = decode_head(stale.head)
        merged = merge_304(stored, strip_hop_by_hop(fresh))
        decision = decide_storage(
            method="GET",
            status=stale.status,
            request_headers=self.request_headers,
            response_headers=merged + [(k, v) for k, v in fresh if k.lower() in TAG_HEADERS],
            now=response_time,
            response_time=response_time,
            cache_set_cookie=self.zone.cache_set_cookie,
            heuristic_fraction=self.zone.heuristic_fraction,
            heuristic_max=self.zone.heuristic_max,
        )
        self.decision = decision
        self.revalidated = True
        self.status = stale.status
        self.head_bytes = encode_head([(k, v) for k, v in merged if k.lower() not in NOT_STORED])
        self.content_length = len(stale.body)
        self.length_known = stale.length_known
        self.initial_age = initial_age(
            age_header=_field(fresh, "age"),
            date_header=_field(fresh, "date"),
            request_time=request_time,
            response_time=response_time,
        )
        self.chunks = [stale.body]
        self._size = len(stale.body)
        new_tags = parse_tags(fresh)
        entry = self._entry(decision, stale.body, new_tags or stale.tags, response_time, self.head_bytes)
        self.storable = decision.storable
        if self.storable:
            self.stored = self._store_entry(entry, decision.vary, self.request_headers)
        self._head_is_in()

    def _begin_large(self) -> None:
        """Write this response to disk in chunks, with the chunks received so far: a 200, or a 206
        of the whole representation (a player's ``bytes=0-``); other parts stay in memory
        (decision 0013)."""
        if self._open_large is None or not (self.status == 200 or self._whole_206):
            return
        large = self._open_large()
        for chunk in self.chunks:
            large.add(chunk)
        self._large = large
        self.storing_large = True

    @property
    def _whole_206(self) -> bool:
        return (
            self.status == 206
            and self.content_range is not None
            and self.content_range[0] == 0
            and (self.content_range[1] == self.content_range[2] - 1)
        )

    def _store_large(self, response_time: float) -> None:
        large = self._large
        assert large is not None and self.decision is not None
        if self.content_length is not None and large.length != self.content_length:
            self._give_up_large()
            return
        self._large = None
        decision = self.decision
        head = self.head_bytes
        if self.status == 206:
            # Every byte of the representation: stored as the 200 it is part of (RFC 9111 §3.4).
            head = encode_head([(k, v) for k, v in self.client_headers if k.lower() != "content-range"])
        entry = large.finish(self._entry(decision, b"", parse_tags(self._tag_source), response_time, head))
        if entry is None:
            self.storing_large = False
        else:
            entry.status = 200
            self.stored = self._store_entry(entry, decision.vary, self.request_headers)

    def _give_up_large(self) -> None:
        """The body will not arrive whole: what was written to disk of it goes."""
        if self._large is not None:
            self._large.abandon()
            self._large = None
            self.storing_large = False

    def _trim(self) -> None:
        """Forget the chunks every reader has written (only for bodies that are not stored)."""
        if not self.readers:
            return
        low = min(r.pos for r in self.readers)
        drop = low - self._base
        if drop > 0:
            self._buffered -= sum(len(c) for c in self.chunks[:drop])
            del self.chunks[:drop]
            self._base = low

    def _part(
        self,
        decision: StorageDecision,
        part: tuple[int, bytes],
        length: int,
        tags: tuple[str, ...],
        response_time: float,
    ) -> PartialEntry:
        """A 206 as stored: its fields without Content-Range, which each answer computes anew."""
        fields = self.client_headers
        entry = self._entry(
            decision,
            b"",
            tags,
            response_time,
            encode_head([(k, v) for k, v in fields if k.lower() != "content-range"]),
        )
        validator = strong_validator(
            _field(fields, "etag"), _field(fields, "last-modified"), _field(fields, "date")
        )
        return PartialEntry.holding(entry, length, (part,), validator or "")

    def _entry(
        self,
        decision: StorageDecision,
        body: bytes,
        tags: tuple[str, ...],
        response_time: float,
        head: bytes,
    ) -> Entry:
        # Positional, in the fields' order (see _accept_head for why).
        return Entry(
            self.zone.id,  # zone
            self.key,
            self.status,
            head,
            body,
            tags,
            self.stored_seq,
            response_time,
            self.initial_age,
            decision.freshness_lifetime,
            # ``or 0.0``: the shared constant instead of a float object per entry when zero.
            decision.stale_while_revalidate or 0.0,  # stale_while_revalidate
            decision.stale_if_error or 0.0,  # stale_if_error
            decision.must_revalidate,
            decision.no_cache,
            decision.auth_ok,
            self.length_known,
        )

    @property
    def client_headers(self) -> Sequence[tuple[str, str]]:
        """The fields clients are shown (the stored head's), decoded once, for the rare paths that
        read them (a 206, a conditional request answered from the fill). Read only once the head is
        in: ``head_bytes`` is set once per fetch (``_accept_head`` or ``_revalidate``)."""
        shown = self._client_headers
        if shown is None:
            shown = self._client_headers = tuple(decode_head(self.head_bytes))
        return shown

    def _finish(self) -> None:
        self.done = True
        if not self.head_in:
            self._head_is_in()
        self._interim_sinks = None
        self._on_done(self)
        # Each tested here: a small miss has followers but no waiters, and a call that finds
        # nothing to do costs every miss a frame.
        if self._waiters is not None:
            self._wake()
        if self._followers is not None:
            self._call_followers()

    def _head_is_in(self) -> None:
        if not self.head_in:
            self.head_in = True
            waiter = self._head_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _call_followers(self) -> None:
        followers = self._followers
        if followers is not None:
            self._followers = None
            for callback in followers:
                callback()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # -- readers ----------------------------------------------------------------------------------

    def join(self) -> Reader:
        """Start following this fetch from the first byte."""
        reader = Reader()
        self.readers.append(reader)
        return reader

    def follow(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, from the origin connection's callbacks: when the fetch ends, or
        when a read leaves it with its head in and its body unfinished (then the caller has to
        wait for the rest, as :meth:`wait` does). A small object's head, body and end usually come
        in one read: a reader that follows the fetch so answers its client without a task."""
        if self._followers is None:
            self._followers = [callback]
        else:
            self._followers.append(callback)

    def relay_interim(self, sink: InterimSink) -> None:
        """Pass this fetch's 1xx responses to ``sink`` until the final head: past ones, then new ones."""
        if self.head_in:
            return
        for status, data in self._interim:
            sink(status, data)
        if self._interim_sinks is None:
            self._interim_sinks = [sink]
        else:
            self._interim_sinks.append(sink)

    def leave(self, reader: Reader) -> None:
        """A reader is finished (or its client went away)."""
        readers = self.readers
        if reader in readers:
            readers.remove(reader)
        if not readers and not self.storable and not self.done:
            self._abandon()
        if self._paused:
            self._release_space()

    def available(self, reader: Reader) -> list[bytes]:
        """The chunks this reader has not written yet; advances the reader past them."""
        start = reader.pos - self._base
        out = self.chunks[start:]
        reader.pos = self._base + len(self.chunks)
        if out and not self.storable:
            self._trim()
            self._release_space()
        return out

    async def wait(self) -> None:
        """Wait for more chunks or for the end of the fetch."""
        if self.done:
            return
        fut = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [fut]
        else:
            self._waiters.append(fut)
        await fut

    async def wait_head(self) -> None:
        """Wait until the final head is in, or the fetch has ended without one."""
        if self.head_in:
            return
        waiter = self._head_waiter
        if waiter is None:
            waiter = self._head_waiter = asyncio.get_running_loop().create_future()
        # Shared by every reader waiting: one reader cancelled must not cancel the others' wait.
        await asyncio.shield(waiter)

    def _release_space(self) -> None:
        if self._paused and self._buffered <= HIGH_WATER:
            self._paused = False
            if self._resp is not None:
                self._resp.resume()


def interim_response(status: int, fields: list[tuple[str, str]]) -> bytes:
    """A 1xx response as relayed to a client: its own end-to-end fields only (RFC 9110 §15.2)."""
    try:
        phrase = HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %b\r\n" % (status, phrase) + encode_head(strip_hop_by_hop(fields)) + b"\r\n"


def _field(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None
