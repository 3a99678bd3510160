"""One HTTP/1.1 connection to an origin: an asyncio Protocol on httptools' response parser.

Why by hand and not a client library: see docs/decisions/0008-origin-client.md.

Theory of operation
-------------------
A connection carries one exchange at a time (requests are never pipelined). ``send()`` writes a
request and returns its :class:`OriginResponse`; the response's ``head`` future resolves when the
final (non-1xx) head has arrived, and body bytes collect in the response until its reader takes
them. The pool (``origin_pool.py``) gets the connection back through ``on_reusable`` the moment the
final response is complete, even if its reader has not taken the body yet: the bytes already belong
to the response.

Rules:

1. Framing is strict. llhttp already refuses Content-Length together with Transfer-Encoding, a
   repeated or non-numeric Content-Length, bare LF and obsolete line folding; on top of that a
   Transfer-Encoding other than exactly ``chunked``, a ``101``, a status code outside 100..599, and
   a head over ``MAX_HEAD`` bytes or ``MAX_FIELDS`` fields are errors. A violation fails the
   exchange (:class:`OriginInvalid`) and closes the connection: it is never taken for a complete
   response.
2. A body ends with its Content-Length, with the last chunk, or, when it has neither, with the
   origin's close. A close before the declared end fails the exchange; the bytes read so far are
   never presented as the whole body.
3. Interim responses (1xx other than 101) go to the exchange's ``on_interim`` callback; their
   fields are dropped before the next message, so none of them reaches the final response.
4. The connection is reusable after a final response only if the origin keeps it alive
   (HTTP/1.1 without ``Connection: close``), the request was not HEAD (httptools cannot be told
   that a HEAD response has no body, so such a connection is closed), and no byte arrived after
   the response: anything after it (a second response, excess body bytes) means the framing
   cannot be trusted, and the connection is closed.
5. Back-pressure: when more than ``HIGH_WATER`` body bytes wait for the reader, reading from the
   origin pauses; it resumes when the reader has taken them all.
6. No timer per request, and the request path does not read the clock: every connection with a
   request outstanding is in :class:`Deadlines`, whose periodic sweep stamps each phase the
   first time it sees it and expires phases that lasted too long (as ``http1.py`` does for
   clients), so a deadline is met up to two sweep intervals late. Until the final head is
   complete the first-byte deadline applies (a head that trickles in counts as not answering);
   then the read timeout applies between reads, except while reading is paused for a slow reader.
7. ``received_any`` says whether any byte of the response arrived: the pool retries an idempotent
   request that failed on a reused connection only when it is False.
8. A response is read either through its ``head`` future and ``chunks()``, or, when ``send()`` is
   given a :class:`ResponseListener`, through the listener's methods, called from the protocol's
   own callbacks: no future, no task and no loop iteration between the bytes and the caller. Such a
   caller takes every body byte as it comes and applies back-pressure itself (``pause()`` /
   ``resume()``), so rule 5 does not apply to it. After each read that leaves the response
   unfinished it is told so (``origin_read_end``): a caller that hoped for the whole response in
   one read (a small object's usual case) knows then that it has to wait.
9. A final head that arrives whole at the start of the exchange's first read, in a shape narrower
   than llhttp's (HTTP/1.1, a status of 200..599 other than 204 and 304, token names, plain value
   bytes, one Content-Length, Connection only as "close" or "keep-alive", no Transfer-Encoding,
   Upgrade or Proxy-Connection; not for HEAD), is read in C without llhttp (``_originhead.response``:
   decision 0024's addendum of 2026-12-01), and its body counted against its Content-Length in
   Python. llhttp would accept every such head alike, so nothing llhttp refuses gets through;
   any other read goes to llhttp as before, and bytes after such a body go to llhttp too. The
   parser is made the first time a read goes to llhttp.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol, cast

from httptools import HttpParserError, HttpResponseParser

from edgecache.edge._originhead import fields as head_fields
from edgecache.edge._originhead import response as read_response
from edgecache.edge._originhead import scan as scan_head

if TYPE_CHECKING:
    from edgecache.edge._originhead import Fill

MAX_HEAD = 64 * 1024
"""Bytes of field names and values in a response's heads (interim responses included)."""
MAX_FIELDS = 256
HEAD_SLICE = 4096
"""Bytes of a head parsed between two looks at its field count (``_feed_head``)."""
HIGH_WATER = 256 * 1024
_BLANK = re.compile(rb"[\r\n]*")
"""What llhttp skips before a status line (before the first head, and after an interim one)."""
_CRLF = b"\r\n"

