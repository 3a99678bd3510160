"""The control listener: Cloudflare and EdgeOne purges answered on httptools, every other request
by aiohttp.

Why (decision 0027 and its addendum): with one process a purge's HTTP handling shares the GIL with
the hits, and aiohttp's own share of a purge (its parser, request and response objects,
middlewares, routing) was the largest item of a paced purge left on the event loop.

Theory of operation: every accepted connection starts with :class:`PurgeFront`, which buffers what
arrives and looks at one request at a time. A request it answers itself is exactly
``POST /client/v4/zones/<32 hex>/purge_cache`` (or ``invalidate_cache``, with or without the
``/client/v4`` prefix), or ``POST /`` with ``X-TC-Action: CreatePurgeTask`` (EdgeOne's), in
HTTP/1.1, with an ASCII head that httptools parses without complaint, at most one ``Content-Length``
of at most 64 KiB, a ``Host``, no singleton field of aiohttp's twice, at most 128 fields, and none
of ``Transfer-Encoding``, ``Expect``, ``Upgrade``, ``Content-Encoding``, ``Sec-WebSocket-Key1`` or a
``Connection`` other than ``keep-alive``. Its body is read whole before the caller is checked, hence
the small limit (a purge's body is a few KB; a longer one goes to aiohttp, which checks a v4 caller
before it reads the body; an EdgeOne signature covers the body, so both sides read it first), then
:func:`edgecache.api.cloudflare.purge.accept` (or :func:`edgecache.api.edgeone.dispatch.answer`)
decides it, the same function the aiohttp handler calls, and the answer is written with the headers
aiohttp writes. Requests are answered one at a time, in order: bytes of pipelined requests wait in
the buffer until the answer before them is written, and reading pauses while over 64 KiB of them
wait.

Anything else (another route, another method, another EdgeOne action, a head that is odd in any way,
a body over 64 KiB, chunked framing, ``Expect: 100-continue``, a client's EOF) hands the connection
over from the first byte of that request: aiohttp's own protocol takes the transport
(``transport.set_protocol``) and is fed the bytes buffered so far, and answers them and the rest of
the connection as it always has. So every answer that is not an accepted or refused purge is
aiohttp's own, and an accepted or refused one has the bytes aiohttp's handler would have sent
(``Date``, job and request ids aside). What a client can still tell
(``tests/test_control_listener.py``): a valid purge followed, in the same read, by bytes that are no
request is answered here and the rest by aiohttp (400), where aiohttp alone answers 400 in place of
both; and a purge whose client then half-closes (shuts down its sending side) is answered here,
where aiohttp accepts the purge and never answers. Answering is kept: the client may still read.

Connections idle on this side close after aiohttp's keep-alive time; at shutdown, idle ones close
at once and busy ones right after their answer (or, as aiohttp's handlers, when the runner's
shutdown timeout passes without one: the purge is cancelled and its connection closed).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from multidict import CIMultiDict

from edgecache.api.cloudflare.envelope import CfError, id_payload, internal_error
from edgecache.api.cloudflare.purge import MODES, accept
from edgecache.api.cloudflare.routes import PREFIXES
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.edgeone.actions import PURGE_ACTION
from edgecache.api.edgeone.dispatch import answer as edgeone_answer
from edgecache.purge.selectors import Mode

log = logging.getLogger(__name__)

_MODES = {name.encode(): mode for name, mode in MODES.items()}
_LINE = re.compile(
    rb"POST (/|(?:%s)/zones/([0-9a-f]{32})/(%s)) HTTP/1\.1\r\n"
    % (b"|".join(re.escape(p.encode()) for p in PREFIXES), b"|".join(map(re.escape, _MODES)))
)
"""A Cloudflare purge's request line (its path, zone id and mode), or EdgeOne's endpoint (``/``:
no zone id)."""
_START = b"POST /"
_MAX_HEAD = 8190
"""A head longer than this (aiohttp's limit on one line or field) goes to aiohttp, which judges it;
a purge's head is a few hundred bytes."""
_PLAIN = b"\t\n\r" + bytes(range(0x20, 0x7F))
"""A head's bytes that are not odd: any other (control bytes, non-ASCII bytes) and folded lines
make heads that aiohttp decides, not this side."""
_REFUSED = frozenset({"transfer-encoding", "expect", "upgrade", "content-encoding", "sec-websocket-key1"})
"""Fields whose framing or meaning aiohttp handles (``Content-Encoding``: it decompresses;
``Sec-WebSocket-Key1``, the old WebSocket draft's: its C parser answers 400)."""
_SINGLETONS = frozenset(
    {
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "transfer-encoding",
        "user-agent",
    }
)
"""Fields aiohttp's parser refuses to see twice (its ``SINGLETON_HEADERS``)."""
_FRAMING = _REFUSED | _SINGLETONS | {"connection"}
"""Every field whose value or count decides whether this side takes a request."""
_MAX_FIELDS = 128
"""aiohttp's limit on a head's fields (``RequestHandler``'s ``max_headers``)."""
_SERVER = SERVER_SOFTWARE.encode()
IDLE_TIMEOUT = 3630.0
"""aiohttp's keep-alive time (``RequestHandler``'s default), so an idle connection lasts as long on
either side."""
_MAX_BODY = 1 << 16
"""The longest body taken here, read before the caller is checked: a purge's is a few KB. A longer
one goes to aiohttp, so that a caller without credentials cannot make a connection hold up to the
app's body limit here."""
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
"""Each status's line, made once: ``HTTPStatus(status)`` is an enum's Python call an answer."""
_PAUSE_AT = 1 << 16
"""Buffered bytes of requests still to answer at which reading pauses until the answer is written."""


class _Check:
    """httptools' callbacks for a head that is only checked: none (its fields are split from it)."""

    __slots__ = ()


_CHECK = _Check()


def _fields(head: bytes) -> tuple[CIMultiDict[str], int] | None:
    """The head's fields and its body's length, or None for a head aiohttp must judge: odd bytes,
    one httptools refuses, or fields aiohttp refuses or treats otherwise (no ``Host`` in HTTP/1.1,
    a singleton field twice, too many fields, framing or a ``Connection`` this side does not take)."""
    # Deleting the plain bytes in C rather than a regular expression's search of the head, which
    # tried its two branches at every byte: ~60k instructions a purge (decision 0025's addendum).
    if head.translate(None, _PLAIN) or b"\r\n " in head or b"\r\n\t" in head:
        return None
    try:
        HttpRequestParser(_CHECK).feed_data(head)
    except (HttpParserError, HttpParserUpgrade):
        # HttpParserUpgrade (``Connection: upgrade``) is no HttpParserError: an upgrade is aiohttp's.
        return None
    # llhttp took the head, so each of its lines ends in CRLF and each field's is ``name:value``:
    # the fields are its lines after the first, split at the first colon (one decode of the head
    # rather than a Python callback per field). Both sides of a value are stripped as aiohttp
    # strips them, so either dialect's decision sees the values aiohttp would give it (EdgeOne's
    # keeps X-TC-Region as given). The framing is judged in the same pass over the fields.
    lines = head.decode("ascii").split("\r\n")
    if len(lines) - 3 > _MAX_FIELDS:
        return None
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    length = 0
    for line in lines[1:-2]:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        pairs.append((name, value))
        lowered = name.lower()
        if lowered not in _FRAMING:
            continue
        if lowered in _REFUSED:
            return None
        if lowered in _SINGLETONS:
            if lowered in seen:
                return None
            seen.add(lowered)
        if lowered == "content-length":
            if not value.isdigit():
                return None
            length = int(value)
        elif lowered == "connection" and value.lower() != "keep-alive":
            return None
    if "host" not in seen:
        return None
    return CIMultiDict(pairs), length


@dataclass(slots=True)
class _Parsed:
    """A purge's head taken on this side: where its body starts, how long it is, its fields, and
    what its request line says (``cloudflare``: the zone id and mode, None for EdgeOne's endpoint)."""

    head_end: int
    length: int
    fields: CIMultiDict[str]
    path: str
    cloudflare: tuple[str, Mode] | None


class _Date:
    """The ``Date`` field's value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = email.utils.formatdate(second, usegmt=True).encode()
        return self.value


class PurgeSite(web.TCPSite):
    """A TCP site of an :class:`aiohttp.web.AppRunner` whose connections start with
    :class:`PurgeFront`; ``max_body`` is the app's ``client_max_size``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, max_body: int) -> None:
        super().__init__(runner, host, port)
        self.app = runner.app
        self.context = runner.app[CONTEXT_KEY]
        self.max_body = max_body
        self.answered = 0
        """Purge requests (either dialect's) answered on this side, accepted or refused, for tests
        and benchmarks."""
        self.most_buffered = 0
        """The most bytes one connection has held on this side, for tests."""
        self.pauses = 0
        """Times a connection paused reading on this side, for tests."""
        self.fronts: set[PurgeFront] = set()
        self.date = _Date()
        self.stopping = False

    async def start(self) -> None:
        """Listen, as :class:`aiohttp.web.TCPSite` does, with :class:`PurgeFront` per connection."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: PurgeFront(self, server), self._host, self._port, backlog=self._backlog
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening; close this side's idle connections (busy ones close after their answer,
        or when the runner's shutdown timeout passes without one)."""
        self.stopping = True
        busy = []
        for front in list(self.fronts):
            if front.task is not None and not front.task.done():
                busy.append(front.task)
            else:
                front.close()
        await super().stop()
        if busy:
            # As aiohttp waits for its handlers at shutdown, for as long, then cancels them: an
            # accepted purge gets its answer, one still pending then has its connection closed.
            timeout = getattr(self._runner, "_shutdown_timeout", 60.0)
            _, pending = await asyncio.wait(busy, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                # Let them end before the node closes what they use.
                await asyncio.wait(pending)


class PurgeFront(asyncio.Protocol):
    """One connection of the control listener while it is on this side (see the module's text)."""

    __slots__ = (
        "aiohttp",
        "buf",
        "busy",
        "closed",
        "eof",
        "idle_handle",
        "last_seen",
        "parsed",
        "paused_reading",
        "paused_writing",
        "site",
        "task",
        "transport",
    )

    def __init__(self, site: PurgeSite, aiohttp: web.Server) -> None:
        self.site = site
        self.aiohttp = aiohttp
        self.transport: asyncio.Transport | None = None
        # One buffer per connection, consumed from the front: pipelined requests are not copied.
        self.buf = bytearray()
        self.busy = False
        self.eof = False
        self.closed = False
        self.paused_writing = False
        self.paused_reading = False
        self.last_seen = 0.0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.parsed: _Parsed | None = None
        """The head of the request at the buffer's front while its body is still arriving."""
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: a cast, not an isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.site.fronts.add(self)
        loop = asyncio.get_running_loop()
        self.last_seen = loop.time()
        self.idle_handle = loop.call_at(self.last_seen + IDLE_TIMEOUT, self._idle)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > self.site.most_buffered:
            self.site.most_buffered = len(self.buf)
        if not self.busy:
            self._next()
        if (
            (self.busy or self.paused_writing)
            and len(self.buf) > _PAUSE_AT
            and self.transport is not None
            and not self.paused_reading
        ):
            # Requests pile up behind an answer not yet written: read on once it is.
            self.paused_reading = True
            self.site.pauses += 1
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy:
            self._next()
        # Keep the transport open: aiohttp, once handed the connection, decides when it closes.
        return True

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        if not self.busy:
            self._next()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._detach()

    def _detach(self) -> None:
        """This side is done with the connection (closed, or handed to aiohttp)."""
        self.closed = True
        self.transport = None
        self.site.fronts.discard(self)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None

    def close(self) -> None:
        """Close the connection (nothing of a request is in flight on this side)."""
        if self.transport is not None:
            self.transport.close()

    def _idle(self) -> None:
        self.idle_handle = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        due = self.last_seen + IDLE_TIMEOUT
        if self.busy or self.buf.find(b"\r\n\r\n") >= 0:
            # A request whose head is whole is in progress, and aiohttp times out no request it has
            # begun; a partial head is idle, as aiohttp's keep-alive closes a connection waiting for
            # one.
            self.idle_handle = loop.call_at(loop.time() + IDLE_TIMEOUT, self._idle)
        elif loop.time() < due:
            # Answers since the timer was armed: one timer per connection, moved lazily.
            self.idle_handle = loop.call_at(due, self._idle)
        else:
            self.close()

    def _next(self) -> None:
        """Answer the next buffered request if it is a purge this side takes, hand the connection
        to aiohttp if it is anything else, or wait for more bytes."""
        if self.closed or self.paused_writing or self.transport is None:
            return
        if self.site.stopping:
            # The node is stopping: no new request is taken (aiohttp closes its connections too).
            self.close()
            return
        self._take()
        if (
            self.paused_reading
            and self.transport is not None
            and (not self.busy or len(self.buf) < _PAUSE_AT)
        ):
            # Read on once the requests waiting are under the mark, or a request needs more bytes.
            self.paused_reading = False
            self.transport.resume_reading()

    def _take(self) -> None:
        """Start answering the buffered request, hand over, or leave it to wait for more bytes."""
        buf = self.buf
        parsed = self.parsed
        if parsed is None:
            parsed = self._parse()
            if parsed is None:
                return
        end = parsed.head_end + parsed.length
        if len(buf) < end:
            # Clients send the body in a read of its own: its head is parsed once, not per read.
            self.parsed = parsed
            if self.eof:
                self._hand_over()
            return
        self.parsed = None
        body = bytes(buf[parsed.head_end : end])
        del buf[:end]
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._answer(parsed, body))

    def _parse(self) -> _Parsed | None:
        """The buffered request's head if it is a purge this side takes; None when the head is still
        arriving, or when it is not such a purge (the connection is then aiohttp's)."""
        buf = self.buf
        if not buf:
            if self.eof:
                self._hand_over()
            return None
        line = _LINE.match(buf)
        if line is None:
            if b"\n" not in buf and not self.eof and len(buf) <= _MAX_HEAD and _START.startswith(buf[:6]):
                return None  # what may be a purge's request line, still arriving
            self._hand_over()
            return None
        end = buf.find(b"\r\n\r\n", line.end() - 2)
        if end < 0:
            if len(buf) > _MAX_HEAD or self.eof:
                self._hand_over()
            return None
        head_end = end + 4
        taken = _fields(bytes(buf[:head_end])) if head_end <= _MAX_HEAD else None
        if taken is None:
            self._hand_over()
            return None
        fields, length = taken
        edgeone = line.group(2) is None
        if (
            length > min(_MAX_BODY, self.site.max_body)
            # The EdgeOne endpoint's other actions are aiohttp's, as its dispatcher reads the action.
            or (edgeone and fields.get("X-TC-Action", "").strip() != PURGE_ACTION)
        ):
            self._hand_over()
            return None
        # The match's groups read the buffer itself: taken now, while its front is the head's.
        return _Parsed(
            head_end,
            length,
            fields,
            line.group(1).decode(),
            None if edgeone else (line.group(2).decode(), _MODES[line.group(3)]),
        )

    async def _answer(self, parsed: _Parsed, body: bytes) -> None:
        answer: bytes | None = None
        try:
            route = parsed.cloudflare
            if route is None:
                answer = await self._edgeone(parsed.fields, body)
            else:
                # A v4 purge's decision in this coroutine rather than one of its own: one frame less
                # to start and resume per purge.
                try:
                    zone_id, mode = route
                    job_id = await accept(self.site.context, parsed.fields, zone_id, parsed.path, body, mode)
                    answer = self._response(200, id_payload(job_id), {})
                except CfError as err:
                    answer = self._response(err.status, err.payload(), err.headers)
                except Exception:
                    # As the aiohttp app's envelope_errors middleware logs and answers it.
                    log.exception("control-plane request failed: POST %s", parsed.path)
                    failed = internal_error()
                    answer = self._response(failed.status, failed.payload(), failed.headers)
        except Exception:
            log.exception("control-plane answer failed: POST %s", parsed.path)
        finally:
            self.busy = False
            if answer is None:
                # No answer to write (its making failed, or the node stopped waiting for it): the
                # connection closes rather than leave the client waiting for one.
                self.close()
        if answer is None:
            return
        self.site.answered += 1
        if self.transport is None:
            return
        self.last_seen = asyncio.get_running_loop().time()
        self.transport.write(answer)
        if self.buf or self.eof or self.paused_reading or self.site.stopping:
            # Else there is nothing to take yet: the next read calls ``_next``.
            self._next()

    async def _edgeone(self, fields: CIMultiDict[str], body: bytes) -> bytes:
        """A ``CreatePurgeTask``'s answer: the API 3.0 envelope, always 200 (errors and unexpected
        failures included: :func:`edgeone_answer` answers them)."""

        async def read_body() -> bytes:
            return body

        return self._response(200, await edgeone_answer(self.site.app, "POST", "", fields, read_body), {})

    def _response(self, status: int, payload: bytes, extra: dict[str, str]) -> bytes:
        # aiohttp's fields, in its order, so that either side's answer reads the same.
        head = _STATUS_LINES[status]
        for name, value in extra.items():
            head += b"%s: %s\r\n" % (name.encode(), value.encode())
        return (
            b"%sContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n\r\n%s"
            % (
                head,
                len(payload),
                self.site.date.now(),
                _SERVER,
                payload,
            )
        )

    def _hand_over(self) -> None:
        """Give the connection, from the first byte of the request at hand, to aiohttp."""
        transport = self.transport
        assert transport is not None
        self._detach()
        handler: RequestHandler = self.aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.paused_reading:
            # aiohttp does not know the transport is paused: it resumes it only as a body is read
            # or its own flow control goes, so a head not yet read whole would wait for ever. Read
            # on; aiohttp pauses again if its flow control needs to.
            transport.resume_reading()
        if self.buf:
            handler.data_received(bytes(self.buf))
        if self.eof:
            handler.eof_received()
            # aiohttp's eof_received returns None, not keep-open: the transport closes, as it would
            # have for aiohttp's own protocol.
            transport.close()
