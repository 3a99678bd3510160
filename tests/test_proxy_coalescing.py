"""Request coalescing in one node process: a new object is fetched from the origin once, however
its concurrent clients' requests and the origin's answer interleave on the event loop.

The origin here is a raw socket served from a thread of the test (not from the node's loop), so
that the test chooses when its answer is written: while the node's loop is held, a client's request
and then the origin's whole answer become readable. The loop reads both in one pass: the client
finds the fill in flight, and the fill ends before the client's own task runs.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

from conftest import Stack
from rawhttp import raw_origin, read_request

BODY = b"x" * 3000
ANSWER = b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: %d\r\n\r\n%b" % (
    len(BODY),
    BODY,
)


def _client(stack: Stack) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.data_port, timeout=10)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _answer(conn: http.client.HTTPConnection) -> tuple[int, str, bytes]:
    resp = conn.getresponse()
    return resp.status, resp.getheader("cache-status", ""), resp.read()


def test_a_client_that_finds_a_fill_as_it_ends_is_answered_from_it(stack: Stack) -> None:
    """A request that finds the fill in flight joins it there and then: the fill ending before the
    request's task runs must not send the request to the origin a second time."""
    requests: list[bytes] = []
    first_received = threading.Event()
    gate = threading.Event()

    def serve(sock: socket.socket, n: int) -> None:
        while read_request(sock, requests) is not None:
            if len(requests) == 1:
                first_received.set()
                gate.wait(10)
            sock.sendall(ANSWER)

    path = "/coalesce/ends-as-joined"
    first, second = _client(stack), _client(stack)
    try:
        with raw_origin(serve) as origin, stack.origin_at(origin.url):
            # The second client's connection is accepted and idle: its next request is one read.
            second.request("GET", "/", headers={"Host": "no-zone.example"})
            assert _answer(second)[0] == 421
            first.request("GET", path, headers={"Host": "test.example"})
            assert first_received.wait(10)
            held = threading.Event()

            def hold_the_loop() -> None:
                held.set()
                time.sleep(0.3)

            stack.loop.call_soon_threadsafe(hold_the_loop)
            assert held.wait(10)
            second.request("GET", path, headers={"Host": "test.example"})
            time.sleep(0.05)
            gate.set()  # the origin's whole answer is written while the loop is still held
            answers = [_answer(first), _answer(second)]
    finally:
        first.close()
        second.close()
    assert [(status, body) for status, _, body in answers] == [(200, BODY), (200, BODY)]
    assert len(requests) == 1
    assert "collapsed" in answers[1][1]
