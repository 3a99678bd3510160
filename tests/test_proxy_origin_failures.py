"""The node in front of origins that go away or misbehave, and origins that send 1xx responses.

End to end: a real node (``conftest.Stack``), clients over loopback, and raw-socket origins
(``rawhttp.py``) that refuse, reset, stall or frame badly. What a user would notice: a stale copy
when the response or the zone allows one, a clean 502/504 otherwise, a truncated body never
presented as complete (the client's connection is closed instead) and never stored, and interim
responses relayed without leaking into what is cached.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.edge import origin_conn
from rawhttp import exchange, raw_origin, read_request, reset

HandlerT = Callable[[socket.socket, int], None]


@contextlib.contextmanager
def zone_stale_if_error(stack: Stack, seconds: float) -> Iterator[None]:
    zone = stack.node.zones.by_id[ZONE_ID]
    original = zone.config
    object.__setattr__(zone, "config", original.model_copy(update={"stale_if_error": seconds}))
    try:
        yield
    finally:
        object.__setattr__(zone, "config", original)


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def reset_mid_headers(sock: socket.socket, n: int) -> None:
    read_request(sock)
    sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Le")
    time.sleep(0.05)
    reset(sock)


def silent(sock: socket.socket, n: int) -> None:
    read_request(sock)
    time.sleep(4.0)


def stored(stack: Stack, path: str) -> bool:
    return stack.call(lambda: stack.node.store.peek(f"http://test.example{path}")) is not None


GONE: dict[str, HandlerT | None] = {
    "refused": None,
    "reset mid-headers": reset_mid_headers,
    "timeout": silent,
}


def _with_gone_origin(stack: Stack, kind: str, path: str) -> tuple[int, dict[str, str], bytes]:
    handler = GONE[kind]
    if handler is None:
        with stack.origin_at(refused_url()):
            return stack.request(path)
    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        return stack.request(path)


@pytest.mark.parametrize("kind", list(GONE))
def test_origin_gone_serves_stale_when_the_response_allows(stack: Stack, kind: str) -> None:
    path = f"/gone-sie-{kind.replace(' ', '-')}"
    stack.origin.routes[path] = Route(body=b"kept", headers={"Cache-Control": "max-age=1, stale-if-error=60"})
    stack.request(path)
    time.sleep(1.1)
    status, headers, body = _with_gone_origin(stack, kind, path)
    assert (status, body, headers["cf-cache-status"]) == (200, b"kept", "STALE")


@pytest.mark.parametrize("kind", list(GONE))
def test_origin_gone_serves_stale_when_the_zone_allows(stack: Stack, kind: str) -> None:
    path = f"/gone-zone-{kind.replace(' ', '-')}"
    stack.origin.routes[path] = Route(body=b"kept", headers={"Cache-Control": "max-age=1"})
    stack.request(path)
    time.sleep(1.1)
    expected = 504 if kind == "timeout" else 502
    status, _, _ = _with_gone_origin(stack, kind, path)
    assert status == expected  # the zone allows nothing by default
    with zone_stale_if_error(stack, 600):
        status, headers, body = _with_gone_origin(stack, kind, path)
    assert (status, body, headers["cf-cache-status"]) == (200, b"kept", "STALE")


def test_zone_allowance_never_overrides_must_revalidate_or_no_cache(stack: Stack) -> None:
    paths = {
        "/gone-mr": "max-age=1, must-revalidate",
        "/gone-nc": "no-cache",
        "/gone-nc-sie": "max-age=1, no-cache, stale-if-error=600",  # RFC 9111 §4.2.4: no-cache wins
    }
    for path, cc in paths.items():
        stack.origin.routes[path] = Route(body=b"kept", headers={"Cache-Control": cc})
        stack.request(path)
    time.sleep(1.1)
    with zone_stale_if_error(stack, 600), stack.origin_at(refused_url()):
        for path in paths:
            assert stack.request(path)[0] == 502, path


@pytest.mark.parametrize("kind", list(GONE))
def test_origin_gone_without_a_stored_copy_is_a_clean_error(stack: Stack, kind: str) -> None:
    status, headers, _ = _with_gone_origin(stack, kind, f"/gone-cold-{kind.replace(' ', '-')}")
    assert status == (504 if kind == "timeout" else 502)
    assert headers["content-type"].startswith("text/plain")


def early_close(head: bytes, body: bytes) -> HandlerT:
    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(head + body)
        time.sleep(0.1)

    return handler


TRUNCATED = {
    "content-length": early_close(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n", b"p" * 300
    ),
    "chunked": early_close(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"12c\r\n" + b"p" * 300 + b"\r\n",
    ),
}


@pytest.mark.parametrize("framing", list(TRUNCATED))
def test_early_close_mid_body_closes_the_client_and_stores_nothing(stack: Stack, framing: str) -> None:
    path = f"/truncated-{framing}"
    with raw_origin(TRUNCATED[framing]) as origin, stack.origin_at(origin.url):
        raw = exchange(stack.node.data_port, f"GET {path} HTTP/1.1\r\nHost: test.example\r\n\r\n".encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        if framing == "content-length":
            assert b"Content-Length: 1000" in head and len(body) < 1000
        else:
            assert not body.endswith(b"0\r\n\r\n")
        assert not stored(stack, path)
        conn = http.client.HTTPConnection("127.0.0.1", stack.node.data_port, timeout=10)
        conn.request("GET", path, headers={"Host": "test.example"})
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
        conn.close()
        assert origin.connections == 2  # the second client was not answered from a stored partial


def test_a_silent_origin_mid_body_closes_the_client_after_the_read_timeout(stack: Stack) -> None:
    def stall(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nabc")
        time.sleep(5)

    with raw_origin(stall) as origin, stack.origin_at(origin.url):
        started = time.monotonic()
        raw = exchange(stack.node.data_port, b"GET /stalled HTTP/1.1\r\nHost: test.example\r\n\r\n")
        assert 1.5 < time.monotonic() - started < 4.5
        assert raw.endswith(b"\r\n\r\nabc")
        assert not stored(stack, "/stalled")


BAD = {
    "cl and te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbad!\r\n0\r\n\r\n"
    ),
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbad!!",
    "te gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbad!",
    "bare lf": b"HTTP/1.1 200 OK\nContent-Length: 4\n\nbad!",
    "not http": b"220 smtp.example ESMTP\r\n",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_framing_is_a_502_and_never_cached(stack: Stack, kind: str) -> None:
    path = f"/bad-{kind.replace(' ', '-')}"

    def handler(sock: socket.socket, n: int) -> None:
        read_request(sock)
        sock.sendall(BAD[kind].replace(b"200 OK\r\n", b"200 OK\r\nCache-Control: max-age=60\r\n"))
        time.sleep(0.5)

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        status, _, body = stack.request(path)
        assert status == 502 and b"bad!" not in body
        assert not stored(stack, path)


def test_excess_body_bytes_are_not_served_and_the_connection_is_not_reused(stack: Stack) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nokSMUGGLED")

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        bodies = [stack.request("/excess")[2] for _ in range(3)]
        assert bodies == [b"ok"] * 3
        assert origin.connections == 3


def origin_metrics(stack: Stack) -> dict[str, float]:
    url = f"http://127.0.0.1:{stack.node.control_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("edgecache_origin_") and name.endswith("_total")
    }


def test_misses_reuse_one_origin_connection_and_metrics_show_it(stack: Stack) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nfill")

    before = origin_metrics(stack)
    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        for i in range(5):
            assert stack.request(f"/reuse-{i}")[2] == b"fill"
        assert origin.connections == 1
        assert stored(stack, "/reuse-0")  # what the "never stored" checks look up does exist
    after = origin_metrics(stack)
    assert after["edgecache_origin_requests_total"] - before["edgecache_origin_requests_total"] == 5
    assert after["edgecache_origin_connections_total"] - before["edgecache_origin_connections_total"] == 1
    assert after["edgecache_origin_retries_total"] == before["edgecache_origin_retries_total"]


def test_a_miss_on_a_connection_the_origin_closed_is_retried_once_on_a_new_one(stack: Stack) -> None:
    """The origin closes its first connection on receiving a second request, without a byte of
    answer (a keep-alive timeout racing our reuse): that miss is re-sent, once, on a new connection,
    and the client never sees the failure."""
    fill = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nfill"

    def handler(sock: socket.socket, n: int) -> None:
        if read_request(sock) is None:
            return
        if n == 1:
            sock.sendall(fill)
            read_request(sock)
            sock.close()
            return
        sock.sendall(fill)
        while read_request(sock) is not None:
            sock.sendall(fill)

    before = origin_metrics(stack)
    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        assert stack.request("/closing-0")[2] == b"fill"
        status, headers, body = stack.request("/closing-1")
        assert (status, body, headers["cf-cache-status"]) == (200, b"fill", "MISS")
        assert origin.connections == 2
        assert stored(stack, "/closing-1")
    after = origin_metrics(stack)
    assert after["edgecache_origin_retries_total"] - before["edgecache_origin_retries_total"] == 1
    assert after["edgecache_origin_requests_total"] - before["edgecache_origin_requests_total"] == 3


# -- 1xx --------------------------------------------------------------------------------------------

EARLY_HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Interim: yes\r\n\r\n"
    b"HTTP/1.1 102 Processing\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal"
)


def test_early_hints_are_relayed_never_stored_and_never_merged(stack: Stack) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(EARLY_HINTS)

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        raw = exchange(
            stack.node.data_port, b"GET /hints HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n"
        )
        hints, _, rest = raw.partition(b"\r\n\r\n")
        processing, _, final = rest.partition(b"\r\n\r\n")
        assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Interim: yes"
        assert processing == b"HTTP/1.1 102 Processing"
        assert final.startswith(b"HTTP/1.1 200 OK\r\n") and final.endswith(b"\r\n\r\nfinal")
        assert b"X-Interim" not in final and b"Link" not in final
        status, headers, body = stack.request("/hints")
        assert (status, headers["cf-cache-status"], body) == (200, "HIT", b"final")
        assert "x-interim" not in headers and "link" not in headers
        assert origin.connections == 1


def test_interim_responses_are_not_sent_to_http10_clients(stack: Stack) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(EARLY_HINTS.replace(b"max-age=60", b"no-store"))

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        raw = exchange(stack.node.data_port, b"GET /hints10 HTTP/1.0\r\nHost: test.example\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"final")


def test_100_continue_from_the_origin_reaches_only_clients_that_expect_it(stack: Stack) -> None:
    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated"
            )

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        plain = exchange(
            stack.node.data_port,
            b"POST /upload HTTP/1.1\r\nHost: test.example\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\ndata",
        )
        assert plain.startswith(b"HTTP/1.1 201 Created\r\n") and plain.endswith(b"created")
        expecting = exchange(
            stack.node.data_port,
            b"POST /upload HTTP/1.1\r\nHost: test.example\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\ndata",
        )
        # The edge's own 100 (sent before it read the body), then the origin's, then the answer.
        assert expecting.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
        assert b"HTTP/1.1 201 Created\r\n" in expecting and expecting.endswith(b"created")


# -- blank lines before a head, and a head over several reads ---------------------------------------

FINAL = (
    b"HTTP/1.1 200 a:b\r\nX-Origin: yes\r\nCache-Control: %s\r\nVary: X-Lang\r\nContent-Length: 5\r\n\r\n"
    b"final"
)


@pytest.mark.parametrize(
    "before",
    [
        b"\r\n",
        b"\r\n\r\n",
        b"\n\r\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n\n\r\r\n",
    ],
)
def test_blank_lines_before_a_head_are_skipped_and_its_fields_kept(stack: Stack, before: bytes) -> None:
    """llhttp skips CR and LF before a status line (before the first head and after an interim
    one); the head after them is read whole: its fields reach the client and decide storage."""

    def handler(sock: socket.socket, n: int) -> None:
        while (request := read_request(sock)) is not None:
            policy = b"no-store" if b" /blank-no-store-" in request else b"max-age=60"
            sock.sendall(before + FINAL % policy)

    tag = before.hex()
    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        for path, storable in ((f"/blank-no-store-{tag}", False), (f"/blank-kept-{tag}", True)):
            status, headers, body = stack.request(path)
            assert (status, body, headers["x-origin"], headers["vary"]) == (200, b"final", "yes", "X-Lang")
            assert headers["cache-control"] == ("max-age=60" if storable else "no-store")
            again = stack.request(path)[1]
            assert (again["cf-cache-status"], again["x-origin"]) == ("HIT" if storable else "BYPASS", "yes")


def send_in_pieces(pieces: list[bytes]) -> HandlerT:
    """An origin writing each answer in ``pieces``, a pause between them: the node reads each
    piece on its own."""

    def handler(sock: socket.socket, n: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while read_request(sock) is not None:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.05)

    return handler


SPLIT = (
    b"HTTP/1.1 100 Continue\r\n\r",  # inside the CRLF that ends the interim head
    b"\n",  # between the interim head and the blank line after it
    b"\r",  # inside that blank line
    b"\nHTTP/1.1 200 OK\r\nX-Ori",  # inside a name
    b"gin: yes\r\nConnection: X-Private\r",  # inside a field's CRLF
    b"\nX-Private: secret\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r",  # inside the end
    b"\n01234",
    b"56789",
)


@pytest.mark.parametrize("whole", [False, True], ids=["pieces", "one-read"])
def test_a_head_over_several_reads_is_read_as_in_one(stack: Stack, whole: bool) -> None:
    """A final head after an interim one, cut inside CRLFs, a name and the blank line between the
    two heads: the client and the stored copy get the same fields and body as from one read."""
    pieces = [b"".join(SPLIT)] if whole else list(SPLIT)
    path = f"/pieces-{whole}"
    with raw_origin(send_in_pieces(pieces)) as origin, stack.origin_at(origin.url):
        for cf in ("MISS", "HIT"):
            status, headers, body = stack.request(path)
            assert (status, body, headers["cf-cache-status"]) == (200, b"0123456789", cf)
            assert (headers["x-origin"], headers["cache-control"], headers["content-length"]) == (
                "yes",
                "max-age=60",
                "10",
            )
            assert "x-private" not in headers and "connection" not in headers


def test_blank_lines_after_an_interim_head_are_not_counted_as_fields(stack: Stack) -> None:
    """A head of exactly 256 fields, read after an interim head and blank lines, in two reads (the
    second holding only its end): the lines counted before it is complete are its own."""
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(254))
    pieces = [
        b"HTTP/1.1 100 Continue\r\n\r\n\r\n\r\n\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n" + fields + b"Content-Length: 2\r\n",
        b"\r\nok",
    ]
    with raw_origin(send_in_pieces(pieces)) as origin, stack.origin_at(origin.url):
        raw = exchange(
            stack.node.data_port,
            b"GET /many-after-interim HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n",
        )
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"ok"
        assert b"\r\nX-253: v\r\n" in head + b"\r\n" and b"\r\nCache-Control: max-age=60\r\n" in head


def test_a_head_the_c_reader_refuses_is_a_502_without_a_traceback(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the C reader ever disagree with llhttp on a head (no head llhttp accepts does so
    now: the reader's refusal is injected here), the exchange fails as any malformed response does:
    a 502, and no "callback failed" error with a traceback, which an origin could cause on every
    request."""

    def refuse(buf: bytes | bytearray, start: int) -> None:
        raise ValueError("not a complete response head")

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nbad!")

    monkeypatch.setattr(origin_conn, "scan_head", refuse)
    # The head would be read without llhttp (origin_conn's rule 9): this is about the llhttp path.
    monkeypatch.setattr(origin_conn, "read_response", lambda read: None)
    with raw_origin(handler) as origin, stack.origin_at(origin.url), caplog.at_level(logging.INFO):
        status, _, body = stack.request("/refused-head")
        assert status == 502 and b"bad!" not in body
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not stored(stack, "/refused-head")


