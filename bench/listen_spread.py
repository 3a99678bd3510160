"""How evenly a node's worker processes share the data port: SO_REUSEPORT against one inherited socket.

Method: edgecache with ``[runtime] workers = 2`` and each ``[runtime] listen`` mode, in front of the
nginx origin of bench/_servers.py, /small warm in both workers. Then
- 200 connections opened one after the other, one request each (a lightly loaded node): which
  worker accepted each (the owner of the server-side socket, from /proc/net/tcp and /proc/PID/fd);
- ``wrk -t1 -c50`` for a few seconds (a busy node): which worker holds each of wrk's 50 connections
  half-way through, and how many of the run's responses each worker gave (``/metrics``).
The machine is shared with other work now: the figures are noisy (several rounds are printed).

Usage: ``.venv/bin/python bench/listen_spread.py [--rounds N] [--duration S]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import _servers as srv
import _wrk as wrk

REPO = Path(__file__).resolve().parent.parent
EDGECACHE_BIN = REPO / ".venv" / "bin" / "edgecache"


def server_sockets(port: int) -> dict[str, int]:
    """inode -> client port of every established server-side socket on ``port``."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01":
            out[f[9]] = int(f[2].split(":")[1], 16)
    return out


def owners(port: int, workers: list[int]) -> Counter[int]:
    """How many established connections each worker holds."""
    inodes = set(server_sockets(port))
    count: Counter[int] = Counter()
    for slot, pid in enumerate(workers):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        count[slot] = sum(f"socket:[{i}]" in links for i in inodes)
    return count


def fresh_connections(server: srv.Server, workers: list[int], n: int) -> Counter[int]:
    """Which worker answered each of ``n`` connections opened one after the other."""
    count: Counter[int] = Counter()
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/small", headers={"Host": "127.0.0.1"})
        conn.getresponse().read()
        held = owners(server.port, workers)
        for slot in held:
            if held[slot]:
                count[slot] += 1
        conn.close()
        time.sleep(0.002)  # the closed connection leaves the table before the next opens
    return count


def responses(server: srv.Server) -> Counter[int]:
    """Responses so far per worker slot, from the node's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.extra["control_port"]), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: Counter[int] = Counter()
    for line in text.splitlines():
        if line.startswith("edgecache_worker_responses_total{"):
            labels, value = line.rsplit(" ", 1)
            slot = int(labels.split('worker="')[1].split('"')[0])
            out[slot] += int(float(value))
    return out


def measure(server: srv.Server, duration: int) -> list[str]:
    """The three spreads of one running node, as percentages per worker slot."""
    time.sleep(1.0)
    workers = server.pids()[1:]
    sequential = fresh_connections(server, workers, 200)
    before = responses(server)
    held: list[Counter[int]] = []
    timer = threading.Timer(duration / 2, lambda: held.append(owners(server.port, workers)))
    timer.start()
    wrk.run(f"http://127.0.0.1:{server.port}/small", duration)
    timer.join()
    served = responses(server)
    served.subtract(before)
    return [split(sequential), split(held[0]), split(served)]


def split(count: Counter[int], slots: int = 2) -> str:
    total = sum(count.values()) or 1
    return " / ".join(f"{100 * count[s] / total:.0f}%" for s in range(slots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-spread-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    print("| mode | round | 200 sequential connections | wrk's 50 connections | wrk's responses |")
    print("|---|---:|---:|---:|---:|")
    try:
        for round_ in range(args.rounds):
            for mode in ("reuseport", "shared"):
                server = srv.start_edgecache(
                    tmp, origin.port, EDGECACHE_BIN, f"spread-{mode}-{round_}", workers=2, listen=mode
                )
                try:
                    print(
                        f"| {mode} | {round_ + 1} | " + " | ".join(measure(server, args.duration)) + " |",
                        flush=True,
                    )
                finally:
                    srv.stop(server)
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
