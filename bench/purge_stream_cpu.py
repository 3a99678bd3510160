"""What a stream of purges costs a node in CPU, with acknowledgements folded into the next ledger
transaction and without.

Run: ``.venv/bin/python bench/purge_stream_cpu.py [--seconds S] [--rate R]`` (about a minute). A node
(bench/_purge_node.py, SQLite, reclaimer running) receives ``--rate`` purges a second (default 50) of
unrelated tags through ``POST /client/v4/zones/{id}/purge_cache`` on one keep-alive connection, for
``--seconds`` (default 10). Two settings, alternated over two rounds, each on a fresh node:
``ACK_DELAY`` 0 (each acknowledgement committed in a transaction of its own, as before) and the
shipped 0.1 s (it rides in the next purge's transaction). Printed: the node process's CPU time per
purge (every thread: the event loop, the ledger writer, SQLite), which is what a purge stream takes
from the hits the same process serves, and the API latency. CPU time, not wall time: the machine is
shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _servers as srv
from _purge_client import EdgeNode


def one(tmp: Path, origin: int, delay: float, seconds: float, rate: float, tag: str) -> dict[str, float]:
    node = EdgeNode(f"stream-{tag}", tmp, origin, 64 << 20, extra=("--ack-delay", str(delay)))
    try:
        node.purge({"tags": ["warm-up"]})
        node.cmd("drain")
        cpu0 = node.cmd("cpu")["process_s"]
        lat: list[float] = []
        start = time.monotonic()
        n = int(seconds * rate)
        for i in range(n):
            ms, status, _ = node.purge({"tags": [f"stream-{tag}-{i}"]})
            if status != 200:
                raise RuntimeError(f"purge answered {status}")
            lat.append(ms)
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        time.sleep(0.3)  # the last acknowledgements
        cpu = node.cmd("cpu")["process_s"] - cpu0
        lat.sort()
        return {"cpu_ms": cpu * 1000 / n, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1]}
    finally:
        node.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=50.0)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-stream-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    results: dict[float, list[dict[str, float]]] = {0.0: [], 0.1: []}
    try:
        for r in range(2):
            for delay in results:
                results[delay].append(one(tmp, origin.port, delay, args.seconds, args.rate, f"{r}-{delay}"))
    finally:
        srv.stop(origin)
    print(f"{args.rate:.0f} purges/s for {args.seconds:.0f} s, two rounds each, median of the rounds\n")
    print("| acknowledgements | node CPU ms per purge | API p50 ms | API p99 ms |")
    print("|---|---:|---:|---:|")
    for delay, runs in results.items():
        label = (
            "own transaction each (ACK_DELAY 0)" if delay == 0 else "in the next purge's (ACK_DELAY 0.1 s)"
        )
        cpu, p50, p99 = (statistics.median(x[k] for x in runs) for k in ("cpu_ms", "p50", "p99"))
        print(f"| {label} | {cpu:.2f} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