def test_a_fill_sends_the_same_request_bytes_on_a_kept_alive_connection_as_on_a_new_one(
    stack: Stack,
) -> None:
    """The first miss opens the origin connection (its request is encoded by ``encode_request``);
    the next ones are sent at once on it (``OriginClient.send_idle``, which frames a fill's
    remembered fields itself): the bytes differ by the path alone (as the key normalises it)."""
    seen: list[bytes] = []

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock, seen) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nfill")

    paths = {b"/wire-a": b"/wire-a", b"/wire-b?q=1": b"/wire-b?q=1", b"/wire-%7Ec/./d": b"/wire-~c/d"}
    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        for path in paths:
            fields = b"Host: test.example\r\nUser-Agent: wire\r\nConnection: close\r\n"
            raw = exchange(stack.node.data_port, b"GET %b HTTP/1.1\r\n%b\r\n" % (path, fields))
            assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\nfill")
        assert origin.connections == 1
    first = seen[0]
    assert first.startswith(b"GET /wire-a HTTP/1.1\r\n") and b"user-agent: wire\r\n" in first
    assert seen == [first.replace(b"/wire-a", sent, 1) for sent in paths.values()]


@pytest.mark.parametrize(
    ("request_line", "connection"),
    [
        (b"GET /answer-11 HTTP/1.1\r\nHost: test.example\r\n", b""),
        (
            b"GET /answer-11c HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n",
            b"Connection: close\r\n",
        ),
        (b"GET /answer-10 HTTP/1.0\r\nHost: test.example\r\n", b"Connection: close\r\n"),
        (
            b"GET /answer-10k HTTP/1.0\r\nHost: test.example\r\nConnection: keep-alive\r\n",
            b"Connection: keep-alive\r\n",
        ),
    ],
)
def test_a_small_miss_is_answered_with_its_length_and_connection_field(
    stack: Stack, request_line: bytes, connection: bytes
) -> None:
    """A miss whose whole response comes in one read is answered from the fetch's callbacks, head
    and body in one piece: framed by the origin's Content-Length, with the client's connection
    field (none for a kept-alive HTTP/1.1 client)."""

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nfill")

    port = stack.node.data_port
    with (
        raw_origin(handler) as origin,
        stack.origin_at(origin.url),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request_line + b"\r\n")
        raw = b""
        while not raw.endswith(b"fill"):
            chunk = sock.recv(65536)
            assert chunk, raw
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"fill"
    assert head.startswith(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n")
    assert b"\r\nCF-Cache-Status: MISS\r\n" in head
    assert (head + b"\r\n").endswith(b"\r\nContent-Length: 4\r\n" + connection)
    assert head.count(b"Connection:") == (1 if connection else 0)
