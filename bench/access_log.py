"""What the access log costs a cache hit: in process, and end to end with wrk.

Method:
- In process (as ``hit_inprocess.py``): a demo node, one URL warmed, the same request bytes fed
  straight into a data-plane connection whose transport only counts writes. "off" is the plain
  ``Connection`` and the cache handler; "on" is ``LoggedConnection`` and ``LoggedHandler`` with the
  writer thread running and writing to a file, so its formatting competes for the interpreter as
  it does in production. Best of 7 interleaved rounds of 100,000 hits each.
- End to end: two ``edgecache serve`` processes with the same configuration but the access log
  (combined), each in front of its own built-in demo origin, warmed; ``wrk -t1 -c50`` on one hot
  URL, rounds interleaved (off, on, off, on, ...) so drift on a shared machine hits both alike;
  median req/s with min-max, and the CPU other processes took during the rounds.

Run: ``.venv/bin/python bench/access_log.py [--rounds N] [--duration S]``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Literal

import _servers as srv
import _wrk as wrk
from hit_inprocess import CountingTransport

from edgecache.app import Node
from edgecache.config import demo_config
from edgecache.edge.accesslog import AccessLog, LoggedConnection, LoggedHandler
from edgecache.edge.http1 import Connection

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / ".venv" / "bin" / "edgecache"
N = 100_000
ROUNDS = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def in_process(tmp: Path) -> list[tuple[str, float]]:
    data, control, origin = free_port(), free_port(), free_port()
    config = demo_config(data, control, origin).model_copy(update={"data_dir": tmp})
    node = Node(config)
    await node.start()
    logs: list[AccessLog] = []
    try:
        url = f"http://127.0.0.1:{data}/products/1"
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        server = node._data
        assert server is not None
        raw = f"GET /products/1 HTTP/1.1\r\nHost: 127.0.0.1:{data}\r\nUser-Agent: bench\r\n\r\n".encode()
        # A connection takes the server's handler when it is made: the plain one gets the proxy.
        conns: dict[str, Connection] = {"off": Connection(server)}
        server.handler = LoggedHandler(node.proxy)
        formats: tuple[Literal["combined", "json"], ...] = ("combined", "json")
        for fmt in formats:
            access = AccessLog(tmp / f"access-{fmt}.log", fmt, node.zones)
            access.start()
            logs.append(access)
            conns[f"on, {fmt}"] = LoggedConnection(server, access)
        server.handler = node.proxy
        for conn in conns.values():
            conn.connection_made(CountingTransport())  # type: ignore[arg-type]
        runs: dict[str, list[float]] = {name: [] for name in conns}
        # Rounds interleave the variants, so drift on a shared machine touches each alike.
        for _ in range(ROUNDS):
            for name, conn in conns.items():
                feed = conn.data_received
                started = time.perf_counter()
                for _ in range(N):
                    feed(raw)
                runs[name].append((time.perf_counter() - started) / N * 1e6)
    finally:
        for access in logs:
            await asyncio.to_thread(access.close)
            if access.dropped:
                print(
                    f"note: {access.format}: {access.dropped:,} records dropped (writer behind)",
                    file=sys.stderr,
                )
        await node.stop()
    return [(name, min(values)) for name, values in runs.items()]


TOML = """\
data_dir = "{tmp}/{name}-data"
[data]
host = "127.0.0.1"
port = {port}
[control]
host = "127.0.0.1"
port = {control}
[demo_origin]
host = "127.0.0.1"
port = {origin}
[[zones]]
id = "023e105f4ecef8ad9ca31a8372d0c353"
name = "demo.test"
hostnames = ["127.0.0.1", "localhost"]
origin = "http://127.0.0.1:{origin}"
{logging}
"""


def start(tmp: Path, name: str, logging: str) -> srv.Server:
    port, control, origin = free_port(), free_port(), free_port()
    toml = tmp / f"{name}.toml"
    toml.write_text(
        TOML.format(tmp=tmp, name=name, port=port, control=control, origin=origin, logging=logging)
    )
    server = srv.spawn(name, [str(BINARY), "serve", "--config", str(toml)], port, "cf-cache-status", tmp)
    url = f"http://127.0.0.1:{port}/products/1"
    for _ in range(3):
        urllib.request.urlopen(url, timeout=10).read()
    return server


def end_to_end(tmp: Path, rounds: int, duration: int) -> tuple[dict[str, list[float]], float, int]:
    servers = {
        "off": start(tmp, "off", ""),
        "on, combined": start(tmp, "on", f'[logging]\naccess_log = "{tmp}/access.log"\n'),
    }
    rps: dict[str, list[float]] = {name: [] for name in servers}
    others = 0.0
    try:
        for _ in range(rounds):
            for name, server in servers.items():
                before = srv.others_cpu()
                result = wrk.run(f"http://127.0.0.1:{server.port}/products/1", duration)
                after = srv.others_cpu()
                others += sum(max(0.0, after[p] - before.get(p, 0.0)) for p in after)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors")
                rps[name].append(result.rps)
    finally:
        for server in servers.values():
            srv.stop(server)
    lines = sum(1 for _ in (tmp / "access.log").open())
    return rps, 100.0 * others / (rounds * len(servers) * duration), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--no-wrk", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"access log cost per hit, commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    with tempfile.TemporaryDirectory(prefix="edgecache-accesslog-") as t:
        tmp = Path(t)
        figures = asyncio.run(in_process(tmp))
        base = figures[0][1]
        print(
            "In process (parse + handler + response; writer thread running), "
            "best of 7 interleaved rounds x 100,000:\n"
        )
        print("| access log | µs per hit | vs off |")
        print("|---|---:|---:|")
        for name, us in figures:
            print(f"| {name} | {us:.2f} | {us / base - 1:+.1%} |")
        if args.no_wrk:
            return
        rps, others, lines = end_to_end(tmp, args.rounds, args.duration)
        off = statistics.median(rps["off"])
        print(
            f"\nEnd to end: wrk -t1 -c50 -d{args.duration}s on /products/1 (hot hit), "
            f"{args.rounds} interleaved rounds; other processes took {others:.0f}% of a core on average:\n"
        )
        print("| access log | req/s median (min-max) | vs off |")
        print("|---|---|---:|")
        for name, values in rps.items():
            med = statistics.median(values)
            print(f"| {name} | {med:,.0f} ({min(values):,.0f}-{max(values):,.0f}) | {med / off - 1:+.1%} |")
        print(f"\n{lines:,} access-log lines written by the logged server.")


if __name__ == "__main__":
    main()
