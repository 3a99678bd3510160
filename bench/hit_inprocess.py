"""CPU per cache hit inside one edgecache process, without the kernel or a load generator.

Method: start a demo node (demo origin included) on free ports, warm one URL with a real request,
then feed the same request bytes straight into a data-plane ``Connection`` whose transport only
counts writes: "server path" is parsing + handler + response building per request (the request
carries Host only, as wrk's do; a second row adds 12 fields, as a browser's would); "handler" calls
the cache handler alone with a prebuilt request. Best of 5 runs of 100,000 requests each. This
isolates the Python cost per hit that the wrk benchmark (`bench/run.py`) measures together with the
loopback network path. "10k random keys" feeds requests for 10,000 stored URLs in a shuffled order
(copies of the warmed entry under other query strings), as ``bench/run.py``'s scenario (c) does: each
hit then touches entries, keys and memo slots that are not in the CPU's caches. Two more rows time
the handler for a one-range request answered from the full entry, and from stored parts (the full
entry is then swapped for a partial entry holding its first half, decision 0013).

Run: ``.venv/bin/python bench/hit_inprocess.py``
"""

from __future__ import annotations

import asyncio
import random
import socket
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgecache.app import Node
from edgecache.config import demo_config
from edgecache.edge.http1 import Connection, Request
from edgecache.store.partial import PARTIAL_SUFFIX, PartialEntry

N = 100_000
KEYS = 10_000


class CountingTransport:
    """Stands in for the socket: accepts writes, never blocks."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: list[bytes]) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def best(fn: Any) -> float:
    """CPU µs per call of ``fn``, best of 5 runs. The thread's CPU clock, not the wall clock: on a
    shared machine a run that is preempted does not count the time other processes took."""
    runs = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(N):
            fn()
        runs.append((time.thread_time() - started) / N * 1e6)
    return min(runs)


def best_of_batch(fn: Any, per_call: int) -> float:
    """CPU µs per request of ``fn``, which serves ``per_call`` requests; best of 5 runs of ``N``."""
    runs = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(N // per_call):
            fn()
        runs.append((time.thread_time() - started) / N * 1e6)
    return min(runs)


async def main() -> None:
    data, control, origin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(data, control, origin).model_copy(update={"data_dir": Path(tmp)})
        node = Node(config)
        await node.start()
        try:
            url = f"http://127.0.0.1:{data}/products/1"
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            server = node._data
            assert server is not None
            conn = Connection(server)
            conn.connection_made(CountingTransport())  # type: ignore[arg-type]
            raw = f"GET /products/1 HTTP/1.1\r\nHost: 127.0.0.1:{data}\r\n\r\n".encode()
            request = Request(
                "GET", "/products/1", {"host": f"127.0.0.1:{data}"}, b"", "1.1", True, "127.0.0.1"
            )
            server_path = best(lambda: conn.data_received(raw))
            # What a browser sends besides Host (about a dozen fields) is parsed on every hit too.
            browser = (
                raw[:-2]
                + b"".join(
                    b"X-Browser-%d: a typical value of a browser's field, %d\r\n" % (i, i) for i in range(12)
                )
                + b"\r\n"
            )
            browser_path = best(lambda: conn.data_received(browser))
            key = next(e.key for e in node.store if e.key.endswith("/products/1"))
            entry = node.store.peek(key)
            assert entry is not None
            for i in range(KEYS):
                node.store.put(replace(entry, key=f"{key}?n={i}"))
            many = [
                f"GET /products/1?n={i} HTTP/1.1\r\nHost: 127.0.0.1:{data}\r\n\r\n".encode()
                for i in random.Random(1).sample(range(KEYS), KEYS)
            ]
            feed = conn.data_received
            hits = node.stats.hits
            for one in many:
                feed(one)
            assert node.stats.hits == hits + KEYS, "every copy must be a hit"
            random_path = best_of_batch(lambda: [feed(one) for one in many], KEYS)
            handler = best(lambda: node.proxy(request, conn))
            ranged = Request(
                "GET",
                "/products/1",
                {"host": f"127.0.0.1:{data}", "range": "bytes=10-29"},
                b"",
                "1.1",
                True,
                "127.0.0.1",
            )
            assert node.proxy(ranged, conn) is None
            range_full = best(lambda: node.proxy(ranged, conn))
            entry = node.store.delete(key)
            assert entry is not None
            half = entry.body[: len(entry.body) // 2]
            node.store.put(
                PartialEntry.holding(
                    replace(entry, key=key + PARTIAL_SUFFIX), len(entry.body), ((0, half),), ""
                )
            )
            assert node.proxy(ranged, conn) is None, "the parts must answer the range"
            range_parts = best(lambda: node.proxy(ranged, conn))
            hits = node.stats.hits
        finally:
            await node.stop()
    print("| measure | µs per hit |")
    print("|---|---:|")
    print(f"| server path (parse, handler, response) | {server_path:.2f} |")
    print(f"| server path, Host and 12 more fields | {browser_path:.2f} |")
    print(f"| server path, 10k random keys (Host only) | {random_path:.2f} |")
    print(f"| cache handler alone | {handler:.2f} |")
    print(f"| handler, bytes=10-29 from the full entry | {range_full:.2f} |")
    print(f"| handler, bytes=10-29 from stored parts | {range_parts:.2f} |")
    print(f"\n{hits:,} hits served; best of 5 x {N:,}.")


if __name__ == "__main__":
    asyncio.run(main())
