"""A final head read without llhttp (``_originhead.response``, origin_conn's rule 9, decision
0024's addendum of 2026-12-01) against llhttp's own verdict and against the connection's llhttp
path: every head it takes llhttp accepts alike (status, fields, keep-alive, Content-Length, where
the head ends), so nothing llhttp refuses gets through; and a connection reading responses with it
tells its listener or reader exactly what it tells them without it, over arbitrary and mutated
responses split into arbitrary reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from httptools import HttpParserError, HttpResponseParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.edge import origin_conn
from edgecache.edge._originhead import MAX_HEAD, response, scan
from edgecache.edge._originhead import fields as head_fields
from edgecache.edge.origin_conn import Deadlines, OriginConnection, OriginError, OriginResponse

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 4\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 14:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6929a0e0-400"\r\nCache-Control: public, max-age=3600\r\n'
    b"Cache-Tag: tag7\r\nxkey: tag7\r\nAccept-Ranges: bytes\r\n\r\n"
)


class _Llhttp:
    """llhttp's verdict on a response: its status, fields, keep-alive, body and completion."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.head = False
        self.body = b""
        self.complete = False
        self.parser: HttpResponseParser | None = None
        self.status = 0
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # Read here, as the connection reads them: after the message's end llhttp has moved on.
        assert self.parser is not None
        self.head = True
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


_names = st.one_of(
    st.sampled_from(
        [
            "Content-Length", "content-length", "CONTENT-LENGTH", "Connection", "connection",
            "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Keep-Alive", "Cache-Control",
            "Date", "Age", "ETag", "Vary", "Set-Cookie", "Cache-Tag", "xkey", "Server", "X-A",
            "Content-Length ", " Content-Length", "X A", "", "X\x00", "X\x7f", "\xe9",
        ]
    ),
    st.text(alphabet="abcXYZ09-!#$%&'*+.^_`|~", min_size=1, max_size=8),
)  # fmt: skip
_values = st.one_of(
    st.sampled_from(
        [
            "0", "4", "12", "007", "18446744073709551615", "18446744073709551616", "1234567890123456789",
            "4 ", " 4", "4,4", "-1", "x", "", "close", "Close", "keep-alive", "KEEP-ALIVE",
            "close ", "keep-alive, close", "upgrade", "chunked", "public, max-age=60",
            "a\tb", "\xe9t\xe9", "a\x00b", "a\x7fb", "a\rb", "a\nb",
        ]
    ),
    st.text(alphabet="ab ,:\t\x80\xff", max_size=10),
)  # fmt: skip
_ows = st.sampled_from(["", " ", "  ", "\t"])
_eols = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\n ", b"\r\n\t"])
"""Line ends: CRLF mostly; bare LF, bare CR, and CRLF then SP or HTAB (obs-fold) now and then."""


@st.composite
def _lines(draw: Any) -> bytes:
    name, ows, value = draw(_names), draw(_ows), draw(_values)
    return (name + ":" + ows + value).encode("latin-1") + draw(_eols)


_status_lines = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 206 Partial Content"]),
    st.tuples(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 "]),
        st.sampled_from(
            [b"200", b"204", b"304", b"100", b"103", b"101", b"199", b"599", b"600", b"099", b"20",
             b"2000", b"2x0", b"500"]
        ),
        st.sampled_from([b" ", b"", b"  ", b"\t"]),
        st.sampled_from([b"OK", b"", b"a:b", b"\xe9", b"a\x00b", b"a\x7f", b"a\rb", b"a\tb", b" x"]),
    ).map(lambda t: t[0] + b" " + t[1] + t[2] + t[3]),
)  # fmt: skip


@st.composite
def _responses(draw: Any) -> bytes:
    """A head of generated lines, a blank line (or something like one), a body, maybe more."""
    lead = draw(st.sampled_from([b""] * 8 + [b"\r\n", b"\n", b" "]))
    status = draw(_status_lines) + draw(_eols)
    lines = b"".join(draw(st.lists(_lines(), max_size=12)))
    end = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"", b"\r\n\r\n"]))
    body = draw(st.sampled_from([b"", b"ab", b"abcd", b"abcdefgh", b"abcd\r\n", b"abcdHTTP/1.1 200 OK\r\n"]))
    raw = lead + status + lines + end + body
    # Mutations: a byte replaced, inserted or removed anywhere (llhttp's verdict decides).
    for at, kind, byte in draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=len(raw)),
                st.sampled_from(["set", "insert", "delete"]),
                st.sampled_from(b"\r\n :\t\x00\x7f\x80,0a-"),
            ),
            max_size=2,
        )
    ):
        if kind == "insert" or at == len(raw):
            raw = raw[:at] + bytes([byte]) + raw[at:]
        elif kind == "set":
            raw = raw[:at] + bytes([byte]) + raw[at + 1 :]
        else:
            raw = raw[:at] + raw[at + 1 :]
    return raw


