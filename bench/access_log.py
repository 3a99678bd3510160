"""What the access log costs a cache hit: in process (wall and CPU time), and end to end with wrk.

Method:
- In process (as ``hit_inprocess.py``): a demo node with the access log on (its formatter process
  running and writing a file), one URL warmed, the same request bytes fed straight into data-plane
  connections whose transport only counts writes. "off" is the plain ``Connection`` and the cache
  handler. "on" is ``LoggedConnection`` putting records in the node's ring through the C
  capture (the shipped design, decision 0017); "hooks only" is the same connection calling a C
  callable that records nothing. ``PYTHONPATH=<another checkout>/src ... --no-wrk`` measures
  that checkout's capture, for a before/after (decision 0016's rejected hand-overs, a writer
  thread and a queue to a process, were measured with this bench at commit c4eded1). Best of
  ``--inprocess-rounds`` interleaved rounds of 100,000 hits; per hit, wall-clock µs and CPU µs
  of this process (``process_time``: the loop and any thread of ours, not the formatter process,
  whose own CPU per line is shown apart).
- End to end: two ``edgecache serve`` processes with the same configuration but the access log
  (combined), each in front of its own built-in demo origin, warmed; ``wrk -t1 -c50`` on one hot
  URL, rounds interleaved (off, on, off, on, ...) so drift on a shared machine hits both alike;
  median req/s with min-max, the server's CPU per request (the data-plane process, and its
  formatter child apart), and the CPU other processes took during the rounds.

``--browser`` gives the in-process requests a browser's 12 more fields (Referer and Cookie among
them) besides Host and User-Agent.

Run: ``.venv/bin/python bench/access_log.py [--rounds N] [--duration S] [--no-wrk] [--browser]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import _servers as srv
import _wrk as wrk
from hit_inprocess import CountingTransport

from edgecache.app import Node
from edgecache.config import Logging, demo_config
from edgecache.edge.accesslog import LoggedConnection
from edgecache.edge.http1 import Connection, HttpServer, Request
from edgecache.edge.logring import RingWriter

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / ".venv" / "bin" / "edgecache"
N = 100_000
FLUSH_EVERY = 0.1
SHIPPED = "on (ring, shipped)"
BROWSER = (
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/catalogue/page/2\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r\n"
    b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-User: ?1\r\nUpgrade-Insecure-Requests: 1\r\nDNT: 1\r\nPriority: u=0, i\r\n"
)
"""What a browser sends besides Host and User-Agent (``--browser``): 12 more fields."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_cpu(pid: int) -> float:
    return srv.cpu_seconds([pid]) if pid else 0.0


class HooksOnly(LoggedConnection):
    """The access log's hook on the hit path (the server's test in ``respond`` and a C call),
    recording nothing: what reaching the capture costs before any value is captured."""

    __slots__ = ()

    def __init__(self, server: HttpServer, ring: RingWriter) -> None:
        super().__init__(server, ring)
        self._alog = _IGNORE


_IGNORE: Callable[[Request, bytes], object] = {}.get
"""A C callable of two arguments that keeps nothing (the capture's call, without its work)."""


async def in_process(tmp: Path, rounds: int, browser: bool) -> tuple[list[tuple[str, float, float]], float]:
    data, control, origin = free_port(), free_port(), free_port()
    config = demo_config(data, control, origin).model_copy(
        update={"data_dir": tmp, "logging": Logging(access_log=tmp / "access-ring.log")}
    )
    node = Node(config)
    await node.start()
    try:
        url = f"http://127.0.0.1:{data}/products/1"
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        server = node._data
        ring = node.access_ring
        formatter = node.access_formatter
        assert server is not None and ring is not None and formatter is not None
        raw = f"GET /products/1 HTTP/1.1\r\nHost: 127.0.0.1:{data}\r\nUser-Agent: bench\r\n".encode()
        raw += BROWSER if browser else b""
        raw += b"\r\n"
        conns: dict[str, Connection] = {
            "off": Connection(server),
            SHIPPED: LoggedConnection(server, ring),
            "  hooks only (nothing recorded)": HooksOnly(server, ring),
        }
        for conn in conns.values():
            conn.connection_made(CountingTransport())  # type: ignore[arg-type]
        proc = formatter._proc
        fpid = proc.pid if proc is not None else 0
        wall: dict[str, list[float]] = {name: [] for name in conns}
        cpu: dict[str, list[float]] = {name: [] for name in conns}
        formatter_cpu = 0.0
        # Rounds interleave the variants, so drift on a shared machine touches each alike.
        for _ in range(rounds):
            for name, conn in conns.items():
                feed = conn.data_received
                before = _child_cpu(fpid) if name == SHIPPED else 0.0
                started, c0 = time.perf_counter(), time.process_time()
                for _ in range(N):
                    feed(raw)
                wall[name].append((time.perf_counter() - started) / N * 1e6)
                cpu[name].append((time.process_time() - c0) / N * 1e6)
                if name == SHIPPED:
                    # Let the formatter catch up (and count its CPU) before the next variant runs.
                    await asyncio.sleep(0.5)
                    formatter_cpu += _child_cpu(fpid) - before
                await asyncio.sleep(0)
    finally:
        await node.stop()
    lines = sum(1 for _ in (tmp / "access-ring.log").open())
    per_line = formatter_cpu / max(1, rounds * N) * 1e6
    print(f"ring formatter: {lines:,} lines written", file=sys.stderr)
    return [(name, min(wall[name]), min(cpu[name])) for name in conns], per_line


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


