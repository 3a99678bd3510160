"""A whole miss in the data-plane process, in CPU instructions counted by valgrind (callgrind): a
figure the load of a shared machine does not move, unlike CPU time.

Method: a child process runs a node (memory tier only, no disk tier; with ``--disk``, the node's
default storage: the disk tier, its key filter and its fill writer child) and feeds request bytes for
never-seen keys straight into data-plane connections whose transports only collect writes, as
``miss_inprocess.py`` does: each miss goes through the request parse, the cache handler, the fetch,
the origin client over real loopback and the store. The origin runs in this (parent) process, on
a thread, outside callgrind's count: it answers every request with the bench origin's response
(nginx's 11 fields for a 1 KiB object under ``/obj/``: the Date of the second, a Cache-Tag by the
key's last two digits) on kept-alive connections. The child first warms up (``--warmup`` misses:
the origin connections opened, the memos warm), then runs ``--misses`` N more, ``--concurrency``
at a time; each tree runs with N and with 0, and the difference over N is the instructions per
miss, start-up and warm-up excluded. Only the main thread (the event loop's) is counted, and the
node's background tasks (housekeeping, the loop-lag probe, the collector policy) are stopped after
the warm-up, and what it left is collected and frozen (as the collector policy does): work that
runs by the clock would put a share in each miss that varies with valgrind's slowness and the
machine's load, and a full collection of start-up's heap one that varies with where it falls.
The kernel's work (the sends and reads) is not in the figure; the loop's own (uvloop, epoll's
wrapper) and the Python around it are. With ``--disk``, so is the loop's share of the disk tier (the
lookups the key filter answers, the ring append, the wake); the fill writer child's and the disk
writer thread's work is not (the child runs outside valgrind; only the main thread is counted). The
warm-up waits for the key filter's start-up build, so that every counted miss is answered by it.

Run: ``.venv/bin/python bench/miss_instructions.py [--disk] [--misses N] [--src PATH ...]``
(``--src`` counts another checkout's ``src`` too, say main's, in the same run; ``--rounds R``
alternates the trees R times; needs valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from pathlib import Path

from _callgrind import instructions

REPO = Path(__file__).resolve().parent.parent
BODY = b"a" * 1024


class _Origin(asyncio.Protocol):
    """The bench origin's answer (``_servers.ORIGIN_CONF``'s ``/obj/`` location, as nginx sends it)
    to every request of a kept-alive connection; requests are read up to their blank line (they
    have no body)."""

    last_modified = formatdate(time.time() - 3600, usegmt=True).encode()
    stamp = (0, b"")

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            assert self.transport is not None
            self.transport.write(self.response(target[-2:]))

    @classmethod
    def response(cls, tag: bytes) -> bytes:
        now = int(time.time())
        if cls.stamp[0] != now:
            cls.stamp = (now, formatdate(now, usegmt=True).encode())
        return (
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: " + cls.stamp[1] + b"\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
            b"Last-Modified: " + cls.last_modified + b"\r\nConnection: keep-alive\r\n"
            b'ETag: "6929a0e0-400"\r\nCache-Control: public, max-age=3600\r\n'
            b"Cache-Tag: tag" + tag + b"\r\nxkey: tag" + tag + b"\r\nAccept-Ranges: bytes\r\n\r\n" + BODY
        )


def start_origin() -> int:
    """Serve the bench origin on a thread of this process; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(loop.create_server(_Origin, sock=sock))
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    return int(sock.getsockname()[1])