def _common_responses() -> st.SearchStrategy[bytes]:
    """Heads of the shape read without llhttp, so that the properties see many of them taken."""
    ordinary = st.tuples(
        st.sampled_from(
            [b"1.1 200 OK", b"1.1 404 Not Found", b"1.1 206 Partial", b"1.1 503 ", b"1.1 204 No Content",
             b"1.1 304 Not Modified", b"1.1 100 Continue", b"1.1 101 Switching", b"1.1 103 Early",
             b"1.0 200 OK"]
        ),
        st.lists(
            st.sampled_from(
                [b"Server: nginx", b"Connection: keep-alive", b"Connection: close",
                 b"Cache-Control: max-age=60", b"ETag: \"x\"", b"Cache-Tag: a, b",
                 b"Connection: X-A", b"X-A: 1", b"Vary: Accept",
                 b"Date: Mon, 30 Nov 2026 15:00:00 GMT", b"Age: 5", b"Set-Cookie: a=b", b"X-B:\t v \t",
                 b"Transfer-Encoding: chunked", b"Content-Length: 4", b"Upgrade: h2c",
                 b"Proxy-Connection: close", b"Connection: keep-alive, close", b"Connection: upgrade"]
            ),
            max_size=8,
        ),
        st.sampled_from([b"0", b"4", b"10"]),
        st.sampled_from([b"", b"ab", b"abcd", b"abcdefgh", b"abcd\r\n", b"abcdHTTP/1.1 200 OK\r\n"]),
        st.sampled_from([b""] * 6 + [b"HTTP/1.1 100 Continue\r\n\r\n", b"\r\n"]),
    ).map(
        lambda t: t[4] + b"HTTP/" + t[0] + b"\r\n" + b"".join(line + b"\r\n" for line in t[1])
        + b"Content-Length: " + t[2] + b"\r\n\r\n" + t[3]
    )  # fmt: skip
    return st.one_of(ordinary, _responses())


def _llhttp_accepts_alike(raw: bytes) -> bool:
    """Whether ``response`` takes ``raw``; if it does, llhttp must accept its head alike."""
    taken = response(raw)
    if taken is None:
        return False
    end, status, keep_alive, length, fill = taken
    llhttp = _Llhttp()
    parser = llhttp.parser = HttpResponseParser(llhttp)
    parser.feed_data(raw[:end])  # accepted: no HttpParserError
    assert llhttp.head
    assert llhttp.status == status
    assert 200 <= status <= 599 and status not in (204, 304)
    assert llhttp.keep_alive == keep_alive
    lengths = [v for n, v in llhttp.fields if n.lower() == "content-length"]
    assert [int(v) for v in lengths] == [length]
    assert not [n for n, _ in llhttp.fields if n.lower() in ("transfer-encoding", "upgrade")]
    assert head_fields(raw, 0) == (end, llhttp.fields)
    scanned = scan(raw, 0)
    assert scanned is not None
    assert scanned[0] == end and scanned[3] == length and scanned[5] == fill
    # llhttp frames the body by the same Content-Length.
    body = raw[end : end + length]
    if len(body) == length:
        parser.feed_data(body)
        assert llhttp.complete and llhttp.body == body
    else:
        assert not llhttp.complete
    return True


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_common_responses())
def test_every_head_read_without_llhttp_is_one_llhttp_accepts_alike(raw: bytes) -> None:
    _llhttp_accepts_alike(raw)


@pytest.mark.parametrize(
    "base",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\nX-A: v\r\n\r\nabcHTTP",
        b"HTTP/1.1 404 N\r\nConnection: keep-alive\r\nContent-Length: 10\r\n\r\n0123456789\r\n",
        b"HTTP/1.1 599 \r\nA:\r\ncontent-length:0\r\n\r\n",
        NGINX + b"body",
    ],
)
def test_every_one_byte_change_read_without_llhttp_is_accepted_alike(base: bytes) -> None:
    """Every byte value set or inserted at every offset of a taken response, and every byte
    deleted (the exhaustive part of the differential fuzz in decision 0024's addendum): whatever
    ``response`` takes, llhttp accepts alike; and some of them are taken."""
    taken = 0
    for at in range(len(base) + 1):
        taken += _llhttp_accepts_alike(base[:at] + base[at + 1 :])
        for byte in range(256):
            taken += _llhttp_accepts_alike(base[:at] + bytes([byte]) + base[at:])
            taken += _llhttp_accepts_alike(base[:at] + bytes([byte]) + base[at + 1 :])
    assert taken > len(base)