Interim = Callable[[int, list[tuple[str, str]]], None]
"""``on_interim(status, fields)``: called for each 1xx response before the final one."""

_log = logging.getLogger(__name__)


class OriginError(Exception):
    """The origin could not give a response."""


class OriginUnreachable(OriginError):
    """Connection refused, reset or closed before the response was complete: answered with 502."""


class OriginInvalid(OriginUnreachable):
    """The origin answered with something that is not an HTTP response we may relay: 502."""


class OriginTimeout(OriginError):
    """The origin did not connect, answer or keep sending in time: answered with 504."""


class ResponseListener(Protocol):
    """Receives one response's events as they are parsed (rule 8). Exactly one of ``origin_done``
    and ``origin_failed`` ends the exchange; ``origin_head`` and ``origin_body`` come before it."""

    def origin_head(self, resp: OriginResponse) -> None:
        """The final head is in: ``resp.status``, ``headers`` and ``content_length`` are set."""

    def origin_body(self, resp: OriginResponse, data: bytes) -> None:
        """Body bytes, in order (the caller keeps them: they are not buffered in ``resp``)."""

    def origin_done(self, resp: OriginResponse) -> None:
        """The whole body has arrived."""

    def origin_failed(self, resp: OriginResponse, error: OriginError) -> None:
        """The exchange failed (before or after the head); the connection is closed."""

    def origin_read_end(self, resp: OriginResponse) -> None:
        """A read's bytes are parsed and the response has not ended: the rest comes in later reads."""


class Deadlines:
    """The timeouts of every connection with a request outstanding, checked by one periodic sweep."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.now = loop.time()
        """The loop's clock at the last sweep (or at the first request after a quiet spell)."""
        self.active: set[OriginConnection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, conn: OriginConnection) -> None:
        """Start checking ``conn``'s deadlines (until its exchange ends)."""
        self.active.add(conn)
        if self._handle is None:
            self.now = self.loop.time()
            self._handle = self.loop.call_at(self.now + self.interval, self._sweep)

    def stop(self) -> None:
        """Stop sweeping (the client is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        now = self.now = self.loop.time()
        for conn in list(self.active):
            conn.check_deadline(now)
        self._handle = self.loop.call_at(now + self.interval, self._sweep) if self.active else None


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the reason is already recorded."""