def _is_formatter(pid: int) -> bool:
    try:
        return b"edgecache.edge.logtail" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def end_to_end(
    tmp: Path, rounds: int, duration: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float], float, int]:
    """req/s and server CPU µs per request by variant (every process of the server but the
    formatter: supervisor and workers), formatter CPU µs per line, others' CPU, lines."""
    servers = {
        "off": start(tmp, "off", ""),
        "on, combined": start(tmp, "on", f'[logging]\naccess_log = "{tmp}/access.log"\n'),
    }
    rps: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    formatter: list[float] = []
    others = 0.0
    try:
        for _ in range(rounds):
            for name, server in servers.items():
                pids = server.pids()
                children = [p for p in pids if _is_formatter(p)]
                own = [p for p in pids if p not in children]
                before = srv.others_cpu()
                own0, kids0 = srv.cpu_seconds(own), srv.cpu_seconds(children)
                result = wrk.run(f"http://127.0.0.1:{server.port}/products/1", duration)
                own1, kids1 = srv.cpu_seconds(own), srv.cpu_seconds(children)
                after = srv.others_cpu()
                others += sum(max(0.0, after[p] - before.get(p, 0.0)) for p in after)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors")
                rps[name].append(result.rps)
                requests = result.rps * duration
                cpu[name].append((own1 - own0) / requests * 1e6)
                if children:
                    formatter.append((kids1 - kids0) / requests * 1e6)
    finally:
        for server in servers.values():
            srv.stop(server)
    lines = sum(1 for _ in (tmp / "access.log").open())
    return rps, cpu, formatter, 100.0 * others / (rounds * len(servers) * duration), lines


def _print_in_process(figures: list[tuple[str, float, float]], per_line: float, rounds: int) -> None:
    _, base_wall, base_cpu = figures[0]
    print(
        "In process (parse + handler + response of a hot hit), best of "
        f"{rounds} interleaved rounds x {N:,}. CPU is this process's (the loop and any thread): "
        "the trustworthy figure on a shared machine; wall time is noisy. The indented row is "
        "the shipped capture's hooks alone (the server's tests and the call, recording nothing):\n"
    )
    print("| access log | CPU µs per hit | vs off | wall µs per hit (noisy) | vs off |")
    print("|---|---:|---:|---:|---:|")
    for name, us, cus in figures:
        print(f"| {name} | {cus:.2f} | {cus / base_cpu - 1:+.1%} | {us:.2f} | {us / base_wall - 1:+.1%} |")
    print(f"\nThe ring's formatter process: {per_line:.2f} µs of its own CPU per line.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--inprocess-rounds", type=int, default=7)
    parser.add_argument("--no-wrk", action="store_true", help="only the in-process figures")
    parser.add_argument("--no-inprocess", action="store_true", help="only the end-to-end figures")
    parser.add_argument(
        "--browser", action="store_true", help="in process, requests with a browser's 12 more fields"
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"access log cost per hit, commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    with tempfile.TemporaryDirectory(prefix="edgecache-accesslog-") as t:
        tmp = Path(t)
        if args.no_inprocess:
            figures, per_line = [], 0.0
        else:
            figures, per_line = asyncio.run(in_process(tmp, args.inprocess_rounds, args.browser))
        if figures:
            _print_in_process(figures, per_line, args.inprocess_rounds)
        if args.no_wrk:
            return
        rps, cpu, formatter, others, lines = end_to_end(tmp, args.rounds, args.duration)
        off = statistics.median(rps["off"])
        off_cpu = statistics.median(cpu["off"])
        print(
            f"\nEnd to end (NOISY: wrk, the servers and other helpers' work share 2 cores): "
            f"wrk -t1 -c50 -d{args.duration}s on /products/1 (hot hit), "
            f"{args.rounds} interleaved rounds; other processes took {others:.0f}% of a core on average:\n"
        )
        print("| access log | req/s median (min-max) | vs off | server CPU µs/req median | vs off |")
        print("|---|---|---:|---:|---:|")
        for name, values in rps.items():
            med = statistics.median(values)
            c = statistics.median(cpu[name])
            print(
                f"| {name} | {med:,.0f} ({min(values):,.0f}-{max(values):,.0f}) | {med / off - 1:+.1%} "
                f"| {c:.2f} | {c / off_cpu - 1:+.1%} |"
            )
        if formatter:
            print(
                f"\nThe formatter process: {statistics.median(formatter):.2f} µs of CPU per request (median)."
            )
        print(f"{lines:,} access-log lines written by the logged server.")


if __name__ == "__main__":
    main()
