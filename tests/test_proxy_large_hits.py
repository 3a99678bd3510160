"""Fresh hits on large bodies (16 KiB to 256 KiB): from the second hit of a second on, the whole
answer is joined once and written as it is (``edge/hitmemo.py``). A client must get what the
general path sends: the current body after a purge or a new fill, an Age that advances, HEAD
without a body, the Connection field its request needs, every answer of a pipeline in order and
whole, also when it reads slowly, and an access-log line per answer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.edge import hitmemo
from edgecache.edge.hitmemo import HitMemos
from edgecache.store.entry import Entry
from test_access_log_capture import _send
from test_logs import LoggedNode, _lines, node_factory

__all__ = ["node_factory"]

LARGE = 65536
HOST = "test.example"


def _body(tag: bytes) -> bytes:
    """A large body (a three-letter ``tag``) whose every 64-byte line says which version it is and
    where it is."""
    return b"".join(tag + b" %059d\n" % i for i in range(LARGE // 64))


def _serve(stack: Stack, path: str, body: bytes, max_age: int = 600) -> None:
    tag = path.strip("/").replace("/", "-")
    headers = {"Cache-Control": f"max-age={max_age}", "Cache-Tag": tag}
    stack.origin.routes[path] = Route(body=body, headers=headers)


def _memo(stack: Stack, path: str) -> bytes:
    """The whole answer the entry of ``path`` holds now (b"" if none)."""
    entry = stack.call(lambda: stack.node.store.peek(f"http://{HOST}{path}"))
    assert entry is not None
    return (entry.memo[1] if entry.memo is not None else None) or b""


def _hit(stack: Stack, path: str) -> tuple[int, int, bytes]:
    """(Age, ttl, body) of a fresh hit on ``path``."""
    status, headers, body = stack.request(path)
    assert (status, headers["cf-cache-status"]) == (200, "HIT")
    assert int(headers["content-length"]) == len(body)
    return int(headers["age"]), int(headers["cache-status"].rsplit("ttl=", 1)[1]), body


def _hits_until_memo(stack: Stack, path: str, body: bytes) -> None:
    """Hit ``path`` until its entry holds a memo (the second hit of a second makes it)."""
    for _ in range(5):
        assert _hit(stack, path)[2] == body
        if _memo(stack, path):
            return
    raise AssertionError("no memo after five hits")


@pytest.fixture
def memoized(stack: Stack) -> Iterator[Callable[..., bytes]]:
    """Serves a large body (tagged ``tag``) at ``path``, fetches it once and hits it until its
    entry holds a memo; the body. The routes it served are gone afterwards."""
    served: list[str] = []

    def make(path: str, tag: bytes, max_age: int = 600) -> bytes:
        body = _body(tag)
        _serve(stack, path, body, max_age)
        served.append(path)
        assert stack.request(path)[1]["cf-cache-status"] == "MISS"
        _hits_until_memo(stack, path, body)
        return body

    yield make
    for path in served:
        stack.origin.routes.pop(path, None)


def _responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split the bytes of answers to GETs received on one connection into (head, body) pairs."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "an incomplete head"
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        assert len(rest) >= length, "a body cut short"
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


def test_a_purged_large_entry_is_never_answered_from_its_memo(
    stack: Stack, memoized: Callable[..., bytes]
) -> None:
    path = "/large/purged"
    memoized(path, b"old")
    new = _body(b"new")
    api = f"http://127.0.0.1:{stack.node.control_port}/client/v4"
    cf = cloudflare.Cloudflare(base_url=api, max_retries=0, api_token=stack.token())
    cf.cache.purge(zone_id=ZONE_ID, tags=["large-purged"])
    _serve(stack, path, new)
    status, headers, body = stack.request(path)
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", new)
    for _ in range(4):
        assert _hit(stack, path)[2] == new
    assert new in _memo(stack, path)


def test_a_large_entry_fetched_again_is_answered_with_its_new_body(
    stack: Stack, memoized: Callable[..., bytes]
) -> None:
    path = "/large/refilled"
    memoized(path, b"one", max_age=1)
    new = _body(b"two")
    _serve(stack, path, new)
    time.sleep(1.2)
    status, headers, body = stack.request(path)
    assert (status, headers["cf-cache-status"], body) == (200, "EXPIRED", new)
    for _ in range(3):
        status, headers, body = stack.request(path)
        assert (headers["cf-cache-status"], body) == ("HIT", new)


def test_the_age_of_memoized_large_hits_advances_with_the_clock(
    stack: Stack, memoized: Callable[..., bytes]
) -> None:
    path = "/large/aging"
    body = memoized(path, b"age")
    age1, ttl1, got = _hit(stack, path)
    assert got == body
    time.sleep(1.1)
    seen = [_hit(stack, path) for _ in range(3)]  # a mark, a new memo, an answer from it
    for age2, ttl2, got in seen:
        assert got == body
        assert age2 >= age1 + 1 and ttl2 <= ttl1 - 1 and age2 + ttl2 in (599, 600)


def test_head_and_connection_fields_are_right_next_to_a_memo(
    stack: Stack, memoized: Callable[..., bytes]
) -> None:
    path = "/large/fields"
    body = memoized(path, b"fld")
    status, headers, got = stack.request(path, method="HEAD")
    assert (status, headers["cf-cache-status"], got) == (200, "HIT", b"")
    assert int(headers["content-length"]) == LARGE
    requests = {
        b"GET %b HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n": b"Connection: close",
        b"GET %b HTTP/1.0\r\nHost: test.example\r\nConnection: keep-alive\r\n\r\n": b"Connection: keep-alive",
        b"GET %b HTTP/1.0\r\nHost: test.example\r\n\r\n": b"Connection: close",
    }
    for request, field in requests.items():
        with socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=10) as s:
            s.sendall(request % path.encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(LARGE):
                data += chunk
        ((head, got),) = _responses(data)
        assert head.count(b"\r\n" + field + b"\r\n") == 1 and b"CF-Cache-Status: HIT" in head
        assert got == body


def test_pipelined_large_hits_arrive_whole_and_in_order_also_to_a_slow_reader(
    stack: Stack, memoized: Callable[..., bytes]
) -> None:
    """Answers queue behind a client that does not read (the server stops reading it once its
    write buffer is full) and all arrive, in order, once it does."""
    large, small = "/large/piped", "/large/piped-small"
    body = memoized(large, b"pip")
    stack.origin.routes[small] = Route(body=b"small", headers={"Cache-Control": "max-age=600"})
    stack.request(small)
    # 100 large answers, more than the kernel's buffers on both sides hold (6.5 MB).
    paths = [large if i % 3 else small for i in range(150)]
    pipeline = b"".join(b"GET %b HTTP/1.1\r\nHost: test.example\r\n\r\n" % p.encode() for p in paths)
    with socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(pipeline)
        server = stack.node._data
        assert server is not None
        deadline = time.monotonic() + 10
        while not stack.call(lambda: any(c._write_paused for c in server.connections)):
            assert time.monotonic() < deadline, "the server never stopped writing to the slow reader"
            time.sleep(0.05)
        # The node answers others meanwhile.
        assert _hit(stack, large)[2] == body
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(LARGE):
            data += chunk
    got = _responses(data)
    assert [b for _, b in got] == [body if p == large else b"small" for p in paths]
    assert all(b"CF-Cache-Status: HIT" in head for head, _ in got)


def test_memoized_large_hits_are_logged_with_the_bytes_sent(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    path = tmp_path / "access.jsonl"
    n = node_factory(tmp_path, access_log=path, access_log_format="json")
    n.origin.routes["/big"] = Route(body=_body(b"log"), headers={"Cache-Control": "max-age=600"})
    assert n.request("/big") == 200
    get = f"GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    head = f"HEAD /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    last = f"GET /big HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    received = _send(n, [get * 4, head, get, last], expect=7)
    # The four GETs came in one read, within a second: the second made the memo and at least the
    # fourth was written from it (one buffer through ``respond``, the access log's capture point).
    assert n.node.proxy._hit_memos.bytes > LARGE
    n.close()
    lines = [json.loads(line) for line in _lines(path)][1:]
    assert [(r["method"], r["status"], r["cache"]) for r in lines] == [("GET", 200, "HIT")] * 4 + [
        ("HEAD", 200, "HIT"),
        ("GET", 200, "HIT"),
        ("GET", 200, "HIT"),
    ]
    assert sum(r["bytes"] for r in lines) == len(received)
    assert lines[4]["bytes"] < LARGE < lines[0]["bytes"] == lines[3]["bytes"] == lines[5]["bytes"]


def _entry(n: int, size: int) -> Entry:
    return Entry(
        zone=ZONE_ID,
        key=f"http://{HOST}/m/{n}",
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=bytes([65 + n]) * size,
        tags=(),
        stored_seq=0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


def test_memos_hold_at_most_their_budget_and_make_room_only_from_memos_a_second_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the budget, a memo is not made while the memos of the last second fill it (a working
    set larger than the budget is written as two buffers, not copied on every hit); memos a
    second old are out of date and give their room up, emptied on their entries too."""
    clock = [1000.0]
    monkeypatch.setattr(hitmemo, "_monotonic", lambda: clock[0])
    memos = HitMemos(limit=3 * 20_000)
    entries = [_entry(i, 19_000) for i in range(5)]

    def make(entry: Entry) -> bytes:
        return memos.make(entry, b"F", (b"HTTP/1.1 200 OK\r\n", entry.head, b"F", entry.body))

    made = [make(e) for e in entries[:3]]
    assert all(m.endswith(e.body) for m, e in zip(made, entries[:3], strict=True))
    assert memos.bytes == sum(map(len, made)) <= memos.limit
    # Refused, and marked so for the rest of the second (its hits do not ask again).
    assert make(entries[3]) == b"" and entries[3].memo == [b"F", b""]
    clock[0] += 0.5
    assert make(entries[3]) == b""
    clock[0] += 0.5
    answer = make(entries[3])
    assert answer.endswith(entries[3].body) and entries[3].memo == [b"F", answer]
    assert [e.memo for e in entries[:3]] == [[b"", b""]] * 3
    assert memos.bytes == len(answer) <= memos.limit


def test_a_memo_answers_from_the_second_hit_of_its_second_while_its_fields_hold() -> None:
    """``HitMemos.answer``: the first hit with some fields only marks the entry (the caller writes
    head and body), the second joins the answer, later ones get that same answer; other fields
    (Age moved on) mark the entry anew, and no answer with old fields is ever returned."""
    memos = HitMemos()
    entry = _entry(1, 20_000)
    status = b"HTTP/1.1 200 OK\r\n"
    assert memos.answer(entry, b"Age: 1\r\n", status) == b""
    made = memos.answer(entry, b"Age: 1\r\n", status)
    assert made == status + entry.head + b"Age: 1\r\n" + entry.body
    assert memos.answer(entry, b"Age: 1\r\n", status) is made
    assert memos.answer(entry, b"Age: 2\r\n", status) == b""
    assert memos.answer(entry, b"Age: 2\r\n", status) == status + entry.head + b"Age: 2\r\n" + entry.body
