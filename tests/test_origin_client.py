"""The origin client against real sockets: keep-alive reuse, the retry rule, strict framing,
timeouts, back-pressure and HTTPS with a certificate made here. Each test runs on uvloop, as the
node does; the origins are raw sockets (``rawhttp.py``) or an asyncio TLS server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from certs import self_signed
from edgecache.app import origin_client
from edgecache.config import Limits
from edgecache.edge.origin import (
    OriginClient,
    OriginError,
    OriginInvalid,
    OriginResponse,
    OriginTimeout,
    OriginUnreachable,
)
from rawhttp import RawOrigin, raw_origin, read_request, reset

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return uvloop.run(coro)


def client(**kw: Any) -> OriginClient:
    options: dict[str, Any] = {"first_byte_timeout": 2.0, **kw}
    return OriginClient(2.0, options.pop("read_timeout", 2.0), **options)


async def body_of(resp: OriginResponse) -> bytes:
    return b"".join([c async for c in resp.chunks()])


async def get(c: OriginClient, origin: RawOrigin, path: str = "/", method: str = "GET") -> tuple[int, bytes]:
    resp = await c.request(method, origin.url + path, {"host": "o.example"})
    return resp.status, await body_of(resp)


def serve_each(responses: list[bytes]) -> Any:
    """A keep-alive handler answering the connection's requests with ``responses`` in turn."""

    def handler(sock: socket.socket, n: int) -> None:
        for response in responses:
            if read_request(sock) is None:
                return
            sock.sendall(response)
        time.sleep(0.5)

    return handler


def test_sequential_requests_share_one_keepalive_connection() -> None:
    with raw_origin(serve_each([OK] * 5)) as origin:

        async def main() -> list[tuple[int, bytes]]:
            c = client()
            try:
                return [await get(c, origin) for _ in range(5)]
            finally:
                await c.close()

        assert run(main()) == [(200, b"hello")] * 5
        assert origin.connections == 1


def test_connection_close_and_http10_are_not_reused() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
    ]

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(answers[min(n, 3) - 1])

    with raw_origin(handler) as origin:

        async def main() -> list[bytes]:
            c = client()
            try:
                return [(await get(c, origin))[1] for _ in range(4)]
            finally:
                await c.close()

        assert run(main()) == [b"a", b"b", b"c", b"c"]
        assert origin.connections == 3


def test_idle_connections_expire_after_the_keepalive_timeout() -> None:
    with raw_origin(serve_each([OK] * 2)) as origin:

        async def main() -> None:
            c = client(idle_timeout=0.2)
            try:
                await get(c, origin)
                await asyncio.sleep(0.4)
                await get(c, origin)
            finally:
                await c.close()

        run(main())
        assert origin.connections == 2


def test_get_is_retried_once_when_a_reused_connection_closes_unanswered() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(OK)
        if n == 1:
            read_request(sock)  # the origin's keep-alive ends as our second request arrives
            return
        time.sleep(0.5)

    with raw_origin(handler) as origin:

        async def main() -> tuple[list[tuple[int, bytes]], int]:
            c = client()
            try:
                return [await get(c, origin), await get(c, origin)], c.stats.retries
            finally:
                await c.close()

        results, retries = run(main())
        assert results == [(200, b"hello")] * 2
        assert retries == 1 and origin.connections == 2