class OriginResponse:
    """A response from the origin: ``status``, ``headers`` and ``content_length`` once ``head`` is done."""

    # What a response keeps at its first value until its head is in (or for good), as class
    # attributes and not in ``__slots__``: one is made on every fetch, and an instance pays only for
    # the attributes it sets (eleven stores fewer per fetch).
    status = 0
    _fields: list[tuple[str, str]] | None = None
    """The final head's fields, once read (None: not read yet, or no head)."""
    _raw = b""
    """The final head's bytes (with any blank lines before it), until ``headers`` is read."""
    fill: Fill | None = None
    """What a fill reads of the final head, read in C (``_originhead.scan``); None when the
    head is one the Python path takes (the fill reads ``headers`` then)."""
    content_length: int | None = None
    received_any = False
    _buffered = 0
    _complete = False
    _error: OriginError | None = None
    _waiter: asyncio.Future[None] | None = None

    def __init__(
        self,
        conn: OriginConnection,
        method: str,
        on_interim: Interim | None,
        head: asyncio.Future[None] | None,
        listener: ResponseListener | None,
        reused: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.on_interim = on_interim
        self.head = head
        """Resolves with the final head; None when a listener receives the response instead."""
        self.listener = listener
        self.reused = reused
        """Sent on a connection that had carried an earlier exchange (see the client's retry rule)."""
        if listener is None:
            # Only a response read through ``chunks()`` keeps its body (a listener takes it).
            self._chunks: list[bytes] = []

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The final head's fields, names as the origin spelt them, hop-by-hop fields included (the
        caller strips them). Made from the raw head on first use: a fill reads ``fill`` instead."""
        fields = self._fields
        if fields is None:
            fields = self._fields = head_fields(self._raw, 0)[1] if self._raw else []
            self._raw = b""
        return fields

    @property
    def complete(self) -> bool:
        """The whole body has arrived (it may still be waiting for the reader)."""
        return self._complete

    @property
    def ended(self) -> bool:
        """The exchange is over: complete, or failed."""
        return self._complete or self._error is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives; raises :class:`OriginError` if the origin fails mid-body.

        Leaving the loop early (break, cancellation) closes the connection unless the body is complete.
        """
        try:
            while True:
                chunks = self._chunks
                if chunks:
                    self._chunks = []
                    self._buffered = 0
                    for chunk in chunks:
                        yield chunk
                    continue
                if self._error is not None:
                    raise self._error
                if self._complete:
                    return
                self._conn.resume()
                waiter = self._waiter = self._conn.loop.create_future()
                await waiter
        finally:
            self.close()

    def close(self) -> None:
        """Give up on the rest of the body: the connection is closed unless the body is complete."""
        if not self._complete and self._error is None:
            self._fail(OriginUnreachable("response abandoned before its end"))
            self._conn.close()

    def pause(self) -> None:
        """Stop reading from the origin until :meth:`resume` (a listener's back-pressure)."""
        conn = self._conn
        if not conn._paused and not conn.closed and conn.transport is not None and not self._complete:
            conn._paused = True
            conn.transport.pause_reading()

    def resume(self) -> None:
        """Read from the origin again after :meth:`pause`."""
        self._conn.resume()

    # -- called by the connection ------------------------------------------------------------------

    def _body(self, data: bytes) -> None:
        listener = self.listener
        if listener is not None:
            listener.origin_body(self, data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()

    def _done(self) -> None:
        self._complete = True
        listener = self.listener
        if listener is not None:
            listener.origin_done(self)
            return
        self._wake()

    def _fail(self, error: OriginError) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        listener = self.listener
        if listener is not None:
            listener.origin_failed(self, error)
            return
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
            # Retrieved here: a caller that stopped waiting must not log "exception never retrieved".
            head.exception()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class OriginConnection(asyncio.Protocol):
    """One connection to an origin; see the module's rules."""

    __slots__ = (
        "_counted",
        "_field_bytes",
        "_final",
        "_head_bytes",
        "_head_start",
        "_keep_alive",
        "_left",
        "_lines",
        "_parser",
        "_paused",
        "_raw",
        "_reusable_after",
        "_stamp",
        "_until_close",
        "closed",
        "deadlines",
        "exchange",
        "first_byte_timeout",
        "idle_since",
        "loop",
        "on_closed",
        "on_reusable",
        "read_timeout",
        "transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        deadlines: Deadlines,
        first_byte_timeout: float,
        read_timeout: float,
        on_reusable: Callable[[OriginConnection], None],
        on_closed: Callable[[OriginConnection], None],
    ) -> None:
        self.loop = loop
        self.deadlines = deadlines
        self.first_byte_timeout = first_byte_timeout
        self.read_timeout = read_timeout
        self.on_reusable = on_reusable
        self.on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.exchange: OriginResponse | None = None
        self.idle_since = 0.0
        """When the last exchange ended, by ``Deadlines.now`` (the pool's idle timeout counts from it)."""
        self._parser: HttpResponseParser | None = None
        """llhttp, made by ``_llhttp`` the first time a read needs it: a connection whose responses
        are all read without it (rule 9) never makes one (~6.7k instructions, most of them
        httptools looking up the callbacks this protocol does not define)."""
        self._raw: bytes | bytearray = b""
        """The exchange's bytes until its final head is complete (heads are read from them in C)."""
        self._head_start = 0
        """Where in ``_raw`` the head being parsed begins (after the exchange's interim heads, and
        after the blank lines before it once ``_feed_head`` has seen them)."""
        self._counted = 0
        self._lines = 0
        """Line ends in ``_raw[_head_start:_counted]``: the incomplete head's lines so far."""
        self._final = False
        """The final (non-1xx) head of the current exchange is complete."""
        self._head_bytes = 0
        """Raw bytes read before the final head was complete: bounds what httptools buffers."""
        self._field_bytes = 0
        """Bytes of field names and values in the exchange's heads (interim ones included)."""
        self._keep_alive = False
        self._left = -1
        """Body bytes still to come when the exchange's head was read without llhttp (rule 9); -1
        when llhttp frames the body."""
        self._until_close = False
        self._paused = False
        self._stamp = 0.0
        """When the current phase was first seen by the sweep; 0.0 when a phase has just begun."""
        self._reusable_after = False

    # -- the pool's interface ------------------------------------------------------------------------

    def send(
        self,
        request: bytes,
        method: str,
        on_interim: Interim | None,
        *,
        listener: ResponseListener | None = None,
        reused: bool = False,
    ) -> OriginResponse:
        """Write one request; the response's ``head`` resolves with the final head, or, with a
        ``listener``, the listener receives the response (rule 8; it may be told of a failure
        before this returns)."""
        head = self.loop.create_future() if listener is None else None
        resp = OriginResponse(self, method, on_interim, head, listener, reused)
        if self.closed or self.transport is None or self.transport.is_closing():
            resp._fail(OriginUnreachable("origin connection closed before the request was sent"))
            return resp
        self.exchange = resp
        self._raw = b""
        self._head_start = self._counted = self._lines = self._head_bytes = self._field_bytes = 0
        self._final = self._until_close = self._reusable_after = False
        self._left = -1
        self._stamp = 0.0
        deadlines = self.deadlines
        if deadlines._handle is None:
            deadlines.watch(self)
        else:
            # Deadlines.watch when its sweep is already armed (every request under load): a set add.
            deadlines.active.add(self)
        self.transport.write(request)
        return resp

    def resume(self) -> None:
        """The reader took every buffered byte: read from the origin again."""
        if self._paused and not self.closed and self.transport is not None:
            self._paused = False
            self._stamp = 0.0
            self.transport.resume_reading()

    def close(self) -> None:
        """Close at once (reset): the connection is not reused."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._lost(OriginUnreachable("origin connection closed"))

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        resp = self.exchange
        if resp is None:
            # Bytes while no request is outstanding: the previous response's framing was wrong.
            self.close()
            return
        resp.received_any = True
        whole = None
        if self._final:
            self._stamp = 0.0
        # Only while no byte of this exchange's head is kept: a read that starts with a status line
        # after part of a head (say one with Transfer-Encoding) continues that head; read alone it
        # would frame a body the origin did not send (tests/test_origin_fast.py).
        elif not self._raw and resp.method != "HEAD" and (whole := read_response(data)) is not None:
            pass  # a whole final head in the exchange's first read (rule 9): nothing kept
        else:
            raw = self._raw
            if not raw:
                self._raw = data
            else:
                # A head over several reads (rare): one buffer, grown in place.
                if not isinstance(raw, bytearray):
                    raw = self._raw = bytearray(raw)
                raw += data
            self._head_bytes += len(data)
            if self._head_bytes > 2 * MAX_HEAD + len(data):
                self._protocol_error(f"response head over {MAX_HEAD} bytes")
                return
        try:
            if whole is not None:
                # A whole final head read without llhttp (rule 9; here, its one place, a frame
                # less per miss): what on_headers_complete does for it, then its body bytes.
                end, status, keep_alive, length, fill = whole
                self._final = True
                self._keep_alive = keep_alive
                self._stamp = 0.0
                resp.status = status
                resp._raw = data[:end]
                resp.fill = fill
                resp.content_length = length
                head = resp.head
                if head is not None and not head.done():
                    head.set_result(None)
                listener = resp.listener
                if listener is not None:
                    listener.origin_head(resp)
                if not self.closed:  # unless the listener gave up on the response
                    self._left = length
                    self._counted_body(resp, data, end)
            elif self._left >= 0:
                self._counted_body(resp, data, 0)
            elif self._final:
                parser = self._parser
                assert parser is not None  # llhttp read this head, so it frames the body
                parser.feed_data(data)
            elif not self._feed_head(data):
                return
        except HttpParserError as exc:
            # A callback's _Stop arrives here too, wrapped by httptools (HttpParserCallbackError).
            cause = exc.__context__
            if cause is None or isinstance(cause, _Stop):
                self._failed_read(resp, str(exc) or type(exc).__name__)
            else:
                self._callback_failed(resp, cause)
            return
        except Exception as exc:
            # A listener failed in a read that llhttp did not parse (rule 9).
            self._callback_failed(resp, exc)
            return
        listener = resp.listener
        # resp.ended, without the property's call.
        if listener is not None and not resp._complete and resp._error is None:
            listener.origin_read_end(resp)
        if self._reusable_after:
            self._reusable_after = False
            if self._paused:
                # A listener paused reading in the read that completed the response.
                self._paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            self.idle_since = self.deadlines.now
            self.on_reusable(self)
        elif self.exchange is resp and resp._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def _callback_failed(self, resp: OriginResponse, exc: BaseException) -> None:
        """Our bug (a callback or a listener failed), not the origin's: say so, and fail the
        exchange all the same. The message names the exception, whether llhttp parsed the read or
        not (rule 9): httptools' own ("User callback error", "`on_body` callback error") names
        neither the exception nor the path, and both paths must tell the same."""
        _log.error("origin response callback failed", exc_info=exc)
        self._failed_read(resp, f"callback failed: {exc!r}")

    def _failed_read(self, resp: OriginResponse, why: str) -> None:
        if self.closed:
            return
        if resp.complete:
            # The response ended inside this read and bytes followed it: framing is not trusted.
            self.close()
            return
        self._protocol_error(why)

    def _counted_body(self, resp: OriginResponse, data: bytes, start: int) -> None:
        """Body bytes of a response framed by its Content-Length without llhttp (rule 9), from
        ``data[start:]``, as llhttp's callbacks give them: one piece per read, then the end. Bytes
        after the body go to llhttp, which reads them as it would after any response."""
        left = self._left
        size = len(data) - start
        if size > 0 and left > 0:
            piece = data if start == 0 and size <= left else data[start : start + left]
            listener = resp.listener
            if listener is not None:
                listener.origin_body(resp, piece)
            else:
                resp._body(piece)
            if self.closed:
                return  # a listener gave up on the response
            left = self._left = left - len(piece)
            start += len(piece)
        if left == 0:
            # ``on_message_complete``, inline: this exchange (``resp``) has its final head.
            self._end_exchange(resp)
            if self._keep_alive:
                self._reusable_after = True
            else:
                self.close()
            if start < len(data) and not self.closed:
                self._llhttp().feed_data(memoryview(data)[start:])

    def _llhttp(self) -> HttpResponseParser:
        """The connection's parser, made now if no read has needed it yet. One made later starts
        where one made with the connection would be: every response before it was read whole
        without llhttp, and llhttp is in its start state after a whole response."""
        parser = self._parser
        if parser is None:
            parser = self._parser = HttpResponseParser(self)
        return parser

    def _feed_head(self, data: bytes) -> bool:
        """Parse a read that begins inside a head, ``HEAD_SLICE`` bytes at a time until the final
        head is complete, the rest at once; returns False when the head has too many fields (the
        exchange has failed). The incomplete head's lines are counted between slices (each byte
        once), so an origin sending endless tiny fields fails within a slice of ``MAX_FIELDS``
        lines, not at the raw limit."""
        parser = self._llhttp()
        view = memoryview(data)
        raw = self._raw
        while True:
            fed = len(raw) - len(view)
            if fed > self._counted and not self._final:
                counted = self._counted
                if counted == self._head_start and raw[counted] in _CRLF:
                    # Blank lines before a status line are not the head's (llhttp skips them). The
                    # byte is looked at first: a head that starts with its status line (every one,
                    # nearly) needs no match.
                    skipped = _BLANK.match(raw, counted, fed)
                    assert skipped is not None  # it matches everywhere, if only the empty string
                    counted = self._head_start = skipped.end()
                self._lines += raw.count(b"\n", counted, fed)
                self._counted = fed
                if self._lines > MAX_FIELDS + 1:  # the status line and the fields
                    self._protocol_error(f"response head over {MAX_FIELDS} fields")
                    return False
            if self._final or len(view) <= HEAD_SLICE:
                parser.feed_data(view)
                return True
            parser.feed_data(view[:HEAD_SLICE])
            view = view[HEAD_SLICE:]

    def eof_received(self) -> bool | None:
        resp = self.exchange
        if resp is not None and self._final and self._until_close:
            # RFC 9112 §6.3: with neither Content-Length nor chunked, the close ends the body.
            self._end_exchange(resp)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._lost(OriginUnreachable("origin closed the connection"), clean=True)
        else:
            self._lost(OriginUnreachable(f"origin connection lost: {exc}"))

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.exchange is None:
            raise _Stop

    # No on_header: a head's fields are read from its raw bytes once llhttp has accepted them
    # (decision 0024), and a chunked body's trailer fields are never read (rule 1).

    def on_headers_complete(self) -> None:
        resp = self.exchange
        assert resp is not None
        parser = self._parser
        assert parser is not None  # it is calling
        status = parser.get_status_code()
        raw = self._raw
        start = self._head_start
        fields: list[tuple[str, str]] | None = None
        try:
            scan = scan_head(raw, start) if status >= 200 else None
            if scan is None:
                end, fields = head_fields(raw, start)
        except ValueError as exc:
            # The C reader and llhttp disagree on where the head is: the origin's bytes are not
            # trusted (no traceback: an origin could send them on every request).
            self._protocol_error(f"unreadable head ({exc})")
            raise _Stop from None
        if scan is None:
            assert fields is not None
            count = len(fields)
            field_bytes = sum(len(name) + len(value) for name, value in fields)
            fill = None
        else:
            end, count, field_bytes, length, chunked, fill = scan
        if status < 200 or self._head_bytes > MAX_HEAD:
            # Counted exactly for an interim head, and for a final one when the exchange's reads
            # so far (heads, and maybe body bytes) exceed the limit; otherwise the final head and
            # the interim ones before it are within it together.
            self._field_bytes += field_bytes
        if count > MAX_FIELDS or self._field_bytes > MAX_HEAD:
            self._protocol_error(f"response head over {MAX_FIELDS} fields or {MAX_HEAD} bytes")
            raise _Stop
        if not 100 <= status <= 599:
            # RFC 9110 §15: outside 100..599 is not a status code; llhttp reads any three digits.
            self._protocol_error(f"invalid status code {status}")
            raise _Stop
        if status < 200:
            if status == 101:
                self._protocol_error("origin switched protocols (101) without being asked to")
                raise _Stop
            self._head_start = self._counted = end
            self._lines = 0
            if resp.on_interim is not None:
                assert fields is not None
                resp.on_interim(status, fields)
            return
        if fields is not None:
            # The heads scan_head leaves to Python: the framing rules, as they read the fields.
            length = None
            chunked = False
            for name, value in fields:
                size = len(name)  # compared first: most names are neither, and lower() costs more
                if size == 17 and name.lower() == "transfer-encoding":
                    if chunked or value.strip().lower() != "chunked":
                        self._protocol_error(f"unsupported Transfer-Encoding: {value!r}")
                        raise _Stop
                    chunked = True
                elif size == 14 and name.lower() == "content-length":
                    length = int(value)  # llhttp has checked it: digits only, one field
        else:
            # Only the head, for ``headers`` (rarely read): not the interim heads or body bytes
            # that arrived in the same reads.
            # A head in one read is sliced (no copy when the read held nothing else); one over
            # several reads is copied once out of its buffer.
            resp._raw = raw[start:end] if type(raw) is bytes else bytes(memoryview(raw)[start:end])
        self._raw = b""
        self._final = True
        self._keep_alive = parser.should_keep_alive()
        self._stamp = 0.0
        resp.status = status
        resp._fields = fields
        resp.fill = fill
        resp.content_length = length
        bodyless = resp.method == "HEAD" or status == 204 or status == 304
        self._until_close = length is None and not chunked and not bodyless
        head = resp.head
        if head is not None and not head.done():
            head.set_result(None)
        if resp.listener is not None:
            resp.listener.origin_head(resp)
            if self.closed:
                raise _Stop  # the listener gave up on the response
        if resp.method == "HEAD":
            self._keep_alive = False
            self._end_exchange(resp)
            self.close()
            raise _Stop

    def on_body(self, body: bytes) -> None:
        resp = self.exchange
        assert resp is not None
        listener = resp.listener
        if listener is not None:
            # OriginResponse._body's first step, here: a frame less for every body a listener takes.
            listener.origin_body(resp, body)
        else:
            resp._body(body)
        if self.closed:
            raise _Stop  # a listener gave up on the response

    def on_message_complete(self) -> None:
        resp = self.exchange
        if resp is None or not self._final:
            return  # an interim response ended; the final one follows
        self._end_exchange(resp)
        if self._keep_alive:
            self._reusable_after = True
        else:
            self.close()

    # -- internals -----------------------------------------------------------------------------------

    def _end_exchange(self, resp: OriginResponse) -> None:
        self.exchange = None
        self.deadlines.active.discard(self)
        # OriginResponse._done, inline: every exchange ends here.
        resp._complete = True
        listener = resp.listener
        if listener is not None:
            listener.origin_done(resp)
        else:
            resp._wake()

    def _protocol_error(self, why: str) -> None:
        resp = self.exchange
        if resp is not None:
            resp._fail(OriginInvalid(f"origin sent a malformed response: {why}"))
        self.close()

    def _lost(self, error: OriginError, *, clean: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self._reusable_after = False
        self.deadlines.active.discard(self)
        resp = self.exchange
        self.exchange = None
        if resp is not None:
            if self._final and self._until_close and clean:
                resp._done()
            else:
                if self._final:
                    error = OriginUnreachable(f"{error} before the end of the body")
                resp._fail(error)
        self.on_closed(self)

    # -- the sweep's interface ---------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by :class:`Deadlines` every interval while a request is outstanding."""
        resp = self.exchange
        if resp is None:
            return
        if self._stamp == 0.0 or self._paused:
            # A phase just began, or reading waits for our reader rather than for the origin.
            self._stamp = now
            return
        if not self._final:
            if now - self._stamp > self.first_byte_timeout:
                limit = self.first_byte_timeout
                resp._fail(OriginTimeout(f"origin sent no response head within {limit:g} s"))
                self.close()
        elif now - self._stamp > self.read_timeout:
            resp._fail(OriginTimeout(f"origin sent nothing for {self.read_timeout:g} s mid-body"))
            self.close()
