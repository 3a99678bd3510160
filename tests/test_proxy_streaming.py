"""Coalescing, streaming, size limits, cache-key variants and metrics, end to end."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from conftest import Route, Stack
from edgecache.config import DiskStorage, Storage
from rawhttp import raw_origin, read_request


def test_concurrent_misses_cause_one_origin_fetch(stack: Stack) -> None:
    stack.origin.routes["/coalesce"] = Route(body=b"shared", delay=0.5)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: stack.request("/coalesce"), range(10)))
    assert all(status == 200 and body == b"shared" for status, _, body in results)
    assert stack.origin.hits["/coalesce"] == 1
    assert sum("collapsed" in h["cache-status"] for _, h, _ in results) >= 1


def test_pipelined_misses_are_answered_in_order_on_one_connection(stack: Stack) -> None:
    # A small miss is answered from the origin connection's callbacks, not from a task of the
    # client's (proxy.py, _miss): the client connection must still answer in the order asked,
    # each with its own object, whatever kind of answer each one is.
    stack.origin.routes["/pipe/a"] = Route(body=b"alpha")
    stack.origin.routes["/pipe/b"] = Route(body=b"beta", headers={"Cache-Control": "private"})
    stack.origin.routes["/pipe/c"] = Route(body=b"gamma")
    stack.origin.routes["/pipe/e"] = Route(status=500, body=b"broken", headers={})
    stack.origin.routes["/pipe/slow"] = Route(body=b"s" * 300_000, chunks=3, chunk_delay=0.1)
    asked = [
        ("GET", "/pipe/a"),
        ("GET", "/pipe/b"),
        ("HEAD", "/pipe/c"),
        ("GET", "/pipe/slow"),
        ("GET", "/pipe/a"),
        ("GET", "/pipe/e"),
        ("GET", "/pipe/c"),
    ]
    with socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=10) as sock:
        request = b"%s %s HTTP/1.1\r\nHost: test.example\r\n\r\n"
        sock.sendall(b"".join(request % (m.encode(), p.encode()) for m, p in asked))
        stream = sock.makefile("rb")
        answers = []
        for method, _ in asked:
            status = int(stream.readline().split()[1])
            fields = {}
            while (line := stream.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                fields[name.lower()] = value.strip()
            body = b"" if method == "HEAD" else stream.read(int(fields["content-length"]))
            answers.append((status, fields["cf-cache-status"], body))
    assert answers == [
        (200, "MISS", b"alpha"),
        (200, "BYPASS", b"beta"),
        (200, "MISS", b""),
        (200, "MISS", b"s" * 300_000),
        (200, "HIT", b"alpha"),
        (500, "BYPASS", b"broken"),
        (200, "HIT", b"gamma"),
    ]


def test_uncacheable_responses_are_not_shared_between_clients(stack: Stack) -> None:
    stack.origin.routes["/private-slow"] = Route(
        body=b"mine", delay=0.3, headers={"Cache-Control": "private"}
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: stack.request("/private-slow"), range(4)))
    assert all(status == 200 for status, _, _ in results)
    assert stack.origin.hits["/private-slow"] == 4


def test_large_objects_stream_to_the_client_while_being_stored(stack: Stack) -> None:
    body = bytes(range(256)) * 4096 * 4  # 4 MiB
    stack.origin.routes["/big"] = Route(body=body, chunks=8, chunk_delay=0.2)
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.data_port, timeout=20)
    started = time.monotonic()
    conn.request("GET", "/big", headers={"Host": "test.example"})
    resp = conn.getresponse()
    first = resp.read(65536)
    first_byte = time.monotonic() - started
    rest = resp.read()
    total = time.monotonic() - started
    conn.close()
    assert first + rest == body
    assert first_byte < 0.6 < 1.2 < total
    _, headers, again = stack.request("/big")
    assert headers["cf-cache-status"] == "HIT" and again == body


def test_objects_over_the_size_limit_stream_through_unstored_without_a_disk() -> None:
    # With a disk tier they are kept there in chunks instead (tests/test_disk_large.py).
    stack = Stack(storage=Storage(disk=DiskStorage(enabled=False)))
    try:
        body = b"z" * (9 * 1024 * 1024)
        for path, chunked in (("/huge", False), ("/huge-chunked", True)):
            stack.origin.routes[path] = Route(body=body, chunks=16, chunked=chunked)
            for _ in range(2):
                status, headers, got = stack.request(path)
                assert status == 200 and got == body
                assert headers["cf-cache-status"] in ("BYPASS", "MISS")
            assert stack.origin.hits[path] == 2
            assert stack.call(lambda p=path: stack.node.store.peek("http://test.example" + p)) is None
    finally:
        stack.close()


def test_a_slow_client_holds_back_the_origin_of_an_unstored_body(stack: Stack) -> None:
    """A body over the size limit is not stored, so the edge keeps only what its reader lags by:
    while the client reads nothing, the origin cannot send much beyond the sockets' buffers; once
    the client reads, the whole body arrives intact and the origin connection serves the next miss."""
    size = 32 * 1024 * 1024
    block = bytes(range(256)) * 256
    sent = [0]

    def handler(sock: socket.socket, n: int) -> None:
        while read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(block)):
                sock.sendall(block)
                sent[0] += len(block)

    with raw_origin(handler) as origin, stack.origin_at(origin.url):
        with socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=20) as client:
            client.sendall(b"GET /slow-reader HTTP/1.1\r\nHost: test.example\r\n\r\n")
            got = client.recv(65536)
            time.sleep(1.5)
            held_back = sent[0]
            while got.count(b"\r\n\r\n") == 0 or len(got) - got.index(b"\r\n\r\n") - 4 < size:
                chunk = client.recv(1 << 20)
                assert chunk, "the edge closed before the end of the body"
                got += chunk
        assert held_back < size * 3 // 4
        head, _, body = got.partition(b"\r\n\r\n")
        assert b"CF-Cache-Status: BYPASS" in head
        assert body == block * (size // len(block))
        assert stack.request("/after")[0] == 200
        assert origin.connections == 1


def test_chunked_origin_response_is_cached(stack: Stack) -> None:
    stack.origin.routes["/chunked"] = Route(body=b"a" * 10000, chunks=5, chunked=True)
    _, h1, b1 = stack.request("/chunked")
    _, h2, b2 = stack.request("/chunked")
    assert b1 == b2 == b"a" * 10000
    assert (h1["cf-cache-status"], h2["cf-cache-status"], h2["content-length"]) == ("MISS", "HIT", "10000")


def test_cache_key_variants_by_device_country_and_language(stack: Stack) -> None:
    stack.origin.routes["/v"] = Route()
    iphone = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}
    desktop = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"}
    host = "variants.example"
    assert stack.request("/v", headers=iphone, host=host)[1]["cf-cache-status"] == "MISS"
    assert stack.request("/v", headers=desktop, host=host)[1]["cf-cache-status"] == "MISS"
    assert stack.request("/v", headers={"CF-Device-Type": "mobile"}, host=host)[1]["cf-cache-status"] == "HIT"
    assert (
        stack.request("/v", headers={**desktop, "CF-IPCountry": "DE"}, host=host)[1]["cf-cache-status"]
        == "MISS"
    )
    fr = {**desktop, "Accept-Language": "fr-FR,fr;q=0.9"}
    assert stack.request("/v", headers=fr, host=host)[1]["cf-cache-status"] == "MISS"
    assert stack.request("/v", headers=fr, host=host)[1]["cf-cache-status"] == "HIT"
    variants = stack.call(lambda: stack.node.store.variants("http://variants.example/v"))
    assert len(variants) == 4


def test_query_strings_are_part_of_the_key(stack: Stack) -> None:
    stack.origin.routes["/q"] = Route()
    stack.request("/q?a=1")
    assert stack.request("/q?a=2")[1]["cf-cache-status"] == "MISS"
    assert stack.request("/q?a=1")[1]["cf-cache-status"] == "HIT"


def test_host_case_and_port_do_not_split_the_cache(stack: Stack) -> None:
    stack.origin.routes["/hostcase"] = Route()
    stack.request("/hostcase", host="Test.Example")
    assert stack.request("/hostcase", host="test.example:8080")[1]["cf-cache-status"] == "HIT"


def test_metrics_report_hits_misses_and_storage(stack: Stack) -> None:
    stack.origin.routes["/metered"] = Route(body=b"m" * 100)
    stack.request("/metered")
    stack.request("/metered")
    url = f"http://127.0.0.1:{stack.node.control_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["edgecache_hits_total"] >= 1
    assert values['edgecache_responses_total{cache_status="MISS"}'] >= 1
    assert values["edgecache_stored_entries"] >= 1
    assert values["edgecache_stored_bytes"] > 100
    assert values["edgecache_origin_latency_seconds_count"] >= 1
    assert values["edgecache_sent_bytes_total"] > 0
    assert values["edgecache_http_requests_total"] >= 2
    assert 'edgecache_http_rejected_total{status="400"}' in values
    assert "edgecache_purge_index_rows" in values and "edgecache_purge_ledger_position" in values
    assert values["edgecache_loop_stall_longest_seconds"] >= 0 and "edgecache_loop_stalls_total" in values
    assert values["edgecache_loop_stall_longest_cpu_seconds"] >= 0
