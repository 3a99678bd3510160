"""What the access log costs a hit in CPU instructions, counted by valgrind (callgrind): a figure
the load of a shared machine does not move, unlike CPU time.

Method: a child process builds a data-plane ``HttpServer`` whose handler answers every request at
once with ``Connection.respond`` (as a fresh hit does, without the cache's lookup), and feeds N
copies of one request (Host and User-Agent, as wrk sends) into one connection whose transport
discards writes: "off" is the plain ``Connection``, "on" the access log's ``LoggedConnection``
writing into a ring in a temporary directory (its batches copied into the ring as in a node; no
formatter reads it). Each is run under ``valgrind --tool=callgrind`` with N=0 and N=``--hits``;
the difference over N is the instructions per hit, start-up excluded. ``PYTHONHASHSEED=0`` keeps
the start-up the same between the two runs. ``--src`` also counts another checkout's ``src`` (say
main's, for a before/after). The handler is minimal, so a real hit (a cache lookup, the entry's
bytes) costs more instructions than "off" here: compare the log's added instructions with
``bench/hit_inprocess.py``'s CPU per hit, not only with this "off".

Run: ``.venv/bin/python bench/access_log_instructions.py [--hits N] [--src PATH ...]`` (needs
valgrind; about a minute per variant on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from _callgrind import instructions

REPO = Path(__file__).resolve().parent.parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
REQUEST = b"GET /products/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n\r\n"


class _Transport:
    def write(self, data: bytes) -> None:
        """Discard the response."""

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def can_write_eof(self) -> bool:
        return True


def child(mode: str, hits: int) -> None:
    """Feed ``hits`` requests into one connection (run under valgrind)."""
    from edgecache.config import Limits
    from edgecache.edge.http1 import Connection, HttpServer, Request

    def handler(req: Request, conn: Connection) -> None:
        conn.respond(RESPONSE, True)

    async def run() -> None:
        server = HttpServer(handler, Limits(), asyncio.get_running_loop())
        conn: Connection
        if mode == "off":
            conn = Connection(server)
        else:
            from edgecache.edge.accesslog import LoggedConnection
            from edgecache.edge.logring import RingWriter

            ring = RingWriter(Path(tempfile.mkdtemp()) / "bench.ring", 16 << 20)
            conn = LoggedConnection(server, ring)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        feed = conn.data_received
        for _ in range(hits):
            feed(REQUEST)

    asyncio.run(run())


def count(src: Path, mode: str, hits: int) -> int:
    """Instructions of a child run of ``hits`` hits with the log ``mode`` on ``src``."""
    return instructions(__file__, src, mode, "--hits", str(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.hits)
        return
    print(f"instructions per hit (callgrind), {args.hits:,} hits after start-up\n")
    print("| src | log off | log on | added by the log |")
    print("|---|---:|---:|---:|")
    for src in [REPO / "src", *args.src]:
        per = {}
        for mode in ("off", "on"):
            per[mode] = (count(src, mode, args.hits) - count(src, mode, 0)) / args.hits
        added = per["on"] - per["off"]
        print(f"| {src} | {per['off']:,.0f} | {per['on']:,.0f} | {added:,.0f} ({added / per['off']:+.1%}) |")


if __name__ == "__main__":
    main()
