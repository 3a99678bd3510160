"""The data plane's HTTP/1.1 server: an asyncio Protocol on httptools (llhttp), hardened by hand.

Why our own Protocol and not a framework: see docs/decisions/0001-data-plane-http-server.md.

Theory of operation
-------------------
One ``Connection`` per TCP connection. It has two sides that move independently.

The parser side is llhttp, fed every byte that arrives, calling back into the connection. Its phase
(``_pphase``) is IDLE between messages, HEAD from a message's first byte until the end of the head,
BODY until the message is complete, then IDLE again. When a read arrives while IDLE (llhttp then
holds nothing of a message), a whole head of an ordinary shape at its start is read in C instead
(``_reqhead``, decision 0031): it becomes the ``Request`` the callbacks would have built and takes
their path from ``on_message_complete`` on; the rest of the read is tried again, and what is not
taken is fed to llhttp as before. The callbacks build the ``Request`` and check every limit and
framing rule as the bytes arrive; a violation records a status (``_status``) and raises
``_Stop``, which ends parsing for good. What the callbacks cannot see (a field httptools is still
buffering, chunk extensions llhttp skips) is bounded by counting the raw bytes of each phase
(``_raw``) in ``data_received``.

The response side is the handler. ``_busy`` is True from the moment a request is handed to the
handler until it calls ``finish()`` or ``abort()``.

Rules:

1. Requests are answered in the order they arrived, one at a time. A complete request goes straight
   to the handler, from inside the parser callback, when nothing is in flight (no response being
   produced, nothing queued, write side not paused): that is the cache-hit path, with no task and
   no future. Otherwise it joins ``_queue``, which also holds server-generated answers (an ``int``
   status, or the interim ``100 Continue`` as bytes) in their place in the sequence. When the
   queue holds more than ``_QUEUE_HIGH`` items, reading is paused until it is empty again. A
   queued item is taken on the loop iteration after the previous response finishes or the write
   side resumes, so a handler never runs inside another handler's call or inside the transport.
2. A handler that returns None has answered synchronously and called ``finish()``. One that returns
   an awaitable runs as a task. One that returns :data:`PENDING` answers later from callbacks of
   its own: it calls ``finish()`` or ``abort()`` then, or hands the rest of the answer to
   ``follow()`` (run as a task, as if it had been returned), or reports a failure to ``fail()``.
   If a handler raises before writing anything, the server writes a 500 and closes; if it raises
   after writing, the connection is aborted.
3. Once ``_stopped`` is set, no further request is parsed and arriving bytes are discarded. It is
   set by a request that does not keep the connection alive, by a rejected request, by the
   client's EOF, and by shutdown.
4. The connection ends in one of two ways. ``_shutdown`` (after the last response, or after an
   error the server wrote) flushes, half-closes (FIN), and lingers reading and discarding until
   the client closes, so that a client still sending a body we refused reads our answer instead of
   a reset. ``abort()`` resets at once.
5. A rejected request never reaches the handler, and is answered (if anything was in flight, after
   it) with a small ``text/plain`` error carrying ``Connection: close``.
6. Nothing here arms a timer, and the per-request path never reads the clock. Entering a phase
   zeroes its timestamp (``_t_head``, ``_t_body``, ``_t_idle``); one sweeper per server walks the
   connections a few times a second, stamps the zeroed ones and expires the old ones, so each
   deadline is met up to one sweep late: header_timeout for a head (408), body_timeout between
   body bytes and body_deadline for the whole body (``_t_bstart``; 408), idle_timeout for an idle
   keep-alive connection (silent close) and for a client that does not read what we write
   (``_t_wpause``, abort). A connection that never sent a
   request gets header_timeout. A 408 is written only when nothing else is in flight; otherwise
   it is an abort. A lingering connection (``_linger``) is reset after ``_LINGER`` seconds.

Framing, stricter than llhttp where llhttp is lenient (decisions in ADR 0001): bare LF and bare CR
are errors (llhttp's strict default, pinned per parser); Content-Length must be plain ASCII digits
and may appear once; Transfer-Encoding must be exactly ``chunked`` (case-insensitive), may appear
once, and not in HTTP/1.0; HTTP versions other than 1.0 and 1.1 get 505; an HTTP/1.1 request needs
exactly one Host; a request-target may not contain ``#``; trailer fields count against the header
limits and are dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NoReturn, cast

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from edgecache.config import Limits
from edgecache.edge._reqhead import HeadReader

__all__ = [
    "PENDING",
    "Connection",
    "Handler",
    "Http1Stats",
    "HttpServer",
    "Pending",
    "Request",
    "start_server",
]

_log = logging.getLogger(__name__)
_monotonic = time.monotonic


class Request:
    """One complete request, as handed to the handler.

    ``headers`` is built on first use: the server decodes only the fields it or a cache hit needs
    (``host`` and the framing, conditional, range and credential fields) as they arrive, and keeps
    the rest as raw bytes, so a request the cache answers never pays for a dict of every field.
    """

    __slots__ = (
        "_fields",
        "_headers",
        "body",
        "client_ip",
        "host",
        "http_version",
        "keep_alive",
        "method",
        "plain",
        "raw",
        "target",
    )

    method: str
    target: str
    """The request-target exactly as received, latin-1 decoded, e.g. ``/a/b?x=1``."""
    body: bytes
    http_version: str
    """``"1.1"`` or ``"1.0"``."""
    keep_alive: bool
    """Whether the client allows keeping the connection open."""
    client_ip: str
    host: str
    """The Host field ("" when absent)."""
    plain: bool
    """No Range, no conditional (If-*) and no Authorization field: a stored response may answer
    the request as it is."""
    raw: bytes | None
    """With the access log on: the bytes of the read this request's head began, when it began
    one (else None)."""
    _headers: dict[str, str] | None
    _fields: list[tuple[str, bytes]]

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        http_version: str,
        keep_alive: bool,
        client_ip: str,
    ) -> None:
        self.method = method
        self.target = target
        self._headers = headers
        self._fields = []
        self.raw = None
        self.body = body
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.client_ip = client_ip
        self.host = headers.get("host", "")
        self.plain = _NOT_PLAIN.isdisjoint(headers)

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case names; repeated fields joined with ", " (``cookie`` with "; "); no trailers."""
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
            for key, raw in self._fields:
                text = raw.rstrip(b" \t").decode("latin-1")
                if key in headers:
                    headers[key] += ("; " if key == "cookie" else ", ") + text
                else:
                    headers[key] = text
        return headers

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} HTTP/{self.http_version} from {self.client_ip})"


