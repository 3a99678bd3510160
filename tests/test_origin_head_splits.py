"""Real origins' responses read without llhttp (origin_conn's rule 9) against the llhttp-only path:
cut into two reads at every offset, followed by what an origin might send after them, and the
response-smuggling classics, each whole and cut at every offset; the demo origin's own head held to
llhttp's verdict under every one-byte change; the connection makes its parser only when a read
needs it. ``_both`` (``test_origin_fast``) asserts that a connection tells its listener or reader
the same with the C reader as with it replaced by one that takes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from edgecache.demo.origin import start
from edgecache.edge import origin_conn
from edgecache.edge._originhead import response
from edgecache.edge.origin_conn import Deadlines, OriginConnection, OriginError, OriginResponse
from test_origin_fast import NGINX, _both, _llhttp_accepts_alike, _Transport


def _demo_response(path: str) -> bytes:
    """What the built-in demo origin (aiohttp) sends for ``path``, read off a real socket."""

    async def fetch() -> bytes:
        runner = await start("127.0.0.1", 0)
        try:
            port = runner.addresses[0][1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET %s HTTP/1.1\r\nHost: demo.test\r\nConnection: close\r\n\r\n" % path.encode())
            raw = await reader.read()
            writer.close()
            return raw
        finally:
            await runner.cleanup()

    return asyncio.run(fetch())


@pytest.fixture(scope="module")
def demo() -> bytes:
    raw = _demo_response("/products/3")
    # The shape read without llhttp, but for the close the request asked for.
    return raw.replace(b"Connection: close\r\n", b"")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


AFTER = [
    b"",
    b"\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
    b"HTTP/1.1 200 OK\r\nContent-Le",
    b"x",
]
"""What may follow a response in the same stream: nothing, a stray CRLF, a whole or a partial
second response, junk."""


@pytest.mark.parametrize("after", AFTER)
@pytest.mark.parametrize("origin", ["nginx", "demo"])
def test_a_real_response_cut_at_every_offset_is_told_alike(
    loop: asyncio.AbstractEventLoop, demo: bytes, origin: str, after: bytes
) -> None:
    raw = (NGINX + b"body" if origin == "nginx" else demo) + after
    assert response(raw) is not None  # the first read of the uncut stream is taken
    for cut in range(1, len(raw)):
        for listen in (True, False):
            log = _both(loop, [raw], [cut], listen=listen)
            # A second response never reaches the first one's reader, whatever the reads.
            assert not any(b"EVIL" in repr(entry).encode() for entry in log)


def test_the_demo_origins_head_is_read_without_llhttp(demo: bytes) -> None:
    taken = response(demo)
    assert taken is not None
    end, status, keep_alive, length, fill = taken
    assert (status, keep_alive, len(demo) - end) == (200, True, length)
    assert fill[10] == [("Cache-Tag", "demo,products,product-3")]


def test_every_one_byte_change_of_the_demo_origins_head_is_read_as_llhttp_reads_it(demo: bytes) -> None:
    """As ``test_origin_fast``'s one-byte test, for the demo origin's response as it sent it."""
    taken = 0
    for at in range(len(demo) + 1):
        taken += _llhttp_accepts_alike(demo[:at] + demo[at + 1 :])
        for byte in range(256):
            taken += _llhttp_accepts_alike(demo[:at] + bytes([byte]) + demo[at:])
            taken += _llhttp_accepts_alike(demo[:at] + bytes([byte]) + demo[at + 1 :])
    assert taken > len(demo)


SMUGGLING = {
    "cl and te": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te and cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
    "two equal lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
    "a length list": b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
    "a signed length": b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
    "a length with a space": b"HTTP/1.1 200 OK\r\nContent-Length: 4 4\r\n\r\n",
    "space before the colon": b"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n",
    "tab before the colon": b"HTTP/1.1 200 OK\r\nContent-Length\t: 4\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 4\r\nContent-Length: 4\r\n\r\n",
    "folded length": b"HTTP/1.1 200 OK\r\nContent-Length:\r\n 4\r\n\r\n",
    "bare lf": b"HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 4\r\n\r\n",
    "bare cr": b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 9\r\nContent-Length: 4\r\n\r\n",
    "nul in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 4\r\n\r\n",
    "nul in a name": b"HTTP/1.1 200 OK\r\nX-\x00A: a\r\nContent-Length: 4\r\n\r\n",
    "a response in a value": b"HTTP/1.1 200 OK\r\nX-A: \r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
    "te gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te chunked twice": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "http/1.0 kept alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\n",
    "connection close, keep-alive": (
        b"HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 4\r\n\r\n"
    ),
    "two connection fields": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"
    ),
    "proxy-connection": b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 4\r\n\r\n",
    "upgrade": b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 4\r\n\r\n",
    "204 with a length": b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n",
    "304 with a length": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n",
    "101": b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 4\r\n\r\n",
    "100 then a head": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
    "a huge length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
}
"""Heads an attacker controlling an origin (or a response's field values) might send to split or
smuggle a response; each is followed by ``4\r\nEVIL\r\n0\r\n\r\n`` and a second response."""

SMUGGLED = b"4\r\nEVIL\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"


@pytest.mark.parametrize("kind", list(SMUGGLING))
def test_the_smuggling_classics_are_told_alike_whole_and_cut_anywhere(
    loop: asyncio.AbstractEventLoop, kind: str
) -> None:
    """Whatever llhttp makes of them (an error, a response framed by its one valid length, a
    chunked body), the connection with the C reader makes the same of every split; and a second
    response's bytes never become a first response's complete body."""
    raw = SMUGGLING[kind] + SMUGGLED
    for cut in [None, *range(1, len(raw))]:
        for method in ("GET", "HEAD"):
            log = _both(loop, [raw, NGINX + b"body"], [] if cut is None else [cut], method=method)
            bodies = b"".join(entry[1] for entry in log if entry[0] == "body")
            assert b"EVIL!" not in bodies


def _connection(loop: asyncio.AbstractEventLoop, log: list[Any]) -> OriginConnection:
    conn = OriginConnection(
        loop,
        deadlines=Deadlines(loop, 60.0),
        first_byte_timeout=60.0,
        read_timeout=60.0,
        on_reusable=lambda c: log.append("reusable"),
        on_closed=lambda c: log.append("closed"),
    )
    conn.connection_made(_Transport())
    return conn


def test_llhttp_is_made_only_when_a_read_needs_it(loop: asyncio.AbstractEventLoop) -> None:
    """Responses read whole without llhttp make no parser; the first read that needs llhttp (a
    head cut across reads) makes one, and the connection reads on as it did with one from the
    start."""
    log: list[Any] = []
    conn = _connection(loop, log)
    for _ in range(3):
        resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", "GET", None)
        conn.data_received(NGINX + b"body")
        assert resp.complete and resp._chunks == [b"body"]
    assert conn._parser is None
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", "GET", None)
    conn.data_received(NGINX[:20])
    assert conn._parser is not None
    conn.data_received(NGINX[20:] + b"body")
    assert resp.complete and resp._chunks == [b"body"]
    assert log == ["reusable"] * 4
    conn.deadlines.stop()


def test_the_bytes_after_a_response_read_without_llhttp_go_to_a_new_parser(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A second response after the first's body, in the same read, is never taken for the next
    exchange's: the parser made for those bytes refuses them (no request is outstanding) and the
    connection closes, with the first response complete."""
    log: list[Any] = []
    conn = _connection(loop, log)
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", "GET", None)
    conn.data_received(NGINX + b"bodyHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
    assert resp.complete and resp._chunks == [b"body"]
    assert conn.closed and log == ["closed"]
    conn.deadlines.stop()


class _GivesUp:
    """A listener that gives up on the response when its head arrives (a client gone, say)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def origin_head(self, resp: OriginResponse) -> None:
        self.log.append("head")
        resp.close()

    def origin_body(self, resp: OriginResponse, data: bytes) -> None:
        self.log.append(("body", data))

    def origin_done(self, resp: OriginResponse) -> None:
        self.log.append("done")

    def origin_failed(self, resp: OriginResponse, error: OriginError) -> None:
        self.log.append(("failed", str(error)))

    def origin_read_end(self, resp: OriginResponse) -> None:
        self.log.append("read end")


@pytest.mark.parametrize("fast", [True, False])
def test_a_listener_that_gives_up_at_the_head_is_told_no_body(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """With or without llhttp for the head, a listener that closes the response in ``origin_head``
    hears of its failure and of nothing after it, and the connection is closed, not reused."""
    if not fast:
        monkeypatch.setattr(origin_conn, "read_response", lambda read: None)
    log: list[Any] = []
    conn = _connection(loop, log)
    conn.send(b"GET / HTTP/1.1\r\n\r\n", "GET", None, listener=_GivesUp(log))
    conn.data_received(NGINX + b"body")
    assert log == ["head", ("failed", "response abandoned before its end"), "closed"]
    conn.deadlines.stop()