def test_the_common_head_is_read_without_llhttp() -> None:
    """The property above is not vacuous: nginx's head for a fill is taken."""
    taken = response(NGINX + b"body")
    assert taken is not None
    assert taken[:4] == (len(NGINX), 200, True, 4)
    assert MAX_HEAD == origin_conn.MAX_HEAD


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 4\n\n",
        b"HTTP/1.1 200 OK\r\nX A: a\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
    ],
)
def test_heads_llhttp_refuses_are_left_to_it(head: bytes) -> None:
    """The framing rules llhttp enforces (two Content-Lengths, Content-Length with
    Transfer-Encoding, obs-fold, a bare CR or LF, a space in a name, a bad or huge length): such a
    head is never read without it, and llhttp refuses it."""
    assert response(head + b"body") is None
    llhttp = _Llhttp()
    parser = llhttp.parser = HttpResponseParser(llhttp)
    with pytest.raises(HttpParserError):
        parser.feed_data(head + b"body")


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Listener:
    """Records what a response's listener is told, in order; raises in ``raises`` (a method's name)
    after recording, as a listener with a bug would, while ``armed``."""

    def __init__(self, log: list[Any], raises: str | None) -> None:
        self.log = log
        self.raises = raises
        self.armed = False

    def _told(self, method: str, entry: tuple[Any, ...]) -> None:
        self.log.append(entry)
        if self.armed and method == self.raises:
            raise RuntimeError("boom")

    def origin_head(self, resp: OriginResponse) -> None:
        self._told("origin_head", ("head", resp.status, resp.content_length, resp.fill, resp.headers))

    def origin_body(self, resp: OriginResponse, data: bytes) -> None:
        self._told("origin_body", ("body", bytes(data)))

    def origin_done(self, resp: OriginResponse) -> None:
        self._told("origin_done", ("done",))

    def origin_failed(self, resp: OriginResponse, error: OriginError) -> None:
        self.log.append(("failed", type(error).__name__, str(error)))

    def origin_read_end(self, resp: OriginResponse) -> None:
        self.log.append(("read end",))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _exchanges(
    loop: asyncio.AbstractEventLoop,
    responses: list[bytes],
    cuts: list[int],
    method: str,
    listen: bool,
    raises: str | None = None,
) -> list[Any]:
    """What a connection tells of ``responses`` sent one after another while it stays reusable, the
    bytes of each cut into reads at ``cuts``, the origin closing after the last; a listener raises
    in ``raises``."""
    log: list[Any] = []
    deadlines = Deadlines(loop, 60.0)
    conn = OriginConnection(
        loop,
        deadlines=deadlines,
        first_byte_timeout=60.0,
        read_timeout=60.0,
        on_reusable=lambda c: log.append(("reusable",)),
        on_closed=lambda c: log.append(("closed",)),
    )
    conn.connection_made(_Transport())
    for i, raw in enumerate(responses):
        if conn.closed or (i and conn.exchange is not None):
            break  # the pool sends on a connection only once it is reusable
        listener = _Listener(log, raises)
        resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", method, None, listener=listener if listen else None)
        # A transport never delivers an empty read.
        bounds = zip([0, *cuts], [*cuts, len(raw)], strict=True)
        reads = [read for read in (raw[a:b] for a, b in bounds) if read]
        # Raising only in a read: the origin's EOF reaches the listener by the same code on both
        # paths, and its exception leaves eof_received() (the event loop's to log).
        listener.armed = True
        for read in reads:
            if conn.closed:
                break
            conn.data_received(read)
        listener.armed = False
        if not listen:
            error = resp._error
            log.append(("read", resp.status, resp.content_length, resp.fill, resp.complete))
            log.append(("error", None if error is None else (type(error).__name__, str(error))))
            log.append(("chunks", [bytes(c) for c in resp._chunks]))
    if not conn.closed:
        conn.eof_received()
        conn.connection_lost(None)
    deadlines.stop()
    return log