def test_post_is_never_retried_and_nothing_is_retried_after_a_response_byte() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(OK)
        if read_request(sock) is not None and n == 2:
            sock.sendall(b"HTTP/1.1 200")  # part of a status line, then gone
        time.sleep(0.1)

    with raw_origin(handler) as origin:

        async def main() -> list[str]:
            c = client()
            out = []
            try:
                await get(c, origin, method="POST")
                with pytest.raises(OriginUnreachable) as post:
                    await get(c, origin, method="POST")
                out.append(str(post.value))
                await get(c, origin)
                with pytest.raises(OriginUnreachable) as partial:
                    await get(c, origin)
                out.append(str(partial.value))
                assert c.stats.retries == 0
            finally:
                await c.close()
            return out

        errors = run(main())
        assert all("closed" in e for e in errors)
        assert origin.connections == 2


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            "Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 1\n\na", "CR"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 1\r\n\r\na", "whitespace"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", "101"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", "head over"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 256 + b"Content-Length: 0\r\n\r\n", "over 256 fields"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed"),
        (b"HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n", "invalid status code 600"),
        (b"HTTP/1.1 099 Early\r\n\r\n", "invalid status code 99"),
    ],
)
def test_malformed_framing_is_an_error_not_a_response(response: bytes, why: str) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(response)
        time.sleep(1.0)

    with raw_origin(handler) as origin:

        async def main() -> None:
            c = client()
            try:
                with pytest.raises(OriginInvalid, match=why):
                    await get(c, origin)
            finally:
                await c.close()

        run(main())


def test_a_head_at_the_limits_is_taken_and_trailer_fields_are_dropped() -> None:
    """256 fields are allowed (257 are not: ``test_malformed_framing_is_an_error_not_a_response``);
    a chunked body's trailer fields, however many, are neither part of the response's fields nor an
    error, and the connection is reused."""
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(255))
    answers = [
        b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        + b"X-Trailer: t\r\n" * 400
        + b"\r\n",
        OK,
    ]

    with raw_origin(serve_each(answers)) as origin:

        async def main() -> list[tuple[int, list[tuple[str, str]], bytes]]:
            c = client()
            try:
                out = []
                for _ in answers:
                    resp = await c.request("GET", origin.url + "/", {})
                    out.append((resp.status, resp.headers, await body_of(resp)))
                return out
            finally:
                await c.close()

        (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = run(main())
        assert (s1, len(h1), h1[0], h1[-1], b1) == (200, 256, ("X-0", "v"), ("Content-Length", "2"), b"ok")
        assert (s2, h2, b2) == (200, [("Transfer-Encoding", "chunked")], b"ok")
        assert (s3, h3, b3) == (200, [("Content-Length", "5")], b"hello")
        assert origin.connections == 1


def test_a_head_of_many_tiny_fields_fails_before_it_is_parsed_whole() -> None:
    """An origin sending 100,000 fields of five bytes gets the field-count error within the first
    slices of its head (``origin_conn._feed_head`` counts the incomplete head's lines), not the raw
    head limit's error after tens of thousands of lines."""
    head = b"HTTP/1.1 200 OK\r\n" + b"a:b\r\n" * 100_000

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        with contextlib.suppress(OSError):  # the client gives up on the head, as it should
            sock.sendall(head)
        time.sleep(1.0)

    with raw_origin(handler) as origin:

        async def main() -> None:
            c = client()
            try:
                with pytest.raises(OriginInvalid, match=r"head over 256 fields$"):
                    await get(c, origin)
            finally:
                await c.close()

        run(main())


def test_interim_heads_count_towards_the_head_limit() -> None:
    big = b"X-Big: " + b"a" * 40_000 + b"\r\n"

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 103 Early Hints\r\n" + big + b"\r\n")
        sock.sendall(b"HTTP/1.1 200 OK\r\n" + big + b"Content-Length: 2\r\n\r\nok")
        time.sleep(1.0)

    with raw_origin(handler) as origin:

        async def main() -> None:
            c = client()
            try:
                with pytest.raises(OriginInvalid, match="head over"):
                    await get(c, origin)
            finally:
                await c.close()

        run(main())


def test_early_close_mid_body_fails_the_body_for_both_framings() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n" + b"y" * 40 + b"\r\n",
    ]

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(answers[n - 1])
        time.sleep(0.1)

    with raw_origin(handler) as origin:

        async def main() -> list[bytes]:
            c = client()
            seen = []
            try:
                for _ in answers:
                    resp = await c.request("GET", origin.url + "/", {})
                    got = b""
                    with pytest.raises(OriginUnreachable, match="before the end of the body"):
                        async for chunk in resp.chunks():
                            got += chunk
                    seen.append(got)
            finally:
                await c.close()
            return seen

        assert run(main()) == [b"x" * 40, b"y" * 40]