_new_request = object.__new__


class Pending:
    """The type of :data:`PENDING`."""

    __slots__ = ()


PENDING = Pending()
"""What a handler returns when it answers later from callbacks of its own (rule 2): no task."""

Handler = Callable[[Request, "Connection"], Awaitable[None] | Pending | None]


class Http1Stats:
    """Counters of one server, plain integers read by the metrics collector at scrape time."""

    __slots__ = ("connections_opened", "handler_errors", "idle_closed", "rejected", "requests", "timeouts")

    def __init__(self) -> None:
        self.connections_opened = 0
        self.requests = 0
        """Complete requests parsed (each one is answered by the handler or dropped on close)."""
        self.rejected: dict[int, int] = dict.fromkeys(_REJECT_STATUSES, 0)
        """Requests the server answered itself, by status (408 counts timeouts it could answer)."""
        self.timeouts = 0
        """Connections closed for a header, body or send timeout."""
        self.idle_closed = 0
        self.handler_errors = 0


_REJECT_STATUSES = (400, 405, 408, 413, 414, 431, 501, 505)
_PHRASES = {
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def _error_response(status: int) -> bytes:
    body = f"{_PHRASES[status]}\n".encode("ascii")
    # RFC 9110 §15.5.6: a 405 must say what is allowed; CONNECT is the only method we refuse so.
    allow = b"Allow: GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE\r\n" if status == 405 else b""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%bConnection: close\r\n\r\n%b"
        % (status, _PHRASES[status].encode("ascii"), len(body), allow, body)
    )


