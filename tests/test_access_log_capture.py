"""What the access log records for each way a request reaches the server: hits and other answers,
pipelined requests (queued behind a response in flight), a head split over several reads, HEAD,
HTTP/1.0, repeated and absent fields. Every line must describe its own request and answer,
whichever path recorded it (a fresh hit is recorded by ``Connection.respond``, anything else by
the access log's connection), with the bytes the client received."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

from conftest import Route
from edgecache.edge._logcapture import MAX_FIELD
from edgecache.edge.http1 import Request
from edgecache.edge.logformat import LineFormatter
from edgecache.edge.logring import RingReader, RingWriter, record, ring_path
from edgecache.edge.zones import ZoneTable
from test_logs import COMBINED, LoggedNode, _lines, node_factory

__all__ = ["node_factory"]

HOST = "test.example"


def _exchange(port: int, pieces: list[bytes], expect: int) -> bytes:
    """Send ``pieces`` (a pause between two), read until ``expect`` responses ended and the
    server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.05)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.") >= expect
    return got


def _send(n: LoggedNode, pieces: list[bytes], expect: int) -> bytes:
    async def go() -> bytes:
        return await asyncio.to_thread(_exchange, n.node.data_port, pieces, expect)

    return n.loop.run_until_complete(go())


def test_pipelined_split_head_and_non_hit_requests_each_get_their_own_line(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    path = tmp_path / "access.jsonl"
    n = node_factory(tmp_path, access_log=path, access_log_format="json")
    n.origin.routes["/h"] = Route(body=b"h" * 700)
    n.origin.routes["/gone"] = Route(body=b"no", status=404, headers={"Cache-Control": "no-store"})
    assert n.request("/h") == 200  # stored: from here on /h is a fresh hit
    head = f"GET /h HTTP/1.1\r\nHost: {HOST}\r\n".encode()
    pipelined = (
        head
        + b"Referer: http://a.example/\r\nUser-Agent: first\r\n\r\n"
        + f"HEAD /h HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: second\r\n\r\n".encode()
        + f"GET /gone?x=1 HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: third\r\n\r\n".encode()
        + head
        + b"User-Agent: a\r\nUser-Agent: b\r\nReferer: http://x/\r\nReferer: http://y/\r\n\r\n"
    )
    split = [
        b"GE",
        b"T /h?split HTTP/1.1\r\nHo",
        f"st: {HOST}\r\nUser-Agent: sp".encode(),
        b"lit\r\n\r\n",
        # A method split over two reads: the second read begins the head's request line but not
        # the request.
        b"GE",
        f"T /h HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: two reads\r\n\r\n".encode(),
        f"HEAD /h HTTP/1.1\r\nHost: {HOST}\r\nReferer: http://h/\r\nUser-Agent: alone\r\n\r\n".encode(),
    ]
    last = f"GET /h HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode()
    received = _send(n, [pipelined, *split, last], expect=8)
    n.close()
    lines = [json.loads(line) for line in _lines(path)][1:]
    summary = [(r["method"], r["target"], r["protocol"], r["status"], r["cache"]) for r in lines]
    assert summary == [
        ("GET", "/h", "HTTP/1.1", 200, "HIT"),
        ("HEAD", "/h", "HTTP/1.1", 200, "HIT"),
        ("GET", "/gone?x=1", "HTTP/1.1", 404, "BYPASS"),
        ("GET", "/h", "HTTP/1.1", 200, "HIT"),
        ("GET", "/h?split", "HTTP/1.1", 200, "MISS"),
        ("GET", "/h", "HTTP/1.1", 200, "HIT"),
        ("HEAD", "/h", "HTTP/1.1", 200, "HIT"),
        ("GET", "/h", "HTTP/1.0", 200, "HIT"),
    ]
    assert [(r["referer"], r["user_agent"]) for r in lines] == [
        ("http://a.example/", "first"),
        (None, "second"),
        (None, "third"),
        ("http://y/", "b"),  # repeated fields: the last one, as before
        (None, "split"),
        (None, "two reads"),
        ("http://h/", "alone"),
        (None, None),
    ]
    assert {r["host"] for r in lines} == {HOST} and {r["zone"] for r in lines} == {"test.example"}
    assert {r["client"] for r in lines} == {"127.0.0.1"}
    # Every byte the client received is counted, each answer on its own line; HEAD's is a head.
    assert sum(r["bytes"] for r in lines) == len(received)
    assert lines[1]["bytes"] == lines[6]["bytes"] < 700 < lines[0]["bytes"]
    assert lines[2]["origin_ms"] is not None and lines[0]["origin_ms"] is None


def test_hits_of_many_requests_fill_batches_and_repeat_lines_without_mixing_them_up(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    # More hits than a batch holds, alternating two user agents and two targets on one connection:
    # the formatter keeps the text of repeated hits, and must never give one request another's.
    path = tmp_path / "access.log"
    n = node_factory(tmp_path, access_log=path)
    for target in ("/p1", "/p2"):
        n.origin.routes[target] = Route(body=target.encode() * 100)
        assert n.request(target) == 200
    requests = [
        f"GET /p{1 + i % 2} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: ua{i % 3}\r\n\r\n".encode()
        for i in range(150)
    ]
    requests[-1] = requests[-1].replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n")
    _send(n, [b"".join(requests[:75]), b"".join(requests[75:])], expect=150)
    n.close()
    matches = [COMBINED.match(line) for line in _lines(path)][2:]
    assert all(matches)
    got = [(m["request"], m["ua"], m["cache"]) for m in matches if m]
    assert got == [(f"GET /p{1 + i % 2} HTTP/1.1", f"ua{i % 3}", "HIT") for i in range(150)]


def _hit(
    raw: bytes | None, client: str = "10.0.0.1", sent: int = 100, status: bytes = b"200"
) -> tuple[Request, bytes]:
    """A fresh hit as ``Connection.respond`` hands it to the capture: the request (with the read
    its head began, or None with its values) and the response's bytes."""
    req = Request("GET", "/x", {}, b"", "1.1", True, client)
    req._fields = [("host", b"a.example"), ("user-agent", b"values")]
    req.raw = raw
    head = b"HTTP/1.1 " + status + b" X\r\n\r\n"
    return req, head + b"x" * (sent - len(head))


def test_a_remembered_hit_line_is_used_only_for_the_same_request_and_answer(tmp_path: Path) -> None:
    writer = RingWriter(ring_path(tmp_path), 1 << 20)
    reader = RingReader(writer.path)
    formatter = LineFormatter("combined", ZoneTable(()))
    head = b"GET /x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: ua\r\n\r\n"
    variants = [
        _hit(head),
        _hit(head, sent=101),
        _hit(head, status=b"404"),
        _hit(head, client="10.0.0.2"),
        _hit(head.replace(b"ua", b"other")),
        _hit(head.replace(b"\r\n\r\n", b"\r\nReferer: http://r/\r\n\r\n")),
        _hit(None),
        _hit(b"\r\n" + head),  # a read that began with an empty line: the values are kept
    ]
    for _ in range(2):
        for req, data in variants:
            writer.hit(req, data)
    writer.flush()
    records = reader.read()
    first = formatter.lines(records[: len(variants)]).splitlines()
    again = formatter.lines(records[len(variants) :]).splitlines()
    assert first == again and len(set(first)) == len(variants) - 1
    parsed = [COMBINED.match(line) for line in first]
    assert [(m["ip"], m["status"], m["bytes"], m["referer"], m["ua"], m["cache"]) for m in parsed if m] == [
        ("10.0.0.1", "200", "100", "-", "ua", "HIT"),
        ("10.0.0.1", "200", "101", "-", "ua", "HIT"),
        ("10.0.0.1", "404", "100", "-", "ua", "HIT"),
        ("10.0.0.2", "200", "100", "-", "ua", "HIT"),
        ("10.0.0.1", "200", "100", "-", "other", "HIT"),
        ("10.0.0.1", "200", "100", "http://r/", "ua", "HIT"),
        ("10.0.0.1", "200", "100", "-", "values", "HIT"),
        ("10.0.0.1", "200", "100", "-", "values", "HIT"),
    ]
    reader.close()
    writer.close()


def test_a_connection_answering_after_its_ring_closed_gets_its_answer_out(tmp_path: Path) -> None:
    # The node closes its ring after its listener; a connection still finishing an answer then
    # must not fail it because the log can no longer record it.
    writer = RingWriter(ring_path(tmp_path), 1 << 20)
    writer.close(unlink=True)
    req, data = _hit(b"GET /x HTTP/1.1\r\n\r\n")
    writer.hit(req, data)
    now = time.monotonic()
    writer.add(req, now, now, now, b"MISS", 10, b"200")
    writer.flush()
    assert not writer.path.exists()


def test_a_request_too_large_to_copy_whole_is_logged_cut_with_the_fields_a_line_shows(
    tmp_path: Path,
) -> None:
    writer = RingWriter(ring_path(tmp_path), 1 << 20)
    reader = RingReader(writer.path)
    target = "/" + "t" * 300_000
    req = Request("GET", target, {}, b"", "1.1", True, "10.0.0.1")
    req._fields = [("host", b"a.example"), ("cookie", b"c" * 300_000), ("user-agent", b"ua")]
    req.raw = f"GET {target} HTTP/1.1\r\n".encode()
    now = time.monotonic()
    writer.add(req, now, now, now, b"MISS", 10, b"200")
    writer.flush()
    (rec,) = map(record, reader.read())
    assert rec.target == "/" + "t" * (MAX_FIELD - 1)
    assert (rec.host, rec.user_agent, rec.method, rec.version) == ("a.example", "ua", "GET", "1.1")
    reader.close()
    writer.close()


def test_a_miss_is_timed_from_the_request_to_the_end_of_its_answer(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    # A small miss is answered from the origin connection's callbacks, not by a task (the
    # handler returns PENDING): its line still times the wait for the origin, and a body that
    # spans reads (answered by a task from the first read on) the whole of it.
    path = tmp_path / "access.jsonl"
    n = node_factory(tmp_path, access_log=path, access_log_format="json")
    n.origin.routes["/slow"] = Route(body=b"s" * 100, delay=0.3)
    n.origin.routes["/slower"] = Route(body=b"t" * 300_000, chunks=3, chunk_delay=0.2)
    assert n.request("/slow") == 200
    assert n.request("/slower") == 200
    n.close()
    slow, slower = (json.loads(line) for line in _lines(path))
    assert (slow["cache"], slower["cache"]) == ("MISS", "MISS")
    assert 250 <= slow["origin_ms"] <= slow["total_ms"]
    assert slower["total_ms"] >= 350 and slower["origin_ms"] < slower["total_ms"]
