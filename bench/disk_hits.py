"""Hits from disk, side by side: edgecache's persistent tier, nginx proxy_cache, Varnish -s file.

One command, prints a table:

    .venv/bin/python bench/disk_hits.py [--duration 10] [--objects 10000] [--large-objects 32]

For 1 KiB and 64 KiB objects (``--objects`` distinct URLs) and 8 MiB objects (``--large-objects``),
the URLs are warmed in each cache, then wrk (one thread, 50 connections, uniformly random URLs)
measures hits:
- ``edgecache disk``: restarted after the warm-up with a 1 MiB memory tier, so its memory is cold
  and nearly every hit is read from the disk tier (LMDB, pages in the page cache). Its
  ``max_object_bytes`` is 1 MiB, so the 8 MiB objects are stored in chunks and streamed from disk
  (``store/chunked.py``);
- ``edgecache memory``: the same URLs from a 2 GiB memory tier (the ratio the issue asks about);
- ``nginx proxy_cache``: hits from files in the page cache (``sendfile off``, as bench/run.py);
- ``varnish -s file``: Varnish's file storage (a memory-mapped file).

Columns: requests per second and latencies (wall clock: noisy on the shared machine), and
``cpu µs/req``, the server's own CPU time (every process and thread of it, from /proc) per request
served during the run: what one hit costs the server, the figure to trust when other work shares
the cores. wrk runs on the same 2 cores (its CPU is printed): the wall figures are lower bounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from pathlib import Path

import _client as client
import _servers as srv
import _wrk as wrk

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin" / "edgecache"
COLD_MEMORY = 1 << 20
DISK_MAX_OBJECT = 1 << 20
DISK_BUDGET = 4 << 30
"""As nginx's ``max_size``: every object of the run fits (the default 1 GiB would evict 8 MiB ones)."""

LUA = """\
request = function()
  return wrk.format("GET", string.format("{prefix}%06d", math.random(0, {n} - 1)))
end
"""


def metric(server: srv.Server, name: str) -> float:
    """An edgecache metric summed over its labels (``edgecache_disk_write_queue``: changes waiting
    for its disk writers; ``edgecache_disk_dropped_writes``: fills they dropped)."""
    url = f"http://127.0.0.1:{server.extra['control_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def warmed(server: srv.Server, paths: list[str]) -> None:
    cold = client.warm(server.port, paths, server.status_header)
    rounds = 0
    while cold and "control_port" in server.extra and rounds < 5:
        # Filling 10k objects through a 1 MiB memory tier outruns the disk writer (a synced commit
        # per batch), and a fill that finds the fill ring full is dropped, not waited for: wait
        # until what was fetched is written, then ask again for what was not a HIT (a dropped fill
        # is fetched again, and written, in its turn).
        rounds += 1
        deadline = time.monotonic() + 300
        while metric(server, "edgecache_disk_write_queue") > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        cold = client.warm(server.port, cold, server.status_header)
    if "control_port" in server.extra and rounds:
        dropped = metric(server, "edgecache_disk_dropped_writes")
        print(f"  ({server.name}: warmed in {rounds + 1} rounds, {dropped:.0f} fills dropped)", flush=True)
    if cold:
        raise srv.ServerError(f"{server.name}: {len(cold)} URLs never answered HIT (e.g. {cold[0]})")


def start_disk(tmp: Path, origin: srv.Server) -> srv.Server:
    return srv.start_edgecache(
        tmp,
        origin.port,
        BIN,
        name="ec-disk",
        memory=COLD_MEMORY,
        max_object=DISK_MAX_OBJECT,
        disk_budget=DISK_BUDGET,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--large-objects", type=int, default=32, help="0: leave the 8 MiB case out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecache-disk-hits-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)  # varnishd reads its VCL and file storage after dropping privileges
        started: list[srv.Server] = []
        try:
            origin = srv.start_origin(tmp)
            started.append(origin)
            caches = {
                "nginx proxy_cache": srv.start_nginx_cache(tmp, origin.port),
                "varnish -s file": srv.start_varnish(tmp, origin.port, storage=f"file,{tmp}/varnish.bin,2g"),
                "edgecache memory": srv.start_edgecache(tmp, origin.port, BIN, name="ec-memory"),
                "edgecache disk": start_disk(tmp, origin),
            }
            started += caches.values()
            head = ("req/s", 10), ("p50 ms", 9), ("p99 ms", 9), ("errors", 8), ("wrk cpu%", 10)
            head += (("cpu µs/req", 12),)
            print(f"{'server':<20}{'size':>7}" + "".join(f"{t:>{w}}" for t, w in head))
            sizes = (("1 KiB", "/obj/", args.objects), ("64 KiB", "/mobj/", args.objects))
            if args.large_objects:
                sizes += (("8 MiB", "/lobj/", args.large_objects),)
            for size, prefix, n in sizes:
                paths = [f"{prefix}{i:06d}" for i in range(n)]
                script = tmp / f"rand{prefix.strip('/')}.lua"
                script.write_text(LUA.format(prefix=prefix, n=n))
                for name, server in list(caches.items()):
                    warmed(server, paths)
                    if name == "edgecache disk":
                        srv.stop(server)
                        started.remove(server)
                        server = caches[name] = start_disk(tmp, origin)
                        started.append(server)
                    pids = server.pids()
                    cpu_before = srv.cpu_seconds(pids)
                    res = wrk.run(f"http://127.0.0.1:{server.port}/", args.duration, script)
                    cpu = srv.cpu_seconds(pids) - cpu_before
                    print(
                        f"{name:<20}{size:>7}{res.rps:>10.0f}{res.p50_ms:>9.2f}{res.p99_ms:>9.2f}"
                        f"{res.errors:>8}{res.wrk_cpu:>10.0f}{cpu / max(res.requests, 1) * 1e6:>12.1f}",
                        flush=True,
                    )
        finally:
            for server in reversed(started):
                srv.stop(server)


if __name__ == "__main__":
    main()