def child(
    origin_port: int, misses: int, warmup: int, concurrency: int, disk: bool, bytecodes: bool = False
) -> None:
    """Start a node (memory-only, or with ``disk`` the default storage), warm it up, then run
    ``misses`` misses (under valgrind; with ``bytecodes``, not: the bytecodes and calls of each
    Python function are counted instead)."""
    import uvloop
    from miss_inprocess import BytecodeCounter, CollectingTransport, TimedConnection

    from edgecache.app import Node
    from edgecache.config import Config, DiskStorage, Listener, Storage, Zone

    async def run(node: Node, first: int, count: int) -> None:
        server = node._data
        assert server is not None
        loop = asyncio.get_running_loop()

        async def worker(w: int) -> None:
            conn = TimedConnection(server)
            conn.connection_made(CollectingTransport())  # type: ignore[arg-type]
            for key in range(first + w, first + count, concurrency):
                conn.done = loop.create_future()
                conn.data_received(b"GET /obj/%08d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % key)
                await conn.done

        await asyncio.gather(*(worker(w) for w in range(concurrency)))

    async def main(data_dir: Path) -> None:
        config = Config(
            data_dir=data_dir,
            data=Listener(port=0),
            control=Listener(port=0),
            storage=Storage() if disk else Storage(disk=DiskStorage(enabled=False)),
            zones=(
                Zone(
                    id="0123456789abcdef0123456789abcdef",
                    name="bench.test",
                    hostnames=("127.0.0.1",),
                    origin=f"http://127.0.0.1:{origin_port}",
                ),
            ),
        )
        node = Node(config)
        await node.start()
        try:
            while node.key_filter is not None and not node.key_filter.ready:
                # Its build runs on a thread: until it ends, every miss would read the disk.
                await asyncio.sleep(0.05)
            await run(node, 10_000_000, warmup)
            # Work that runs by the clock (the control plane's housekeeping, the loop-lag probe):
            # under valgrind, and on a loaded machine, a varying amount of it would fall in each run.
            await node._background.stop()
            # The node's collector policy (gcpolicy.keep_gc), once, at a fixed point: what the
            # warm-up left is frozen, so the collections in the counted misses are those their own
            # allocations trigger, not a full one that start-up's heap would make costly.
            gc.collect()
            gc.freeze()
            if bytecodes:
                counter = BytecodeCounter()
                sys.settrace(counter.trace)
            await run(node, 20_000_000, misses)
            if bytecodes:
                sys.settrace(None)
                counter.print(misses)
            assert node.stats.origin_fetches == warmup + misses, node.stats.origin_fetches
        finally:
            await node.stop()

    with tempfile.TemporaryDirectory(prefix="edgecache-missinstr-") as tmp:
        uvloop.run(main(Path(tmp)))


def count(src: Path, origin_port: int, misses: int, warmup: int, concurrency: int, disk: bool) -> int:
    """Instructions of a child run of ``misses`` misses after the warm-up, on ``src``."""
    return instructions(
        __file__, src, "--port", str(origin_port), "--misses", str(misses),
        "--warmup", str(warmup), "--concurrency", str(concurrency), *(["--disk"] if disk else []),
        main_thread=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each tree's pair in turn")
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--disk", action="store_true", help="the node's default storage: with its disk tier")
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="no valgrind: bytecodes and calls per miss of each Python function, for this tree",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        child(args.port, args.misses, args.warmup, args.concurrency, args.disk)
        return
    port = start_origin()
    if args.bytecodes:
        child(port, args.misses, args.warmup, args.concurrency, args.disk, bytecodes=True)
        return
    trees = [REPO / "src", *args.src]
    per: dict[Path, list[float]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for src in trees:
            base = count(src, port, 0, args.warmup, args.concurrency, args.disk)
            n = count(src, port, args.misses, args.warmup, args.concurrency, args.disk)
            per[src].append((n - base) / args.misses)
    kind = "miss with the disk tier" if args.disk else "memory-only miss"
    print(
        f"instructions per {kind} (callgrind), {args.misses:,} misses after "
        f"{args.warmup:,}, {args.concurrency} at a time, {args.rounds} round(s)\n"
    )
    print("| src | per miss (median) | rounds |\n|---|---:|---|")
    for src, row in per.items():
        rounds = ", ".join(f"{r:,.0f}" for r in row)
        print(f"| {src} | {statistics.median(row):,.0f} | {rounds} |")


if __name__ == "__main__":
    main()