_ERRORS = {status: _error_response(status) for status in _PHRASES}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_IDLE, _HEAD, _BODY = 0, 1, 2
_QUEUE_HIGH = 8
_LINGER = 2.0
"""Seconds a half-closed connection waits for the client's FIN once our bytes are out."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SINGLE = frozenset({"content-length", "host", "transfer-encoding"})
_NOT_PLAIN = frozenset(
    {
        "authorization",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "range",
    }
)
"""Fields that change what a stored response answers (RFC 9110 §13, §14; RFC 9111 §3.5)."""
_WATCHED = _SINGLE | _NOT_PLAIN | {"connection", "expect", "proxy-connection", "upgrade"}
"""Fields decoded as they arrive: what the server's own checks and :attr:`Request.plain` read."""
_NAMES: dict[bytes, str] = {}
"""Raw field name → lower-case str, for valid tokens only; bounded so clients cannot grow it."""
_NAMES_MAX = 1024
_METHODS: dict[bytes, str] = {}
"""llhttp only reports methods from its fixed table, so this stays small."""


class _Stop(Exception):
    """Raised in a parser callback to end parsing; the reason is in ``Connection._status``."""


def _field_name(raw: bytes) -> str:
    if _TOKEN.fullmatch(raw) is None:
        raise _Stop
    name = raw.decode("ascii").lower()
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = name
    return name


def _strict_parser(protocol: object) -> HttpRequestParser:
    parser = HttpRequestParser(protocol)
    # Leniencies are off by default today; pinning them keeps a future default from loosening
    # framing under us (bare CR/LF, chunk-size whitespace, Connection: close data, ...).
    parser.set_dangerous_leniencies(
        lenient_headers=False,
        lenient_chunked_length=False,
        lenient_keep_alive=False,
        lenient_transfer_encoding=False,
        lenient_version=False,
        lenient_data_after_close=False,
        lenient_optional_lf_after_cr=False,
        lenient_optional_cr_before_lf=False,
        lenient_optional_crlf_after_chunk=False,
        lenient_spaces_after_chunk_size=False,
    )
    return parser


def _versions_strict() -> bool:
    """Whether a parser built as each connection builds it refuses every HTTP version but 0.9, 1.0,
    1.1 and 2.0 (llhttp's strict table). Only then does a kept-alive request without a Connection or
    Proxy-Connection field tell its version, 1.1, without ``get_http_version()`` (see
    ``on_headers_complete``); a parser that lets other versions through gets the call every time."""
    for line in (b"GET / HTTP/1.2\r\n", b"GET / HTTP/3.1\r\n"):
        try:
            _strict_parser(object()).feed_data(line + b"Host: a\r\n\r\n")
        except HttpParserError:
            continue
        return False
    return True