def _both(
    loop: asyncio.AbstractEventLoop,
    responses: list[bytes],
    cuts: list[int],
    method: str = "GET",
    listen: bool = True,
    raises: str | None = None,
) -> list[Any]:
    """What a connection tells of ``responses`` (see ``_exchanges``), asserted the same when a whole
    head is read without llhttp as when llhttp parses every byte (``read_response`` replaced by one
    that takes nothing)."""
    fast = _exchanges(loop, responses, cuts, method, listen, raises)
    real = origin_conn.read_response
    origin_conn.read_response = lambda read: None
    try:
        slow = _exchanges(loop, responses, cuts, method, listen, raises)
    finally:
        origin_conn.read_response = real
    assert fast == slow
    return fast


def _head_end(raw: bytes) -> int:
    """Where the head of a generated response ends, or its length when it has no blank line."""
    end = raw.find(b"\r\n\r\n")
    return len(raw) if end < 0 else end + 2


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    responses=st.lists(_common_responses(), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=3).map(sorted),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    listen=st.booleans(),
    raises=st.sampled_from([None, None, None, "origin_head", "origin_body", "origin_done"]),
    splice=st.one_of(
        st.none(),
        st.tuples(
            st.integers(min_value=0, max_value=10**6),
            _common_responses().filter(lambda raw: raw.startswith(b"HTTP/")),
        ),
    ),
)
def test_a_connection_tells_the_same_with_and_without_llhttp_for_the_head(
    loop: asyncio.AbstractEventLoop,
    responses: list[bytes],
    cuts: list[int],
    method: str,
    listen: bool,
    raises: str | None,
    splice: tuple[int, bytes] | None,
) -> None:
    """Heads, bodies in pieces, the end, failures and their messages (a listener's exception's
    too), reuse and closes: the same whether a whole head is read without llhttp or not. With
    ``splice``, the first response is cut inside its head and the next read starts with a status
    line: a read that is not the exchange's first must not be read as a head of its own."""
    if splice is not None:
        at, rest = splice
        first = responses[0]
        at = 1 + at % max(1, _head_end(first) - 1)
        responses = [first[:at] + rest, *responses[1:]]
        cuts = sorted({*cuts, at})
    _both(loop, responses, cuts, method, listen, raises)


def test_a_status_line_after_part_of_a_head_continues_that_head(loop: asyncio.AbstractEventLoop) -> None:
    """A head with Transfer-Encoding cut inside a field's value, and a read that starts with a
    status line and a Content-Length: llhttp reads it as the same head and refuses both framings;
    the read is not taken as a head of its own (which would give a 200, a body of "EVIL!" and a
    reusable connection)."""
    first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: "
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"
    assert response(second) is not None
    log = _both(loop, [first + second], [len(first)])
    assert log == [
        ("read end",),
        (
            "failed",
            "OriginInvalid",
            "origin sent a malformed response: Content-Length can't be present with Transfer-Encoding",
        ),
        ("closed",),
    ]


def _fields_head(count: int, size: int) -> bytes:
    """A 200 head of ``count`` fields of ``size`` bytes of name and value, then Content-Length: 4."""
    lines = b"".join(b"X-%03d:%s\r\n" % (i, b"v" * (size - 5)) for i in range(count))
    return b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 4\r\n\r\n"


def test_a_head_over_max_head_is_refused_as_on_the_llhttp_path(loop: asyncio.AbstractEventLoop) -> None:
    """63 fields of 1,100 bytes (~69 KB of names and values, over MAX_HEAD) in one read: not read
    without llhttp, and the exchange fails as llhttp's path fails it (a 502)."""
    raw = _fields_head(63, 1100) + b"body"
    assert MAX_HEAD < 63 * 1100 and response(raw) is None
    log = _both(loop, [raw], [])
    assert log == [
        (
            "failed",
            "OriginInvalid",
            "origin sent a malformed response: response head over "
            f"{origin_conn.MAX_FIELDS} fields or {MAX_HEAD} bytes",
        ),
        ("closed",),
    ]


def test_a_head_of_64_lines_is_read_without_llhttp_and_one_of_65_is_not(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """``response`` reads at most 64 lines (its stack's): 63 fields and Content-Length are taken,
    64 and Content-Length left to llhttp, which reads them alike (under MAX_FIELDS)."""
    taken = _fields_head(63, 20)
    refused = _fields_head(64, 20)
    assert response(taken + b"body") is not None
    assert response(refused + b"body") is None
    for raw in (taken, refused):
        log = _both(loop, [raw + b"body"], [])
        assert log[0][:3] == ("head", 200, 4)
        assert log[1:] == [("body", b"body"), ("done",), ("reusable",), ("closed",)]
