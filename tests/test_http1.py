"""The data plane's HTTP/1.1 server, over real sockets on 127.0.0.1, on both asyncio and uvloop loops."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httptools
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.config import Limits
from edgecache.edge import http1
from edgecache.edge.http1 import PENDING, Connection, HttpServer, Pending, Request, start_server

LIMITS = Limits(
    max_request_line=256,
    max_header_count=10,
    max_header_bytes=1024,
    max_body_bytes=1000,
    header_timeout=5,
    body_timeout=5,
    idle_timeout=5,
)
FAST = LIMITS.model_copy(update={"header_timeout": 0.3, "body_timeout": 0.3, "idle_timeout": 0.3})
Run = Callable[[Coroutine[Any, Any, None]], None]
Response = tuple[int, dict[str, str], bytes]
GET = b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: a\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
LAST = b"GET %b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


@pytest.fixture(params=["asyncio", "uvloop"])
def aio(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(coro, 10))

    return run


class Echo:
    """Answers with a JSON description of the request; some targets exercise the other paths."""

    def __init__(self) -> None:
        self.calls: list[Request] = []
        self.big_done = asyncio.Event()
        self.big_saw_closed = False

    def __call__(self, req: Request, conn: Connection) -> Awaitable[None] | Pending | None:
        self.calls.append(req)
        if req.target.startswith("/async"):
            return self._later(req, conn)
        if req.target.startswith("/callback"):
            # Answered later from a callback of the handler's own, without a task (the cache's
            # miss answered from the origin's callbacks), or handed to a task then, or failed.
            asyncio.get_running_loop().call_soon(self._called_back, req, conn)
            return PENDING
        if req.target == "/boom":
            raise RuntimeError("boom")
        if req.target == "/nofinish":
            return None
        if req.target.startswith("/sync-big"):
            size = int(req.target.split("=")[1])
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"s" * size)
            conn.finish(req.keep_alive)
            return None
        if req.target == "/close":
            conn.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False)
            return None
        # respond() is write() + finish() in one call (the hit path's): every plain answer here takes
        # it, so the pipelining, close and half-close tests hold for both spellings.
        conn.respond(_response(req), req.keep_alive)
        return None

    def _called_back(self, req: Request, conn: Connection) -> None:
        if req.target == "/callback-boom":
            conn.fail(RuntimeError("boom"))
        elif req.target.startswith("/callback-task"):
            conn.follow(self._later(req, conn))
        else:
            conn.write(_response(req))
            conn.finish(req.keep_alive)

    async def _later(self, req: Request, conn: Connection) -> None:
        await asyncio.sleep(0)
        if req.target == "/async-boom":
            raise RuntimeError("boom")
        if req.target.startswith("/async-big"):
            size = int(req.target.split("=")[1])
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            piece = b"x" * 65536
            for _ in range(size // len(piece)):
                conn.write(piece)
                await conn.drain()
            self.big_saw_closed = conn.closed
            self.big_done.set()
            conn.finish(req.keep_alive)
            return
        if req.target == "/async-late-boom":
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await asyncio.sleep(0)
            raise RuntimeError("late boom")
        data = _response(req)
        conn.write(data[:10])
        await asyncio.sleep(0)
        await conn.drain()
        conn.write(data[10:])
        conn.finish(req.keep_alive)


def _response(req: Request) -> bytes:
    body = json.dumps(
        {
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
            "body": req.body.decode("latin-1"),
            "version": req.http_version,
            "keep_alive": req.keep_alive,
            "client_ip": req.client_ip,
        }
    ).encode()
    close = b"" if req.keep_alive else b"Connection: close\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), close, body)


@asynccontextmanager
async def serving(limits: Limits = LIMITS) -> AsyncIterator[tuple[HttpServer, Echo]]:
    echo = Echo()
    server = await start_server(echo, limits)
    try:
        yield server, echo
    finally:
        await server.close()


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(port: int, data: bytes, count: int = 1) -> tuple[list[Response], bytes]:
    """Send ``data``, read ``count`` responses, then whatever follows until EOF (b"" if closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    responses = [await read_response(reader) for _ in range(count)]
    rest = await reader.read()
    writer.close()
    return responses, rest


async def rejected(port: int, data: bytes) -> int:
    """Send ``data``; expect one server-generated error and the close."""
    [(status, headers, body)], rest = await exchange(port, data)
    assert headers["connection"] == "close"
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == str(len(body))
    assert rest == b""
    return status


def described(body: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(body)
    return result


# -- requests, keep-alive, pipelining --------------------------------------------------------------------


def test_request_fields_and_keep_alive(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /a/b?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2 \r\nCookie: a=1\r\nCookie: b=2\r\n"
                b"Content-Length: 3\r\n\r\nabc"
            )
            status, _, body = await read_response(reader)
            d = described(body)
            assert status == 200
            assert d["method"] == "POST" and d["target"] == "/a/b?x=1" and d["body"] == "abc"
            assert d["headers"]["x-a"] == "1, 2" and d["headers"]["cookie"] == "a=1; b=2"
            assert d["version"] == "1.1" and d["keep_alive"] is True and d["client_ip"] == "127.0.0.1"
            writer.write(GET % b"/second")
            assert described((await read_response(reader))[2])["target"] == "/second"
            writer.close()

    aio(scenario())


def test_pipelined_requests_in_one_packet_answered_in_order(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            targets = [b"/1", b"/async-2", b"/3", b"/callback-4", b"/async-5", b"/callback-task-6", b"/7"]
            data = b"".join(GET % t for t in targets) + LAST % b"/8"
            responses, rest = await exchange(server.port, data, count=8)
            assert [described(b)["target"] for _, _, b in responses] == [t.decode() for t in targets] + ["/8"]
            assert rest == b""

    aio(scenario())


def test_many_pipelined_async_requests_pause_and_resume_reading(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            data = b"".join(GET % b"/async-%d" % i for i in range(59)) + LAST % b"/async-59"
            responses, rest = await exchange(server.port, data, count=60)
            assert [described(b)["target"] for _, _, b in responses] == [f"/async-{i}" for i in range(60)]
            assert rest == b""

    aio(scenario())


def test_large_async_response_with_drain_then_next_request(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            size = 64 * 65536
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/async-big=%d" % size + GET % b"/after")
            await asyncio.sleep(0.1)  # let the server's write buffer fill so it has to wait in drain()
            status, _, body = await read_response(reader)
            assert status == 200 and len(body) == size
            assert described((await read_response(reader))[2])["target"] == "/after"
            writer.close()

    aio(scenario())


def test_large_sync_response_holds_back_pipelined_requests(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            size = 16 * 1024 * 1024
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/sync-big=%d" % size + GET % b"/async-next" + GET % b"/last")
            await asyncio.sleep(0.1)  # the write side pauses; the next requests must wait in the queue
            status, _, body = await read_response(reader)
            assert status == 200 and len(body) == size
            assert [described((await read_response(reader))[2])["target"] for _ in range(2)] == [
                "/async-next",
                "/last",
            ]
            writer.close()

    aio(scenario())


def test_client_gone_during_drain_releases_the_handler(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/async-big=%d" % (512 * 1024 * 1024))
            await reader.readexactly(100_000)
            writer.transport.abort()
            await asyncio.wait_for(echo.big_done.wait(), 5)
            assert echo.big_saw_closed

    aio(scenario())


def test_handler_may_close_a_keep_alive_connection(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            [(status, _, _)], rest = await exchange(server.port, GET % b"/close" + GET % b"/never")
            assert status == 200 and rest == b""
            assert [r.target for r in echo.calls] == ["/close"]

    aio(scenario())


def test_http10_closes_unless_keep_alive(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            [(_, _, body)], rest = await exchange(
                server.port, b"GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\n\r\n"
            )
            assert described(body)["keep_alive"] is False and rest == b""
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for target in (b"/1", b"/2"):
                writer.write(b"GET %b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % target)
                d = described((await read_response(reader))[2])
                assert d["keep_alive"] is True and d["version"] == "1.0"
            writer.close()

    aio(scenario())


KEEP_ALIVE_FIELDS = [
    b"",
    b"Connection: keep-alive\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"proxy-connection: Keep-Alive\r\n",
    b"Connection: close\r\n",
    b"Connection: x-other\r\nX-Other: 1\r\n",
    b"Keep-Alive: 5\r\n",
]


@pytest.mark.parametrize("field", KEEP_ALIVE_FIELDS)
@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_the_handler_sees_the_version_the_request_line_says(aio: Run, version: bytes, field: bytes) -> None:
    """The server tells 1.1 from a kept-alive request without asking the parser for the version
    (on_headers_complete): a 1.0 request kept alive by Proxy-Connection must still be 1.0."""

    async def scenario() -> None:
        async with serving() as (server, _):
            request = b"GET /v HTTP/%b\r\nHost: a\r\n%b\r\n" % (version, field)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            d = described((await read_response(reader))[2])
            assert d["version"] == version.decode()
            kept = b"connection: keep-alive" in field.lower() or (version == b"1.1" and b"close" not in field)
            assert d["keep_alive"] is kept
            writer.close()

    aio(scenario())


@pytest.mark.parametrize("field", KEEP_ALIVE_FIELDS)
@pytest.mark.parametrize("version", [b"2.0", b"0.9"])
def test_other_versions_are_505_whatever_keeps_them_alive(aio: Run, version: bytes, field: bytes) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            request = b"GET / HTTP/%b\r\nHost: a\r\n%b\r\n" % (version, field)
            assert await rejected(server.port, request) == 505
            assert echo.calls == []

    aio(scenario())


def test_connection_close_honoured_and_later_bytes_ignored(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            data = b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET % b"/2" + b"garbage\r\n"
            [(status, headers, _)], rest = await exchange(server.port, data)
            assert status == 200 and headers["connection"] == "close" and rest == b""
            assert [r.target for r in echo.calls] == ["/1"]
            assert server.stats.rejected[400] == 0

    aio(scenario())


def test_client_half_close_after_pipelined_requests(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/async-1" + GET % b"/2")
            writer.write_eof()
            first, second = await read_response(reader), await read_response(reader)
            assert [described(r[2])["target"] for r in (first, second)] == ["/async-1", "/2"]
            assert await reader.read() == b""
            writer.close()

    aio(scenario())


def test_chunked_body_is_assembled_and_trailers_dropped(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            data = (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
            )
            [(_, _, body), _], _ = await exchange(server.port, data + LAST % b"/", 2)
            d = described(body)
            assert d["body"] == "abcde" and "x-trailer" not in d["headers"]

    aio(scenario())


# -- limits ----------------------------------------------------------------------------------------------


def test_request_line_too_long_is_414(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            ok = b"/" + b"a" * (256 - len("GET /"))
            assert (await exchange(server.port, LAST % ok))[0][0][0] == 200
            assert await rejected(server.port, GET % (ok + b"a")) == 414
            # Still sending the line: answered as soon as it is too long, not when it ends.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /" + b"a" * 300)
            assert (await read_response(reader))[0] == 414
            writer.close()
            assert len(echo.calls) == 1 and server.stats.rejected[414] == 2

    aio(scenario())


def test_too_many_header_fields_is_431(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            fields = b"".join(b"X-%d: v\r\n" % i for i in range(10))
            assert await rejected(server.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n") == 431
            assert echo.calls == []

    aio(scenario())


def test_header_bytes_over_limit_is_431(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            fields = b"X-A: " + b"v" * 600 + b"\r\nX-B: " + b"v" * 600 + b"\r\n"
            assert await rejected(server.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n") == 431
            assert echo.calls == []

    aio(scenario())


def test_one_endless_header_field_is_431_before_it_ends(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
            for _ in range(40):
                await asyncio.sleep(0.005)
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"v" * 128)
            status, _, _ = await read_response(reader)
            assert status == 431
            writer.close()

    aio(scenario())


def test_content_length_over_limit_is_413_without_reading_body(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"
            assert await rejected(server.port, head) == 413
            # The client keeps sending the refused body: it still reads the 413, not a reset.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 900000\r\n\r\n" + b"x" * 200000)
            assert (await read_response(reader))[0] == 413
            writer.close()
            assert echo.calls == []

    aio(scenario())


def test_chunked_body_over_limit_is_413(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunk = b"1f4\r\n" + b"x" * 500 + b"\r\n"
            assert await rejected(server.port, head + chunk + chunk + b"1\r\nx\r\n0\r\n\r\n") == 413
            assert await rejected(server.port, head + b"ffffffffffffffff\r\n" + b"x" * 1001) == 413
            assert echo.calls == []

    aio(scenario())


def test_endless_chunk_extension_is_413(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(CHUNKED + b"1;ext=")
            for _ in range(100):  # 2 * max_body_bytes + 64 KiB of wire bytes end it
                await asyncio.sleep(0.002)
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"a" * 2048)
            assert (await read_response(reader))[0] == 413
            assert echo.calls == []
            writer.close()

    aio(scenario())


# -- framing ---------------------------------------------------------------------------------------------

BAD_FRAMING = {
    "cl-and-te": POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate-cl-equal": POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "duplicate-cl-different": POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-plus": POST + b"Content-Length: +3\r\n\r\nabc",
    "cl-list": POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl-hex": POST + b"Content-Length: 0x3\r\n\r\nabc",
    "cl-negative": POST + b"Content-Length: -1\r\n\r\n",
    "cl-overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "cl-superscript": POST + b"Content-Length: \xb2\r\n\r\nab",
    "te-gzip": POST + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-gzip-chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-gzip": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-twice": POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold-space": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n",
    "chunk-size-not-hex": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"1ffffffffffffffff\r\n",
    "chunk-size-space": CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED + b"3\r\nabcd\r\n0\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "tab-before-colon": b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare-lf-one-field": b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
    "bare-lf-end-of-head": b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    "bare-lf-chunk": CHUNKED + b"3\nabc\n0\n\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "fragment-in-target": b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    "non-token-name": b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n",
    "unknown-method": b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", BAD_FRAMING)
def test_invalid_framing_is_400(aio: Run, name: str) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            assert await rejected(server.port, BAD_FRAMING[name]) == 400
            assert echo.calls == []
            assert server.stats.rejected[400] == 1

    aio(scenario())


OWN_CHECKS = [
    *(name for name in BAD_FRAMING if name.startswith(("cl-", "te-", "duplicate-"))),
    "space-before-colon",
    "non-token-name",
    "missing-host",
    "fragment-in-target",
]


class _LenientParser(httptools.HttpRequestParser):
    """llhttp with every leniency on, whatever the server asks for."""

    def set_dangerous_leniencies(self, **flags: bool | None) -> None:  # type: ignore[override]
        super().set_dangerous_leniencies(**dict.fromkeys(flags, True))


@pytest.mark.parametrize("name", OWN_CHECKS)
def test_own_checks_hold_with_a_lenient_parser(aio: Run, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Framing rules enforced in our callbacks, not only by llhttp's (pinned) strict mode."""
    monkeypatch.setattr(http1, "HttpRequestParser", _LenientParser)

    async def scenario() -> None:
        async with serving() as (server, echo):
            assert await rejected(server.port, BAD_FRAMING[name]) == 400
            assert await rejected(server.port, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n") == 505
            # Kept alive without a Connection field, as 1.1 is: the version is still read.
            assert await rejected(server.port, b"GET / HTTP/9.9\r\nHost: a\r\n\r\n") == 505
            assert echo.calls == []

    aio(scenario())


def test_other_http_versions_are_505(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            assert await rejected(server.port, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505
            assert await rejected(server.port, b"GET /\r\n\r\n") == 505
            assert echo.calls == []

    aio(scenario())


def test_bad_request_after_async_response_is_answered_after_it(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            responses, rest = await exchange(
                server.port, GET % b"/async-1" + b"GET / HTTP/1.1\nHost: a\n\n", 2
            )
            assert [r[0] for r in responses] == [200, 400] and rest == b""
            assert [r.target for r in echo.calls] == ["/async-1"]

    aio(scenario())


def test_bad_request_does_not_affect_other_connections(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/before")
            await read_response(reader)
            assert await rejected(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") == 400
            writer.write(GET % b"/after")
            assert described((await read_response(reader))[2])["target"] == "/after"
            writer.close()

    aio(scenario())


# -- Expect, Upgrade, CONNECT ----------------------------------------------------------------------------


def test_expect_100_continue(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            status, _, body = await read_response(reader)
            assert status == 200 and described(body)["body"] == "abc"
            writer.close()
            head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
            assert await rejected(server.port, head) == 413
            assert len(echo.calls) == 1

    aio(scenario())


def test_expect_100_continue_waits_for_the_response_in_flight(
    aio: Run,
) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                GET % b"/async-first"
                + b"POST /second HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
            )
            assert described((await read_response(reader))[2])["target"] == "/async-first"
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"xyz")
            assert described((await read_response(reader))[2])["body"] == "xyz"
            writer.close()

    aio(scenario())


def test_upgrade_is_501_and_connect_is_405(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, echo):
            ws = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00"
            assert await rejected(server.port, ws) == 501
            h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
            assert await rejected(server.port, h2c) == 501
            assert await rejected(server.port, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n") == 405
            assert echo.calls == []
            assert server.stats.rejected[501] == 2 and server.stats.rejected[405] == 1

    aio(scenario())


# -- timeouts --------------------------------------------------------------------------------------------


def test_slow_request_head_gets_408(aio: Run) -> None:
    async def scenario() -> None:
        async with serving(FAST) as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
            for _ in range(4):  # a byte now and then does not extend the deadline
                await asyncio.sleep(0.1)
                writer.write(b"X")
            status, headers, _ = await read_response(reader)
            assert status == 408 and headers["connection"] == "close"
            assert await reader.read() == b""
            assert echo.calls == [] and server.stats.timeouts == 1 and server.stats.rejected[408] == 1
            writer.close()

    aio(scenario())


def test_stalled_body_gets_408(aio: Run) -> None:
    async def scenario() -> None:
        async with serving(FAST) as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
            for _ in range(4):  # progress keeps it alive ...
                await asyncio.sleep(0.15)
                writer.write(b"x")
            status, _, _ = await read_response(reader)  # ... until it stops
            assert status == 408 and echo.calls == [] and server.stats.timeouts == 1
            writer.close()

    aio(scenario())


def test_trickling_body_gets_408_at_the_total_deadline(aio: Run) -> None:
    limits = LIMITS.model_copy(update={"body_timeout": 0.5, "body_deadline": 0.6})

    async def scenario() -> None:
        async with serving(limits) as (server, echo):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")

            async def trickle() -> None:  # a byte every 0.1 s: never a pause of body_timeout
                while True:
                    await asyncio.sleep(0.1)
                    writer.write(b"x")

            dripping = asyncio.ensure_future(trickle())
            started = asyncio.get_running_loop().time()
            status, headers, _ = await read_response(reader)
            elapsed = asyncio.get_running_loop().time() - started
            dripping.cancel()
            assert status == 408 and headers["connection"] == "close"
            assert elapsed < 2.0 and echo.calls == [] and server.stats.timeouts == 1
            writer.close()

    aio(scenario())


def test_idle_keep_alive_connection_closed_silently(aio: Run) -> None:
    async def scenario() -> None:
        async with serving(FAST) as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/")
            await read_response(reader)
            assert await asyncio.wait_for(reader.read(), 2) == b""
            silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(silent_reader.read(), 2) == b""
            assert server.stats.idle_closed == 2 and server.stats.timeouts == 0
            writer.close()
            silent_writer.close()

    aio(scenario())


# -- handler failures ------------------------------------------------------------------------------------


def test_handler_exception_before_writing_is_500(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            for target in (b"/boom", b"/async-boom", b"/nofinish", b"/callback-boom"):
                [(status, headers, _)], rest = await exchange(server.port, GET % target + GET % b"/next")
                assert status == 500 and headers["connection"] == "close" and rest == b""
            assert server.stats.handler_errors == 4

    aio(scenario())


def test_handler_exception_after_writing_aborts(aio: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(GET % b"/async-late-boom")
            received = b""
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await read_response(reader)
                received = await reader.read()
            assert b"500" not in received
            writer.close()

    aio(scenario())


# -- server ----------------------------------------------------------------------------------------------


def test_start_server_on_given_socket_and_counters(aio: Run) -> None:
    async def scenario() -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        server = await start_server(Echo(), LIMITS, sock=sock)
        try:
            assert server.port == sock.getsockname()[1]
            await exchange(server.port, GET % b"/1" + LAST % b"/2", 2)
            await rejected(server.port, b"GET / HTTP/1.1\r\n\r\n")
            assert server.stats.connections_opened == 2 and server.stats.requests == 2
            assert server.stats.rejected[400] == 1
        finally:
            await server.close()

    aio(scenario())


# -- the version a kept-alive request is read as, against llhttp's own answer ---------------------------


class _Recorder:
    """A transport that keeps what the server writes (an in-process connection)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Reference:
    """What llhttp itself says of a head: its version and keep-alive, asked at the end of the head."""

    def __init__(self) -> None:
        self.parser = http1._strict_parser(self)
        self.seen: tuple[str, bool] | None = None

    def on_headers_complete(self) -> None:
        self.seen = (self.parser.get_http_version(), self.parser.should_keep_alive())


_FIELDS = st.sampled_from(
    [
        b"Connection: keep-alive\r\n",
        b"Connection: close\r\n",
        b"connection: Upgrade, Keep-Alive\r\n",
        b"Proxy-Connection: keep-alive\r\n",
        b"Keep-Alive: 5\r\n",
        b"X-A: 1\r\n",
        b"Content-Length: 0\r\n",
    ]
)


_VERSIONS = st.one_of(
    st.sampled_from([(1, 0), (1, 1), (0, 9), (2, 0), (1, 2), (3, 1)]),
    st.tuples(st.integers(0, 9), st.integers(0, 9)),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"GET", b"HEAD", b"POST"]), _VERSIONS, st.booleans(), st.lists(_FIELDS, max_size=3))
def test_a_request_is_read_as_the_version_llhttp_reports(
    method: bytes, version: tuple[int, int], host: bool, fields: list[bytes]
) -> None:
    """Whatever the version and the fields that keep a connection alive, the handler sees the
    version and keep-alive llhttp reports (the server skips asking for the version when it can tell),
    and a version other than 1.0 and 1.1 never reaches the handler."""
    head = b"%b / HTTP/%d.%d\r\n%b%b\r\n" % (
        method,
        *version,
        b"Host: a\r\n" if host else b"",
        b"".join(fields),
    )
    reference = _Reference()
    try:
        reference.parser.feed_data(head)
    except httptools.HttpParserError:
        reference.seen = None
    loop = asyncio.new_event_loop()
    try:
        calls: list[Request] = []

        def handler(req: Request, conn: Connection) -> None:
            calls.append(req)
            conn.respond(b"HTTP/1.1 204 No Content\r\n\r\n", req.keep_alive)

        conn = Connection(HttpServer(handler, LIMITS, loop))
        transport = _Recorder()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(head)
    finally:
        loop.close()
    if reference.seen is None or reference.seen[0] not in ("1.0", "1.1"):
        assert calls == []
        return
    if calls:
        assert (calls[0].http_version, calls[0].keep_alive) == reference.seen
    else:
        assert transport.data.startswith(b"HTTP/1.1 400 ")  # HTTP/1.1 without Host
        assert reference.seen[0] == "1.1" and not host