class Connection(asyncio.Protocol):
    """One client connection; the handler receives it to write its response.

    ``closed`` is True once nothing more can be written: the client went away, the connection was
    aborted, or it is shutting down after its last response. ``write()`` is then a no-op.
    """

    __slots__ = (
        "_achunk",
        "_alog",
        "_areq",
        "_blen",
        "_body",
        "_busy",
        "_drain_waiter",
        "_eof",
        "_fields",
        "_fresh",
        "_handler",
        "_hbytes",
        "_hcount",
        "_head",
        "_keep_alive",
        "_limits",
        "_linger",
        "_max_body",
        "_max_body_wire",
        "_max_hbytes",
        "_max_hcount",
        "_max_head",
        "_max_line",
        "_method",
        "_parser",
        "_plain",
        "_pphase",
        "_queue",
        "_raw",
        "_read_paused",
        "_seen",
        "_seq",
        "_server",
        "_stats",
        "_status",
        "_stopped",
        "_t_body",
        "_t_bstart",
        "_t_head",
        "_t_idle",
        "_t_wpause",
        "_target",
        "_task",
        "_transport",
        "_url",
        "_version",
        "_versions_strict",
        "_write_paused",
        "_wrote",
        "client_ip",
        "closed",
    )

    _transport: asyncio.Transport

    def __init__(self, server: HttpServer) -> None:
        limits = server.limits
        self._server = server
        self._handler = server.handler
        self._stats = server.stats
        self._limits = limits
        self._max_line = limits.max_request_line
        self._max_hcount = limits.max_header_count
        self._max_hbytes = limits.max_header_bytes
        self._max_body = limits.max_body_bytes
        # The version, the spaces and the line ends count here but in neither limit.
        self._max_head = limits.max_request_line + limits.max_header_bytes + 32
        # Chunk framing may add to the body; an honest client's overhead is far below this.
        self._max_body_wire = 2 * limits.max_body_bytes + 65536
        self._parser = _strict_parser(self)
        self._head = server.read_head
        self._versions_strict = server.versions_strict
        self.client_ip = ""
        self.closed = False
        self._alog: Callable[[Request, bytes], None] | None = None
        """The access log's record of a fresh hit (set by its connection subclass; None when off)."""
        self._areq: Request | None = None
        """With the access log on: the request being answered."""
        self._achunk: bytes | None = None
        """With the access log on: the last read, if it began between two requests and no
        request has claimed it yet."""
        self._queue: deque[Request | int | bytes] = deque()
        self._task: asyncio.Task[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pphase = _IDLE
        self._busy = False
        self._wrote = False
        self._seq = 0
        self._stopped = False
        self._eof = False
        self._status = 0
        self._read_paused = False
        self._write_paused = False
        self._t_idle = self._t_head = self._t_body = self._t_bstart = self._t_wpause = self._linger = 0.0
        self._fresh = False
        self._raw = 0
        self._method = ""
        self._url = b""
        self._target = ""
        self._fields: list[tuple[str, bytes]] = []
        self._seen: dict[str, str] = {}
        self._plain = True
        self._body: list[bytes] | None = None
        self._blen = self._hcount = self._hbytes = 0
        self._version = "1.1"
        self._keep_alive = False

    # -- the handler's interface --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send response bytes; dropped once the connection is closed or closing."""
        if self.closed:
            return
        self._wrote = True
        self._transport.write(data)

    def respond(self, data: bytes, keep_alive: bool) -> None:
        """Send a whole response in one write and finish it: ``write(data)`` then ``finish(keep_alive)``
        in one call, for answers that are ready at once (a cache hit)."""
        if not self.closed:
            self._wrote = True
            self._transport.write(data)
        alog = self._alog
        if alog is not None:
            # The access log's capture of a hit is here, behind one test, rather than in an
            # override: a Python-level wrapper cost a hit more than the record itself (decision
            # 0016). The call is to C, which packs the record into the ring (decision 0017).
            req = self._areq
            if req is not None:
                self._areq = None
                alog(req, data)
        if keep_alive and self._busy and not self._queue and not self._stopped:
            self._busy = False
            self._t_idle = 0.0
        else:
            self.finish(keep_alive)

    def writelines(self, pieces: list[bytes]) -> None:
        """Send several pieces at once (one gathered write where the loop supports it, no copy)."""
        if self.closed:
            return
        self._wrote = True
        self._transport.writelines(pieces)

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark (or the connection is gone)."""
        if not self._write_paused or self.closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._server.loop.create_future()
        await waiter

    def finish(self, keep_alive: bool) -> None:
        """The current response is complete; the connection stays open if both sides allow it."""
        if not self._busy:
            return
        self._busy = False
        if not keep_alive:
            self._shutdown()
        elif self._queue:
            self._server.loop.call_soon(self._run_queue)
        elif self._stopped:
            self._shutdown()  # the request said close, or the client sent EOF
        else:
            self._t_idle = 0.0

    def follow(self, awaitable: Awaitable[None]) -> None:
        """Run the rest of the current answer as a task (rule 2): what a handler that returned
        :data:`PENDING` calls when it has to wait after all."""
        # The sequence number tells this response from a later one once finish() has been called.
        self._seq += 1
        self._task = self._server.loop.create_task(self._run(awaitable, self._seq))

    def _answers_later(self) -> None:
        """The handler returned :data:`PENDING` with the access log on: the log's connection starts
        timing the answer here (``edge/accesslog.py``)."""

    def fail(self, exc: Exception) -> None:
        """The current answer failed in a callback of a handler that returned :data:`PENDING`:
        a 500 if nothing was written yet, else the connection is aborted (rule 2)."""
        if self._busy:
            self._handler_failed(exc)
        else:
            _log.error("HTTP/1 handler failed after finishing its response", exc_info=exc)

    def close_when_idle(self) -> None:
        """Parse nothing more; close after the responses already owed (at once when there are none)."""
        self._stopped = True
        if not self._busy and not self._queue:
            self._shutdown()

    def abort(self) -> None:
        """Reset the connection at once, dropping anything buffered or queued."""
        self._busy = False
        self._stopped = True
        self._queue.clear()
        self.closed = True
        self._transport.abort()
        self._wake_drain()

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip = peer[0]
        self._server.connections.add(self)
        self._stats.connections_opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stopped = True
        self._busy = False
        self._queue.clear()
        self._server.connections.discard(self)
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._alog is not None:
            self._achunk = None if self._pphase else data
        if not self._pphase:
            taken = self._head(data, 0, self.client_ip)
            if taken is not None:
                while True:
                    end, req = taken
                    # The sweeper gives a connection that has sent a request the idle deadline.
                    self._method = req.method
                    self._accept(req)
                    if self._stopped or end == len(data):
                        return
                    taken = self._head(data, end, self.client_ip)
                    if taken is None:
                        break
                data = data[end:]
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._parse_failed(exc)
            return
        if self._pphase:
            self._partial_message(len(data))

    def eof_received(self) -> bool | None:
        self._eof = True
        self._stopped = True
        # Keep the write side open for the answers still owed; _shutdown closes it afterwards.
        return True if self._busy or self._queue else None

    def pause_writing(self) -> None:
        self._write_paused = True
        self._t_wpause = _monotonic()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._linger:
            self._linger = _monotonic()
        self._wake_drain()
        if self._queue and not self._busy:
            self._server.loop.call_soon(self._run_queue)

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # From the message's first byte llhttp holds part of it, so the next read may not be taken
        # by the C reader until on_message_complete; on_message_complete has already reset the
        # per-message state.
        if self._stopped:
            raise _Stop
        self._pphase = _HEAD
        self._t_head = 0.0
        self._fresh = True

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url
        else:
            raw = self._parser.get_method()
            method = _METHODS.get(raw)
            if method is None:
                method = _METHODS[raw] = raw.decode("ascii")
            self._method = method
        if len(self._method) + 1 + len(url) > self._max_line:
            self._fail(414)
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        count = self._hcount = self._hcount + 1
        size = self._hbytes = self._hbytes + len(name) + len(value) + 4
        if count > self._max_hcount or size > self._max_hbytes:
            self._fail(431)
        if self._pphase != _HEAD:
            return
        key = _NAMES.get(name)
        if key is None:
            key = _field_name(name)
        self._fields.append((key, value))
        if key not in _WATCHED:
            return  # decoded only if the handler asks for Request.headers
        if key in _NOT_PLAIN:
            self._plain = False
        # llhttp strips leading whitespace from a value but keeps trailing whitespace (RFC 9110 §5.5).
        text = value.rstrip(b" \t").decode("latin-1")
        seen = self._seen
        if key in seen:
            if key in _SINGLE:
                self._fail(400)
            seen[key] += ", " + text
        else:
            seen[key] = text

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._seen
        keep_alive = parser.should_keep_alive()
        # llhttp keeps an HTTP/1.x connection alive by default only from 1.1 on, and any other version
        # only on a keep-alive token in Connection or Proxy-Connection; its strict table has no 1.x
        # above 1.1. So a request kept alive without either field is 1.1, and the call (it formats a
        # string, the costliest line of a plain hit's head) is needed only for the others.
        if (
            keep_alive
            and len(headers) == 1
            and "host" in headers
            and self._versions_strict
            and self._method != "CONNECT"
        ):
            # The common request: Host is its only watched field, so it is 1.1 (as above) and has no
            # body, no Upgrade and no Expect; none of the checks below could fail.
            version = "1.1"
            expects_body = False
        else:
            if (
                keep_alive
                and self._versions_strict
                and "connection" not in headers
                and "proxy-connection" not in headers
            ):
                version = "1.1"
            else:
                version = parser.get_http_version()
                if version != "1.1" and version != "1.0":
                    self._fail(505)
            if self._method == "CONNECT":
                self._fail(405)
            # llhttp flags an upgrade only for CONNECT or an Upgrade field; the C call is skipped
            # otherwise.
            if "upgrade" in headers and parser.should_upgrade():
                self._fail(501)
            te = headers.get("transfer-encoding")
            if te is not None:
                # RFC 9112 §6.1: HTTP/1.0 has no chunked framing, so a TE there means broken framing.
                if version == "1.0" or te.lower() != "chunked" or "content-length" in headers:
                    self._fail(400)
                expects_body = True
            else:
                cl = headers.get("content-length")
                if cl is None:
                    expects_body = False
                elif not (cl.isascii() and cl.isdigit()):
                    self._fail(400)
                else:
                    length = int(cl)
                    if length > self._max_body:
                        self._fail(413)
                    expects_body = length > 0
            if version == "1.1" and "host" not in headers:
                self._fail(400)
        # Latin-1 maps byte for byte, so the test on the text is the test on the bytes (and cheaper).
        target = self._url.decode("latin-1")
        if "#" in target:
            self._fail(400)
        self._target = target
        self._version = version
        self._keep_alive = keep_alive
        self._pphase = _BODY
        self._t_bstart = 0.0
        self._fresh = True
        if expects_body and version == "1.1" and headers.get("expect", "").lower() == "100-continue":
            if self._busy or self._queue:
                self._queue.append(_CONTINUE)
            else:
                self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        blen = self._blen + len(body)
        if blen > self._max_body:
            self._fail(413)
        self._blen = blen
        if self._body is None:
            self._body = [body]
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._pphase = _IDLE
        parts = self._body
        if parts is None:
            body = b""
        else:
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._body = None
            self._blen = 0
        # Request.__init__, without the call: its fields are all known here, its dict is not built.
        req = _new_request(Request)
        req.method = self._method
        req.target = self._target
        req.body = body
        req.http_version = self._version
        req.keep_alive = self._keep_alive
        req.client_ip = self.client_ip
        req.host = self._seen.get("host", "")
        req.plain = self._plain
        req._fields = self._fields
        req._headers = None
        self._url = b""
        self._fields = []
        self._seen = {}
        self._plain = True
        self._hcount = self._hbytes = 0
        self._accept(req)

    # -- internals --------------------------------------------------------------------------------------

    def _accept(self, req: Request) -> None:
        """A complete request, from llhttp's callbacks or the C reader: to the handler (rule 1)."""
        self._stats.requests += 1
        if not req.keep_alive:
            self._stopped = True
        queue = self._queue
        if self._busy or queue or self._write_paused:
            if self._alog is not None:
                req.raw = self._achunk
                self._achunk = None
            queue.append(req)
            if len(queue) > _QUEUE_HIGH and not self._read_paused:
                self._read_paused = True
                self._transport.pause_reading()
            return
        # _dispatch, inlined: this is every request's path when nothing is in flight.
        if self._alog is not None:
            # The first request that ends in a read begun between requests began that read: the
            # access log copies those bytes rather than the request's values (decision 0016).
            req.raw = self._achunk
            self._achunk = None
            self._areq = req
        self._busy = True
        self._wrote = False
        try:
            result = self._handler(req, self)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if result is not None:
            if not isinstance(result, Pending):
                self.follow(result)
            elif self._alog is not None:
                self._answers_later()
        elif self._busy:
            self._handler_failed(None)

    def _partial_message(self, received: int) -> None:
        # httptools buffers a field until it is complete, and llhttp skips chunk extensions of any
        # length, so the callbacks bound neither a never-ending field nor an endless extension.
        # Every chunk after the one a phase began in belongs to that phase entirely; count those.
        if self._fresh:
            self._fresh = False
            self._raw = 0
        else:
            self._raw += received
        if self._pphase == _BODY:
            self._t_body = 0.0
            if self._raw > self._max_body_wire:
                self._reject(413)
        elif self._raw > self._max_head:
            self._reject(431)

    def _fail(self, status: int) -> NoReturn:
        self._status = status
        raise _Stop

    def _parse_failed(self, exc: Exception) -> None:
        status = self._status
        if not status:
            if self._stopped:
                return  # bytes after the last request (e.g. after Connection: close): ignored
            if isinstance(exc, HttpParserCallbackError) and not isinstance(exc.__context__, _Stop):
                _log.error("HTTP/1 parser callback failed", exc_info=exc.__context__)
            status = 400
        self._reject(status)

    def _reject(self, status: int) -> None:
        self._stats.rejected[status] += 1
        self._stopped = True
        self._pphase = _IDLE
        if self._busy or self._queue:
            self._queue.append(status)
        else:
            self._send_error(status)

    def _send_error(self, status: int) -> None:
        if not self.closed:
            self._transport.write(_ERRORS[status])
            self._shutdown()

    def _dispatch(self, req: Request) -> None:
        if self._alog is not None:
            self._areq = req
        self._busy = True
        self._wrote = False
        try:
            result = self._handler(req, self)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if result is not None:
            if not isinstance(result, Pending):
                self.follow(result)
            elif self._alog is not None:
                self._answers_later()
        elif self._busy:
            self._handler_failed(None)

    async def _run(self, awaitable: Awaitable[None], seq: int) -> None:
        try:
            await awaitable
        except Exception as exc:
            if self._busy and self._seq == seq:
                self._handler_failed(exc)
            else:
                _log.error("HTTP/1 handler failed after finishing its response", exc_info=exc)
            return
        if self._busy and self._seq == seq:
            self._handler_failed(None)

    def _handler_failed(self, exc: Exception | None) -> None:
        if exc is None:
            _log.error("HTTP/1 handler returned without calling finish() or abort()")
        else:
            _log.error("HTTP/1 handler failed", exc_info=exc)
        self._stats.handler_errors += 1
        self._busy = False
        if self._wrote:
            self.abort()
        else:
            self._queue.clear()
            self._send_error(500)

    def _run_queue(self) -> None:
        queue = self._queue
        while queue and not self._busy and not self._write_paused and not self.closed:
            item = queue.popleft()
            if isinstance(item, Request):
                self._dispatch(item)
            elif isinstance(item, bytes):
                self._transport.write(item)
            else:
                self._send_error(item)
                return
        if self._read_paused and not queue and not self.closed:
            self._read_paused = False
            self._transport.resume_reading()
        if not queue and not self._busy and self._stopped and not self.closed:
            self._shutdown()

    def _shutdown(self) -> None:
        self._stopped = True
        self._queue.clear()
        if self.closed:
            return
        self.closed = True
        self._linger = _monotonic()
        transport = self._transport
        if self._eof or not transport.can_write_eof():
            transport.close()
        else:
            transport.write_eof()
            if self._read_paused:
                self._read_paused = False
                transport.resume_reading()
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _sweep(self, now: float) -> None:
        """Enforce the deadline of the current phase (called by the server's sweeper)."""
        limits = self._limits
        if self._write_paused:
            if now - self._t_wpause > limits.idle_timeout:
                self._stats.timeouts += 1
                self.abort()
        elif self._linger:
            if now - self._linger > _LINGER:
                self._transport.abort()
        elif self._read_paused:
            return  # the queue is full: progress is up to the handler, not the client
        # The hot path only zeroes a phase's timestamp; the first sweep that sees it stamps it, so a
        # deadline is met up to one sweep interval late and no request reads the clock.
        elif self._pphase == _HEAD:
            if not self._t_head:
                self._t_head = now
            elif now - self._t_head > limits.header_timeout:
                self._expire()
        elif self._pphase == _BODY:
            if not self._t_body:
                self._t_body = now
            elif now - self._t_body > limits.body_timeout:
                self._expire()
                return
            # Bytes now and then keep _t_body fresh; the whole body still has one deadline.
            if not self._t_bstart:
                self._t_bstart = now
            elif now - self._t_bstart > limits.body_deadline:
                self._expire()
        elif not self._busy and not self._queue:
            if not self._t_idle:
                self._t_idle = now
            elif now - self._t_idle > (limits.idle_timeout if self._method else limits.header_timeout):
                self._stats.idle_closed += 1
                self.abort()

    def _expire(self) -> None:
        self._stats.timeouts += 1
        if self._busy or self._queue:
            self.abort()
        else:
            self._reject(408)


class HttpServer:
    """A listening data-plane server and its timeout sweeper."""

    __slots__ = (
        "_server",
        "_sweeper",
        "connections",
        "handler",
        "limits",
        "loop",
        "read_head",
        "stats",
        "versions_strict",
    )

    _server: asyncio.Server
    _sweeper: asyncio.Task[None]

    def __init__(self, handler: Handler, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.limits = limits
        self.loop = loop
        self.stats = Http1Stats()
        self.connections: set[Connection] = set()
        self.versions_strict = _versions_strict()
        """Checked once per server: see :func:`_versions_strict`."""
        self.read_head: Callable[[bytes, int, str], tuple[int, Request] | None] = HeadReader(
            Request, limits.max_request_line, limits.max_header_count, limits.max_header_bytes
        ).read
        """The C reader of a whole ordinary head (decision 0031): what ``Connection._head`` calls."""

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after binding port 0)."""
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def drain(self, grace: float) -> None:
        """Stop listening and let every connection finish the responses it owes, for at most
        ``grace`` seconds; then :meth:`close` resets whatever is left."""
        self._server.close()
        for conn in tuple(self.connections):
            conn.close_when_idle()
        deadline = self.loop.time() + grace
        # A closing connection stays in the set while it lingers for the client's FIN: resetting it
        # earlier could discard a response the client has not read yet.
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self.close()

    async def close(self) -> None:
        """Stop listening, reset every connection, and cancel handler tasks still running."""
        self._server.close()
        self._sweeper.cancel()
        tasks = []
        for conn in tuple(self.connections):
            conn.abort()
            if conn._task is not None and not conn._task.done():
                conn._task.cancel()
                tasks.append(conn._task)
        await asyncio.gather(self._sweeper, *tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _sweep_forever(self) -> None:
        limits = self.limits
        shortest = min(limits.header_timeout, limits.body_timeout, limits.body_deadline, limits.idle_timeout)
        interval = max(0.05, min(0.5, shortest / 4))
        while True:
            await asyncio.sleep(interval)
            now = _monotonic()
            for conn in tuple(self.connections):
                conn._sweep(now)


async def start_server(
    handler: Handler,
    limits: Limits,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
    connection: Callable[[HttpServer], Connection] = Connection,
) -> HttpServer:
    """Listen on ``host:port`` (or on ``sock``) and serve each request with ``handler``;
    ``connection`` builds each client connection (the access log passes a subclass)."""
    loop = asyncio.get_running_loop()
    server = HttpServer(handler, limits, loop)
    factory = functools.partial(connection, server)
    if sock is not None:
        server._server = await loop.create_server(factory, sock=sock, backlog=1024)
    else:
        server._server = await loop.create_server(factory, host, port, backlog=1024, reuse_address=True)
    server._sweeper = loop.create_task(server._sweep_forever())
    return server
