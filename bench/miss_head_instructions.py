"""A fill's head step in CPU instructions, counted by valgrind (callgrind): a figure the load of a
shared machine does not move, unlike CPU time (decision 0024).

Method: a child process parses the bench origin's response head (nginx's 11 fields for a 1 KiB
object under ``/obj/``: Server, Date, Content-Type, Content-Length, Last-Modified, Connection,
ETag, Cache-Control, Cache-Tag, xkey, Accept-Ranges) N times with httptools' parser, as the
origin connection does it in the build on ``PYTHONPATH`` (``on_header`` per field and the framing
loop where the build has no ``edgecache.edge._originhead``; one ``scan`` in C where it has), then
runs ``Fetch._accept_head`` on a bare fetch (the field pass or the C scan's result, the storage
decision, Age, the stored head). Each build runs under ``valgrind --tool=callgrind`` with N=0 and
N=``--fills``; the difference over N is the instructions per head step, start-up excluded. A real
connection makes its parser once, not per response: that cost is in both builds' figures.
``--parts`` also counts the step's parts on each build (each run alone, the same way): ``parse``
(the parser made and fed, the framing: what the origin connection does; where the build has
``_originhead.response``, a whole head is read by it without feeding llhttp, the parser made all
the same unless the build's connection makes it only when a read needs llhttp (its
``OriginConnection._llhttp``)), ``parser`` (the parser alone made, with the build's protocol
object: in ``parse``, a cost a connection pays once, not per response), ``decide`` (the storage
decision alone, ``decide_from_fields`` on the scan's values), ``age`` (``initial_age`` alone);
what the whole step has beyond ``parse`` is the Python that runs once the C scan has.

Run: ``.venv/bin/python bench/miss_head_instructions.py [--fills N] [--src PATH ...]`` (``--src``
counts another checkout's ``src`` too, say main's; needs valgrind).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _callgrind import instructions

REPO = Path(__file__).resolve().parent.parent
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 14:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6929a0e0-400"\r\nCache-Control: public, max-age=3600\r\n'
    b"Cache-Tag: tag7\r\nxkey: tag7\r\nAccept-Ranges: bytes\r\n\r\n"
)


class _Zone:
    cache_set_cookie = False
    heuristic_fraction = 0.1
    heuristic_max = 86400.0


class _ZoneRuntime:
    config = _Zone()
    # What _accept_head reads of the zone where a build keeps it on ZoneRuntime (decision 0008,
    # update 12).
    cache_set_cookie = config.cache_set_cookie
    heuristic_fraction = config.heuristic_fraction
    heuristic_max = config.heuristic_max


class _Response:
    """What ``_accept_head`` reads of an ``OriginResponse``."""

    def __init__(self) -> None:
        self.status = 200
        self.content_length: int | None = None
        self.fill: Any = None
        self.headers: list[tuple[str, str]] = []


class _Fields:
    """The origin connection before decision 0024: on_header per field, then the framing loop."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.resp = _Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        length = None
        for name, value in self.fields:
            size = len(name)
            if size == 17 and name.lower() == "transfer-encoding":
                pass
            elif size == 14 and name.lower() == "content-length":
                length = int(value)
        self.resp.headers = self.fields
        self.resp.content_length = length


class _Scan:
    """The origin connection with decision 0024: one C scan of the accepted head."""

    def __init__(self, scan: Any) -> None:
        self.scan = scan
        self.resp = _Response()

    def on_headers_complete(self) -> None:
        _end, _count, _size, length, _chunked, fill = self.scan(RESPONSE, 0)
        self.resp.fill = fill
        self.resp.content_length = length


class _Whole:
    """The origin connection with decision 0024's addendum of 2026-12-01: a whole final head in the
    exchange's first read is read in C without llhttp (``response``), its body then counted."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.resp = _Response()

    def feed(self, data: bytes) -> None:
        _end, status, _keep_alive, length, fill = self.response(data)
        self.resp.status = status
        self.resp.fill = fill
        self.resp.content_length = length


PARTS = ("whole", "parse", "parser", "decide", "age")


def child(fills: int, part: str) -> None:
    """Run ``fills`` head steps, or ``part`` of each (under valgrind)."""
    from httptools import HttpResponseParser

    from edgecache.edge.fetch import Fetch
    from edgecache.httpcache.freshness import decide_from_fields, initial_age

    try:
        from edgecache.edge._originhead import scan
    except ImportError:
        scan = None
    try:
        from edgecache.edge._originhead import response
    except ImportError:
        response = None
    from edgecache.edge.origin_conn import OriginConnection

    lazy = "_llhttp" in vars(OriginConnection)
    if part in ("decide", "age"):
        date, last_modified = "Mon, 30 Nov 2026 15:00:00 GMT", "Mon, 30 Nov 2026 14:00:00 GMT"
        for _ in range(fills):
            now = time.time()
            if part == "age":
                initial_age(age_header=None, date_header=date, request_time=now, response_time=now)
            else:
                decide_from_fields(
                    200, ["public, max-age=3600"], [], [], date, last_modified, True, [], False,
                    False, now, now, False, 0.1, 86400.0,
                )  # fmt: skip
        return
    if part == "parser":
        for _ in range(fills):
            HttpResponseParser(_Fields() if scan is None else _Scan(scan))
        return
    for _ in range(fills):
        proto: Any
        if response is not None:
            # The connection's parser is made all the same (it holds one) unless it is made
            # lazily: not fed.
            proto = _Whole(response)
            if not lazy:
                HttpResponseParser(proto)
            proto.feed(RESPONSE)
        else:
            proto = _Fields() if scan is None else _Scan(scan)
            HttpResponseParser(proto).feed_data(RESPONSE)
        if part == "parse":
            continue
        fetch: Any = object.__new__(Fetch)
        fetch.zone = _ZoneRuntime()
        fetch.request_headers = {}
        fetch._max = 1 << 20
        fetch._method = "GET"
        if "__slots__" in vars(Fetch):
            # A build whose Fetch has slots sets every first value in ``__init__``: what
            # ``_accept_head`` reads beyond the four above (a build with class defaults has them).
            fetch.lock = 0
            fetch.storing_large = fetch.head_in = False
            fetch._head_waiter = None
        now = time.time()
        fetch._accept_head(proto.resp, now, now)


def count(src: Path, fills: int, part: str = "whole") -> int:
    """Instructions of a child run of ``fills`` head steps (or ``part`` of each) on ``src``."""
    return instructions(__file__, src, "--fills", str(fills), "--part", part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=5_000)
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--parts", action="store_true", help="also count the step's parts")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=PARTS, default="whole", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.fills, args.part)
        return
    parts = PARTS if args.parts else PARTS[:1]
    print(f"instructions per head step of a fill (callgrind), {args.fills:,} fills after start-up\n")
    print("| src | " + " | ".join(f"{p}" for p in parts) + " |")
    print("|---|" + "---:|" * len(parts))
    for src in [REPO / "src", *args.src]:
        row = [(count(src, args.fills, p) - count(src, 0, p)) / args.fills for p in parts]
        print(f"| {src} | " + " | ".join(f"{per:,.0f}" for per in row) + " |")


if __name__ == "__main__":
    main()
