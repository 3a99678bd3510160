"""System calls per request of the miss mix ((d) of ``bench/run.py``), nginx and edgecache side by side.

Method: the bench origin, nginx's ``proxy_cache`` and edgecache (one process, its disk tier and fill
writer on, as ``bench/run.py`` starts them) run together; for each server in turn, a warm-up run of
the miss mix, then ``strace -c -f`` attached to all its processes (edgecache's fill writer child
too) for one ``wrk -t1 -c50`` run of ``--duration`` seconds (each run's keys never seen before).
A call's count over the requests wrk completed is its rate per request; calls made less than once
per 50 requests are left out (their total stays in the last row). strace slows the servers: the
counts are what is meant, not the rates.

Run: ``.venv/bin/python bench/miss_syscalls.py [--duration 4] [--rounds 1]`` (needs strace, wrk,
nginx).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import _servers as srv
import _wrk as wrk

REPO = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")
_TOTAL = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total$")


def count(
    server: srv.Server, script: Path, seed: int, duration: int, tmp: Path
) -> tuple[int, dict[str, int]]:
    """Requests completed and calls by name while wrk ran the miss mix against ``server``."""
    url = f"http://127.0.0.1:{server.port}/"
    wrk.run(url, 2, script, (str(seed + 5 * 10**7),))
    out = tmp / f"{server.name}-{seed}.strace"
    argv = ["strace", "-c", "-f", "-o", str(out)]
    for pid in server.pids():
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attached to every thread before the first request
        res = wrk.run(url, duration, script, (str(seed),))
    finally:
        tracer.terminate()
        tracer.wait(30)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        total = _TOTAL.match(line)
        if total:
            calls["total"] = int(total.group(1))
            continue
        row = _ROW.match(line)
        if row:
            calls[row.group(2)] = int(row.group(1))
    return res.requests, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-syscalls-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    servers: list[srv.Server] = []
    try:
        script = wrk.write_scripts(tmp)["missmix"]
        servers.append(srv.start_nginx_cache(tmp, origin.port))
        servers.append(srv.start_edgecache(tmp, origin.port, REPO / ".venv" / "bin" / "edgecache"))
        for server in servers:
            srv.wait_listening(server, 60)
        seed = 10**8
        for round_no in range(args.rounds):
            for server in servers:
                seed += 10**8
                requests, calls = count(server, script, seed, args.duration, tmp)
                print(f"\n{server.name}, round {round_no + 1}: {requests:,} requests under strace\n")
                print("| call | per request |\n|---|---:|")
                total = calls.pop("total", 0)
                for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
                    if n * 50 >= requests:
                        print(f"| {name} | {n / requests:.2f} |")
                print(f"| all calls | {total / requests:.2f} |")
    finally:
        for server in servers:
            srv.stop(server)
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
