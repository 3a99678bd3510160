"""A miss's answer and its fill, end to end over loopback, where decision 0008's update 12 cut
them: the answer's head built in C (``_answerhead``), the purge check a fill skips when no purge
was accepted since its fetch began, and the zone's settings a fill reads from ``ZoneRuntime``."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ZONE_ID, Route, Stack
from edgecache.config import Zone
from edgecache.edge._answerhead import answer_head
from rawhttp import raw_origin, read_request

pieces = st.binary(max_size=300)


@given(pieces, pieces, pieces, st.integers(min_value=0, max_value=2**63 - 1), pieces)
def test_answer_head_is_the_pieces_with_the_length_line_between(
    status_line: bytes, head: bytes, fields: bytes, length: int, connection: bytes
) -> None:
    want = status_line + head + fields + b"Content-Length: %d\r\n" % length + connection + b"\r\n"
    assert answer_head(status_line, head, fields, length, connection) == want


def test_answer_head_refuses_what_is_not_a_head() -> None:
    with pytest.raises(TypeError):
        answer_head(b"", "text", b"", 1, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        answer_head(b"", b"", b"", 1.0, b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        answer_head(b"", b"", b"", -1, b"")
    with pytest.raises(TypeError):
        answer_head(b"", b"", b"", 1)  # type: ignore[call-arg]


@pytest.mark.parametrize("length", [0, 9, 65_000, 200_000])
def test_a_misss_answer_carries_the_origins_length_and_body(stack: Stack, length: int) -> None:
    """Bodies framed by a Content-Length of one to six digits, one piece or the head and the body
    apart (over 64 KiB): the client gets the origin's length, the body, and the miss's fields."""
    body = bytes(i % 251 for i in range(length))
    response = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % length + body

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(response)

    with (
        raw_origin(handler) as origin,
        stack.origin_at(origin.url),
        socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /miss-answer/%d HTTP/1.1\r\nHost: test.example\r\n\r\n" % length)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < length:
            chunk = sock.recv(65536)
            assert chunk, raw[:500]
            raw += chunk
    head, _, got = raw.partition(b"\r\n\r\n")
    assert got == body
    lines = head.split(b"\r\n")
    assert lines[:2] == [b"HTTP/1.1 200 OK", b"Cache-Control: max-age=60"]
    assert b"CF-Cache-Status: MISS" in lines
    assert lines[-1] == b"Content-Length: %d" % length
    assert sum(line.lower().startswith(b"content-length:") for line in lines) == 1


def purge_files(stack: Stack, *paths: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.control_port, timeout=20)
    try:
        body = json.dumps({"files": [f"http://test.example{p}" for p in paths]})
        headers = {"Authorization": f"Bearer {stack.token()}", "Content-Type": "application/json"}
        conn.request("POST", f"/client/v4/zones/{ZONE_ID}/purge_cache", body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("covered", [True, False])
def test_a_purge_accepted_during_a_fetch_keeps_only_what_it_covers_out(stack: Stack, covered: bool) -> None:
    """A purge accepted while a fill's origin is still answering: when it names the fill's URL, the
    fill is answered but not stored (the next request fetches again); when it names another URL
    of the zone, the fill is stored (the next request is a hit)."""
    path = f"/miss-answer/purged-during-the-fetch-{covered}"
    stack.origin.routes[path] = Route(body=b"from the origin", delay=1.0)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.request, path)
        deadline = time.monotonic() + 10
        while stack.origin.hits[path] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        purge_files(stack, path if covered else "/miss-answer/another-url")
        status, headers, body = answer.result(timeout=20)
    assert (status, body, headers["cf-cache-status"]) == (200, b"from the origin", "MISS")
    status, headers, body = stack.request(path)
    assert (status, body) == (200, b"from the origin")
    assert headers["cf-cache-status"] == ("MISS" if covered else "HIT")
    assert stack.origin.hits[path] == (2 if covered else 1)


OWN_ZONE = Zone(
    id="0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    name="own.example",
    hostnames=("own.example",),
    origin="http://127.0.0.1:1",
    cache_set_cookie=True,
    heuristic_fraction=0.5,
    heuristic_max=30.0,
)


@pytest.fixture(scope="module")
def own() -> Iterator[Stack]:
    s = Stack(extra_zones=(OWN_ZONE,))
    try:
        yield s
    finally:
        s.close()


def ttl(headers: dict[str, str]) -> int:
    return int(headers["cache-status"].rsplit("ttl=", 1)[1].split(";")[0])


def test_a_fill_follows_its_zones_own_storage_settings(own: Stack) -> None:
    """A zone that stores Set-Cookie responses and caps heuristic freshness at 30 s, next to the
    defaults (no Set-Cookie stored, 10% of the Last-Modified age up to a day)."""
    own.origin.routes["/set-cookie"] = Route(
        body=b"with a cookie", headers={"Cache-Control": "public, max-age=60", "Set-Cookie": "s=1"}
    )
    modified = formatdate(time.time() - 10 * 86400, usegmt=True)
    own.origin.routes["/heuristic"] = Route(body=b"no lifetime given", headers={"Last-Modified": modified})
    for host, stored_cookie, lifetime in (
        ("own.example", True, (25, 30)),
        ("test.example", False, (86000, 86400)),
    ):
        for path in ("/set-cookie", "/heuristic"):
            own.request(path, host=host)
        _, headers, _ = own.request("/set-cookie", host=host)
        assert headers["cf-cache-status"] == ("HIT" if stored_cookie else "BYPASS"), host
        _, headers, _ = own.request("/heuristic", host=host)
        assert headers["cf-cache-status"] == "HIT", host
        assert lifetime[0] <= ttl(headers) <= lifetime[1], (host, headers["cache-status"])