def test_a_body_without_length_ends_with_the_close_and_the_connection_is_not_reused() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil")
        sock.sendall(b" close")

    with raw_origin(handler) as origin:

        async def main() -> list[tuple[int, bytes]]:
            c = client()
            try:
                return [await get(c, origin), await get(c, origin)]
            finally:
                await c.close()

        assert run(main()) == [(200, b"until close")] * 2
        assert origin.connections == 2


def test_a_reset_body_without_length_is_not_taken_as_complete() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\npartial")
        time.sleep(0.2)
        reset(sock)

    with raw_origin(handler) as origin:

        async def main() -> None:
            c = client()
            try:
                resp = await c.request("GET", origin.url + "/", {})
                with pytest.raises(OriginUnreachable):
                    await body_of(resp)
            finally:
                await c.close()

        run(main())


def test_bytes_after_a_complete_response_poison_the_connection() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
        if read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong")
        time.sleep(0.5)

    with raw_origin(handler) as origin:

        async def main() -> list[tuple[int, bytes]]:
            c = client()
            try:
                return [await get(c, origin), await get(c, origin)]
            finally:
                await c.close()

        assert run(main()) == [(200, b"ok"), (200, b"ok")]
        assert origin.connections == 2


def test_interim_responses_are_reported_and_their_fields_dropped() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        time.sleep(0.3)

    with raw_origin(handler) as origin:

        async def main() -> tuple[list[tuple[int, list[tuple[str, str]]]], OriginResponse, bytes]:
            c = client()
            interim: list[tuple[int, list[tuple[str, str]]]] = []
            try:
                resp = await c.request(
                    "GET", origin.url + "/", {}, on_interim=lambda s, f: interim.append((s, f))
                )
                return interim, resp, await body_of(resp)
            finally:
                await c.close()

        interim, resp, body = run(main())
        assert interim == [(103, [("Link", "</s.css>; rel=preload")]), (102, [])]
        assert (resp.status, resp.headers, body) == (200, [("Content-Length", "2")], b"ok")


def test_timeouts_connect_first_byte_slow_head_and_silent_body() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        if n == 1:
            time.sleep(1.5)  # no first byte
        elif n == 2:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n":
                sock.sendall(bytes([byte]))  # a head that trickles in
                time.sleep(0.05)
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            time.sleep(1.5)

    with raw_origin(handler) as origin:

        async def main() -> None:
            c = OriginClient(0.5, 0.5, first_byte_timeout=0.5)
            try:
                for _ in range(2):
                    started = time.monotonic()
                    with pytest.raises(OriginTimeout, match="no response head"):
                        await get(c, origin)
                    assert time.monotonic() - started < 1.2
                resp = await c.request("GET", origin.url + "/", {})
                with pytest.raises(OriginTimeout, match="mid-body"):
                    await body_of(resp)
                # A listener that never accepts: the SYN queue of a backlog-0 socket fills up.
                with socket.socket() as full:
                    full.bind(("127.0.0.1", 0))
                    full.listen(0)
                    stuck = []
                    for _ in range(8):
                        s = socket.socket()
                        s.setblocking(False)
                        s.connect_ex(full.getsockname())
                        stuck.append(s)
                    started = time.monotonic()
                    with pytest.raises(OriginError):
                        await c.request("GET", f"http://127.0.0.1:{full.getsockname()[1]}/", {})
                    assert time.monotonic() - started < 1.5
                    for s in stuck:
                        s.close()
            finally:
                await c.close()

        run(main())


def test_refused_connection_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        c = client()
        with pytest.raises(OriginUnreachable, match="unreachable"):
            await c.request("GET", f"http://127.0.0.1:{port}/", {})

    run(main())


