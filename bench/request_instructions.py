"""A client request's parse and a whole cache hit, in CPU instructions counted by valgrind
(callgrind): figures the load of a shared machine does not move, unlike CPU time.

Method: a child process feeds N copies of one request head into a data-plane ``Connection`` whose
transport discards writes, under ``valgrind --tool=callgrind`` (the event loop's thread only), with
N = 0 and N = ``--requests``: the difference over N is the instructions per request, start-up
excluded. ``PYTHONHASHSEED=0`` keeps the start-up the same in both runs.
- "parse": the server's handler answers at once with ``Connection.respond`` (a prebuilt response,
  no cache lookup); "handler" calls that handler N times with a prebuilt request instead. Their
  difference is the request's parse: from the read to the handler's call (llhttp and httptools'
  callbacks, or the C reader of decision 0031), the Request, the hand-on of rule 1.
- "hit": a demo node (memory tier, its demo origin) with one URL warmed by a real request, then N
  hits on it through the cache handler: the whole per-hit path in process. The node's background
  tasks are stopped after the warm-up and the heap is frozen, as in ``miss_instructions.py``.
Heads: "host" (Host only, as wrk and ``miss_instructions.py`` send), "twelve" (Host and 12 more
fields, ``hit_inprocess.py``'s "browser" row), "chrome" (a real browser's head: Chrome 131's
navigation, 15 fields, with a cookie), "length0" (Host and ``Content-Length: 0``: a head decision
0031's reader leaves to llhttp).

Run: ``.venv/bin/python bench/request_instructions.py [--requests N] [--src PATH ...]`` (``--src``
counts another checkout's ``src`` too, say main's, in the same run; needs valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import tempfile
import urllib.request
from pathlib import Path

from _callgrind import instructions

REPO = Path(__file__).resolve().parent.parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
TARGET = b"/products/1"
HEADS = {
    "host": b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
    "twelve": b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
    + b"".join(b"X-Browser-%d: a typical value of a browser's field, %d\r\n" % (i, i) for i in range(12))
    + b"\r\n",
    "chrome": b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: keep-alive\r\n"
    b'sec-ch-ua: "Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"\r\n'
    b'sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: "Linux"\r\nUpgrade-Insecure-Requests: 1\r\n'
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n"
    b"Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\n"
    b"Sec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\nCookie: _ga=GA1.1.1234567890.1733011200; "
    b"session=3f9a2c1e7b\r\n\r\n",
    "length0": b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n",
}


class _Transport:
    def write(self, data: bytes) -> None:
        """Discard the response."""

    def writelines(self, data: list[bytes]) -> None:
        """Discard the response."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        """Nothing to reset."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child(mode: str, head: str, requests: int) -> None:
    """Run ``requests`` requests of ``mode`` with ``head`` (under valgrind)."""
    from edgecache.config import Limits
    from edgecache.edge.http1 import Connection, HttpServer, Request

    def answer(req: Request, conn: Connection) -> None:
        conn.respond(RESPONSE, True)

    async def server_path() -> None:
        server = HttpServer(answer, Limits(), asyncio.get_running_loop())
        conn = Connection(server)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        data = HEADS[head] % (TARGET, 8080)
        if mode == "handler":
            req = Request("GET", TARGET.decode(), {"host": "127.0.0.1:8080"}, b"", "1.1", True, "127.0.0.1")
            for _ in range(requests):
                answer(req, conn)
        else:
            feed = conn.data_received
            for _ in range(requests):
                feed(data)
            assert server.stats.requests == requests

    async def hits() -> None:
        from edgecache.app import Node
        from edgecache.config import demo_config

        data_port = _free_port()
        with tempfile.TemporaryDirectory(prefix="edgecache-reqinstr-") as tmp:
            config = demo_config(data_port, _free_port(), _free_port()).model_copy(
                update={"data_dir": Path(tmp)}
            )
            node = Node(config)
            await node.start()
            try:
                url = f"http://127.0.0.1:{data_port}{TARGET.decode()}"
                await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=60).read())
                await node._background.stop()
                gc.collect()
                gc.freeze()
                server = node._data
                assert server is not None
                conn = Connection(server)
                conn.connection_made(_Transport())  # type: ignore[arg-type]
                feed = conn.data_received
                data = HEADS[head] % (TARGET, data_port)
                before = node.stats.hits
                for _ in range(requests):
                    feed(data)
                assert node.stats.hits == before + requests, "every request must be a hit"
            finally:
                await node.stop()

    asyncio.run(hits() if mode == "hit" else server_path())


def count(src: Path, mode: str, head: str, requests: int) -> int:
    """Instructions of a child run of ``requests`` requests of ``mode`` with ``head`` on ``src``."""
    return instructions(__file__, src, mode, head, "--requests", str(requests), main_thread=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("mode", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("head", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.mode, args.head, args.requests)
        return
    n = args.requests
    rows: list[tuple[str, list[float]]] = []
    trees = [REPO / "src", *args.src]
    per: dict[Path, dict[str, float]] = {src: {} for src in trees}
    for src in trees:
        base = count(src, "parse", "host", 0)
        handler = (count(src, "handler", "host", n) - base) / n
        per[src]["handler"] = handler
        for head in HEADS:
            per[src][f"parse, {head}"] = (count(src, "parse", head, n) - base) / n - handler
        base = count(src, "hit", "host", 0)
        for head in ("host", "twelve"):
            per[src][f"hit, {head}"] = (count(src, "hit", head, n) - base) / n
    for name in per[trees[0]]:
        rows.append((name, [per[src][name] for src in trees]))
    print(f"instructions per request (callgrind, the loop's thread), {n:,} requests\n")
    print("| measure | " + " | ".join(str(src) for src in trees) + " |")
    print("|---|" + "---:|" * len(trees))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in values) + " |")


if __name__ == "__main__":
    main()
