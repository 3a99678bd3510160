"""What a data-plane worker adds to each hit: its ledger check (decisions 0014, 0026).

A worker (``cluster/worker.py``) serves every request through ``Worker.handler()``: one read of the
position board's published word, a comparison with the position it has applied, then the proxy.
That is what a node with its control plane in a process of its own (``control_plane = "process"``)
pays per request over one process serving both planes, which calls the proxy directly.

Method: one ``Worker`` in this process (its own board and channel, no supervisor), serving the
demo origin's ``/products/1`` warmed by a real request; then, alternating in rounds, the proxy
alone and the worker's handler on the same prebuilt request (``bench/hit_inprocess.py``'s
"handler alone"), and the server path (``Connection.data_received`` of the raw request: parse,
handler, response) of a connection served by each. CPU µs per hit (the thread's clock), best of
``--rounds`` runs of 100,000 each; the difference is the check's cost.

Run: ``.venv/bin/python bench/worker_hit_check.py [--rounds 7]``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from hit_inprocess import CountingTransport, free_port

from edgecache.cluster.board import PositionBoard
from edgecache.cluster.channel import Channel
from edgecache.cluster.worker import Worker
from edgecache.config import demo_config
from edgecache.demo import origin as demo_origin
from edgecache.edge.http1 import Connection, HttpServer, Request

N = 100_000


def per_call(fn: Callable[[], object]) -> float:
    """CPU µs per call of ``fn`` over ``N`` calls."""
    started = time.thread_time()
    for _ in range(N):
        fn()
    return (time.thread_time() - started) / N * 1e6


async def main(rounds: int) -> None:
    data, origin_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(data, free_port(), origin_port).model_copy(update={"data_dir": Path(tmp)})
        origin = await demo_origin.start("127.0.0.1", origin_port)
        board = PositionBoard.create(1)
        ours, theirs = socket.socketpair()
        channel = await Channel.open(ours)
        worker = Worker(config, 0, board, channel)
        try:
            await worker.node.start_data(handler=worker.handler())
            url = f"http://127.0.0.1:{data}/products/1"
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            server = worker.node._data
            assert server is not None
            checked = Connection(server)
            checked.connection_made(CountingTransport())  # type: ignore[arg-type]
            # The same server's settings with the proxy itself as the handler: one process's data plane.
            plain_server = HttpServer(worker.node.proxy.__call__, config.limits, asyncio.get_running_loop())
            plain = Connection(plain_server)
            plain.connection_made(CountingTransport())  # type: ignore[arg-type]
            raw = f"GET /products/1 HTTP/1.1\r\nHost: 127.0.0.1:{data}\r\n\r\n".encode()
            request = Request(
                "GET", "/products/1", {"host": f"127.0.0.1:{data}"}, b"", "1.1", True, "127.0.0.1"
            )
            handle = worker.handler()
            proxy = worker.node.proxy.__call__
            hits = worker.node.stats.hits
            runs: dict[str, list[float]] = {}
            measures: dict[str, Callable[[], object]] = {
                "handler: the proxy alone (one process)": lambda: proxy(request, plain),
                "handler: behind the worker's ledger check": lambda: handle(request, checked),
                "server path, one process's handler": lambda: plain.data_received(raw),
                "server path, the worker's handler": lambda: checked.data_received(raw),
            }
            for _ in range(rounds):
                for label, fn in measures.items():
                    runs.setdefault(label, []).append(per_call(fn))
            served = worker.node.stats.hits - hits
            assert served == rounds * len(measures) * N, "every request must be a hit"
        finally:
            await worker.stop()
            channel.close()
            theirs.close()
            board.close()
            await origin.cleanup()
    best = {label: min(values) for label, values in runs.items()}
    print(f"| measure | CPU µs per hit, best of {rounds} x {N:,} |")
    print("|---|---:|")
    for label, value in best.items():
        print(f"| {label} | {value:.3f} |")
    labels = list(best)
    print(
        f"\nthe check adds {best[labels[1]] - best[labels[0]]:.3f} µs to the handler, "
        f"{best[labels[3]] - best[labels[2]]:.3f} µs to the server path ({served:,} hits served)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args().rounds))
