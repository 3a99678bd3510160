"""The node in front of real origins: nginx over HTTP and HTTPS (a certificate made here), and the
built-in demo origin. Misses, hits, streaming of a large body, keep-alive reuse seen from the
origin's side (nginx's ``$connection`` number), gzip'd chunked bodies stored as sent."""

from __future__ import annotations

import gzip
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import self_signed
from conftest import Stack
from edgecache.config import Limits
from edgecache.demo import origin as demo_origin
from nginx import NginxOrigin

SMALL = b"s" * 1024
LARGE = bytes(range(256)) * 4096 * 4  # 4 MiB
TEXT = b"the quick brown fox jumps over the lazy dog\n" * 2000
FILES = {"small": SMALL, "large": LARGE, "text": TEXT, "a": b"A", "b": b"B", "c": b"C"}


@pytest.fixture(scope="module")
def nginx_origin() -> Iterator[NginxOrigin]:
    origin = NginxOrigin(FILES)
    try:
        yield origin
    finally:
        origin.stop()


def test_misses_then_hits_from_nginx(stack: Stack, nginx_origin: NginxOrigin) -> None:
    with stack.origin_at(nginx_origin.url):
        for path, body in (("/small", SMALL), ("/large", LARGE)):
            status, headers, got = stack.request(path)
            assert (status, headers["cf-cache-status"], got) == (200, "MISS", body)
            status, headers, got = stack.request(path)
            assert (status, headers["cf-cache-status"], got) == (200, "HIT", body)
            assert "cache-tag" not in headers
        status, headers, _ = stack.request("/missing")
        assert status == 404


def test_nginx_sees_one_keepalive_connection_for_sequential_misses(
    stack: Stack, nginx_origin: NginxOrigin
) -> None:
    with stack.origin_at(nginx_origin.url):
        connections = {stack.request(f"/{name}")[1]["x-connection"] for name in ("a", "b", "c")}
    assert len(connections) == 1


def test_gzip_chunked_body_from_nginx_is_stored_as_sent(stack: Stack, nginx_origin: NginxOrigin) -> None:
    with stack.origin_at(nginx_origin.url):
        conn = http.client.HTTPConnection("127.0.0.1", stack.node.data_port, timeout=20)
        conn.request("GET", "/text", headers={"Host": "test.example", "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.getheader("Content-Encoding") == "gzip"
        assert gzip.decompress(body) == TEXT
        _, headers, again = stack.request("/text", headers={"Accept-Encoding": "gzip"})
        assert headers["cf-cache-status"] == "HIT" and gzip.decompress(again) == TEXT
        _, headers, plain = stack.request("/text")
        assert plain == TEXT and "content-encoding" not in headers  # Vary: Accept-Encoding honoured


def test_https_nginx_origin_trusted_through_origin_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    origin = NginxOrigin(FILES, cert=cert, key=key)
    stack = Stack(limits=Limits(origin_ca_file=cert, origin_first_byte_timeout=5.0))
    try:
        with stack.origin_at(origin.url):
            for _ in range(2):
                assert stack.request("/large")[2] == LARGE
            _, first, _ = stack.request("/a")
            _, second, _ = stack.request("/b")
            assert first["x-connection"] == second["x-connection"]
            assert first["cf-cache-status"] == "MISS"
    finally:
        stack.close()
        origin.stop()


def test_demo_origin_through_the_node(stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = stack.run(demo_origin.start("127.0.0.1", port))
    try:
        with stack.origin_at(f"http://127.0.0.1:{port}"):
            for path in demo_origin.DEMO_PATHS:
                if path == "/slow":
                    continue
                status, headers, body = stack.request(path)
                assert status == 200 and body, path
            status, headers, body = stack.request("/large")
            assert (headers["cf-cache-status"], len(body)) == ("HIT", demo_origin.LARGE_BYTES)
            status, headers, _ = stack.request("/products/2", method="POST", body=b"x")
            assert (status, headers["cf-cache-status"]) == (200, "DYNAMIC")
    finally:
        stack.run(runner.cleanup())