def test_reading_pauses_while_the_reader_lags() -> None:
    size = 48 * 1024 * 1024
    sent = [0]

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"z" * 65536
        for _ in range(size // len(block)):
            sock.sendall(block)
            sent[0] += len(block)

    with raw_origin(handler) as origin:

        async def main() -> tuple[int, int]:
            c = client(read_timeout=5.0)
            try:
                resp = await c.request("GET", origin.url + "/", {})
                await asyncio.sleep(1.0)  # nobody reads
                while_idle = sent[0]
                return while_idle, len(await body_of(resp))
            finally:
                await c.close()

        while_idle, total = run(main())
        assert total == size
        assert while_idle < size // 2


def test_the_connection_bound_makes_requests_wait_for_a_free_connection() -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            time.sleep(0.2)
            sock.sendall(OK)

    with raw_origin(handler) as origin:

        async def main() -> list[tuple[int, bytes]]:
            c = client(max_connections=2)
            try:
                return list(await asyncio.gather(*(get(c, origin) for _ in range(6))))
            finally:
                await c.close()

        assert run(main()) == [(200, b"hello")] * 6
        assert origin.connections == 2


# -- HTTPS ------------------------------------------------------------------------------------------


class TlsOrigin:
    """An HTTPS origin on its own thread and loop, answering every request with ``body``."""

    def __init__(self, cert: Path, key: Path, body: bytes) -> None:
        self.body = body
        self.connections = 0
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(self.body), self.body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_https_origin_with_a_private_ca_and_keepalive(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    body = b"secret " * 10_000
    origin = TlsOrigin(cert, key, body)
    try:

        async def main() -> list[bytes]:
            c = origin_client(Limits(origin_ca_file=cert))
            try:
                out = []
                for _ in range(3):
                    resp = await c.request("GET", f"https://127.0.0.1:{origin.port}/x", {})
                    out.append(await body_of(resp))
                return out
            finally:
                await c.close()

        assert run(main()) == [body] * 3
        assert origin.connections == 1

        async def untrusted() -> None:
            c = client()
            with pytest.raises(OriginUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await c.request("GET", f"https://127.0.0.1:{origin.port}/x", {})

        run(untrusted())
    finally:
        origin.close()


@pytest.mark.parametrize("pieces", [1, 2], ids=["one-read", "head-over-two-reads"])
def test_a_response_keeps_only_its_head_for_headers(pieces: int) -> None:
    """``headers`` is made on demand from the final head's bytes: the response keeps those alone,
    not the interim heads and body bytes that came in the same reads (up to 128 KiB and more)."""
    head = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 100000\r\n\r\n"
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\r\n" + head + b"b" * 100_000
    cut = len(answer) - 100_010 if pieces == 2 else len(answer)

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(answer[:cut])
        time.sleep(0.05)
        sock.sendall(answer[cut:])
        time.sleep(0.5)

    with raw_origin(handler) as origin:

        async def main() -> tuple[int, list[tuple[str, str]], int]:
            c = client()
            try:
                resp = await c.request("GET", origin.url + "/", {})
                kept = len(resp._raw)
                return kept, resp.headers, len(await body_of(resp))
            finally:
                await c.close()

        kept, headers, size = run(main())
        assert kept <= len(head) + 2  # the blank line before it, at most
        assert (headers, size) == ([("X-A", "1"), ("Content-Length", "100000")], 100_000)


@pytest.mark.parametrize("origin", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://[::1"])
def test_an_origin_the_url_parser_refuses_is_unreachable_not_an_error_of_the_fill(origin: str) -> None:
    # A zone's configuration refuses these; the client must still fail the fill as an origin error
    # (a 502 the fetch reports), not with the parser's ValueError, which would end the fill's task
    # and leave its clients waiting.
    async def main() -> None:
        c = client()
        try:
            with pytest.raises(OriginUnreachable, match="not an http"):
                await c.request("GET", origin + "/x", {"host": "o.example"})
        finally:
            await c.close()

    run(main())
