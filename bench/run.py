"""Hit-path benchmark: edgecache against nginx proxy_cache and Varnish, on one machine, one command.

Method (see /work/shared/reference/bench-anchors.md for the reference setup and figures):

- One nginx origin serves /small (1 KiB), /medium (64 KiB) and /obj/NNNNNN (1 KiB, tagged), all with
  `Cache-Control: public, max-age=3600`. In front of it, each on its own port: nginx proxy_cache
  (1 worker, sendfile off, its cache files on tmpfs, 64 idle origin connections kept), Varnish
  (`-s malloc`) and edgecache (its defaults: memory tier and LMDB disk tier, the latter in the temp dir,
  not on tmpfs; each table's setup line names the filesystems). All are started here from configs
  written into a temp dir, and stopped here by PID.
- The ceiling: "bare" (`_bare.py`) is an asyncio Protocol on httptools + uvloop that answers prebuilt
  bytes (no key, no lookup, no Age). It runs in the hit scenarios (not the miss mix, where it would
  answer without an origin) so that every run says how far edgecache is from what Python on this stack
  can do at all; it is not a peer, and the "vs best peer" ratio ignores it.
- Requests per server CPU-second (req/s divided by the server's CPU share, from utime + stime in
  /proc/<pid>/stat of the server's process tree) is reported for every server: on two shared cores the
  req/s ratios move with whatever else runs, while the work per request does much less, and it is the
  figure that carries to machines with more cores.
- Each cache is warmed (every URL requested until the cache itself says HIT) before its runs; the
  origin's CPU during a hit run is reported, and should be ~0.
- Load is `wrk -t1 -c50 -d10s --latency` per run (`--client h2load`: `h2load --h1 -t1 -c50 -m1 -D10`,
  the same keep-alive load from a client that costs less CPU per 64 KiB response; it requests one
  fixed URL, so it runs the hit scenarios (a) and (b) only; decision 0023). Runs are interleaved and
  rotated (A B C, B C A, C A B, ...), not all runs of one server and then the next, nor one server
  always first, so slow drift on this noisy shared VM and a round's place affect every server alike.
- Each metric is reported as the median of the rounds with min-max, because single runs vary by
  ±10-15% here and outliers are common; the median ignores one bad run, min-max shows the spread.
- wrk runs on the same 2 cores as the server and the kernel's loopback path: the figures are what the
  whole box does end to end, not server capacity. The client's CPU is reported; near 100% of a core
  means the figure is a lower bound set by the client.
- One process per server by default. `--workers N` runs edgecache with `runtime.workers = N` and nginx
  with `worker_processes N` (Varnish runs its thread pools either way; the bare ceiling and the origin
  stay one process), for a whole-machine comparison next to the one-process one; each table says which.
- The machine is shared with other work. Before each run the harness waits (at most 10 s) until processes
  outside the benchmark use < 15% of a core, and each row reports what they took during its runs
  ("other CPU %"); a row with a high figure there was measured against a noisy neighbour.
- Memory (separate step): fresh Varnish and edgecache are filled with 100,000 distinct 1 KiB objects;
  resident anonymous + shared memory (RssAnon + RssShmem, not the page cache of mapped files such as
  the disk tier's) before and after gives the growth per object; overhead = growth - 1,024 bytes of body.

Usage: `.venv/bin/python bench/run.py [--rounds N] [--duration S] [--only SCENARIO ...] [--memory |
--no-memory] [--keep] [--baseline EXE] [--client wrk|h2load] [--workers N]`. Results are printed and
written to bench/out/results.md.
``--baseline`` adds another build of edgecache (its ``edgecache`` executable) as one more server in
the same interleaved rounds, so a change is measured before and after against the same peers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import _client as client
import _h2load as h2load
import _report as report
import _servers as srv
import _wrk as wrk

REPO = Path(__file__).resolve().parent.parent
EDGECACHE_BIN = REPO / ".venv" / "bin" / "edgecache"
OUT = REPO / "bench" / "out" / "results.md"
PACKAGES = ("nginx", "varnish", "varnish-modules", "wrk")
CLIENT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}
"""The Debian package of each load generator ``--client`` can name."""
WRK_VERSION, H2LOAD_VERSION = r"wrk \S+/(\S+)", r"nghttp2/(\S+)"
MEMORY_OBJECTS = 100_000
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Spec:
    """A hit-path scenario: what wrk requests and which URLs must be warm first."""

    name: str
    title: str
    path: str
    script: str | None
    warm_paths: Callable[[], list[str]]
    ceiling: bool = True
    """Whether the bare ceiling server runs in this scenario (only where it answers what a cache would)."""


SCENARIOS = (
    Spec("small", "(a) hot 1 KiB hit, /small", "/small", None, lambda: ["/small"]),
    Spec("medium", "(b) hot 64 KiB hit, /medium", "/medium", None, lambda: ["/medium"]),
    Spec(
        "rand10k",
        "(c) 10k random warm keys, 1 KiB",
        "/",
        "rand10k",
        lambda: [f"/obj/{i:06d}" for i in range(10_000)],
    ),
    Spec(
        "missmix",
        "(d) miss-heavy: ~90% never-seen keys, ~10% one hot key",
        "/",
        "missmix",
        lambda: ["/small"],
        ceiling=False,
    ),
)


LATENCY = {"wrk": ("p50", "p99"), "h2load": ("mean", "max")}
"""The two latency figures each client reports (h2load prints no percentiles without a per-request log)."""


def setup_line(workers: int, ceiling: bool = True) -> str:
    """What each table says about the servers' configuration (``ceiling``: the bare server runs too),
    and where their caches live: nginx's cache files and edgecache's disk tier are on different
    filesystems (``workspace``), and what a cached file costs depends on its filesystem."""
    bare = ", bare one process" if ceiling else ""
    if workers == 1:
        processes = (
            "One process per server: edgecache `workers = 1`, nginx `worker_processes 1`, "
            f"Varnish with its default thread pools{bare}."
        )
    else:
        processes = (
            f"Whole machine: edgecache `workers = {workers}`, nginx `worker_processes {workers}`, "
            f"Varnish with its default thread pools{bare}."
        )
    tmp = Path(tempfile.gettempdir())
    nginx = SHM if SHM.is_dir() else tmp
    caches = (
        f"Caches: nginx's files on {filesystem(nginx)} ({nginx}), edgecache's LMDB disk tier (behind its "
        f"memory tier) on {filesystem(tmp)} ({tmp}), Varnish in memory (`-s malloc`)."
    )
    return f"{processes} {caches}"


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``...), from /proc/mounts."""
    path = path.resolve()
    best, kind = "", "an unknown filesystem"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = Path(fields[1])
            if (mount == path or mount in path.parents) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def fixed_url(spec: Spec) -> bool:
    """Whether the scenario requests one URL (all h2load can do: it has no per-request script)."""
    return spec.script is None


# --- tools ---------------------------------------------------------------------------------------------


def _have_tools(load_client: str) -> bool:
    xkey = list(Path("/usr/lib").glob("*/varnish/vmods/libvmod_xkey.so"))
    return bool(xkey) and all(shutil.which(t) for t in ("nginx", "varnishd", "wrk", load_client))


def ensure_tools(load_client: str = "wrk") -> None:
    """apt-get install the servers, wrk and the chosen client if missing, without letting Debian start
    its services."""
    if _have_tools(load_client):
        return
    packages = sorted({*PACKAGES, CLIENT_PACKAGES[load_client]})
    if os.geteuid() != 0:
        sys.exit(f"missing tools; as root run: apt-get install -y {' '.join(packages)}")
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["timeout", "600", "apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["timeout", "900", "apt-get", "install", "-y", "-q", *packages], check=True, env=env)
    finally:
        if created:
            policy.unlink()


def versions(load_client: str = "wrk") -> str:
    def version(argv: list[str], pattern: str) -> str:
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        found = re.search(pattern, p.stdout + p.stderr)
        return found.group(1) if found else "?"

    nginx = version(["nginx", "-v"], r"nginx/(\S+)")
    varnish = version(["varnishd", "-V"], r"varnish-(\S+)")
    if load_client == "h2load":
        client = f"h2load {version(['h2load', '--version'], H2LOAD_VERSION)}"
    else:
        client = f"wrk {version(['wrk', '-v'], WRK_VERSION)}"
    return f"nginx {nginx}, Varnish {varnish}, {client}"


# --- servers -------------------------------------------------------------------------------------------


class Fleet:
    """Every server this run started, so they can all be stopped by PID on the way out."""

    def __init__(self, tmp: Path, nginx_cache: Path) -> None:
        self.tmp = tmp
        self.nginx_cache = nginx_cache
        """Where nginx's proxy_cache keeps its files: on tmpfs (see ``workspace``)."""
        self.started: list[srv.Server] = []

    def start(self, name: str, starter: Callable[[], srv.Server]) -> srv.Server | str:
        """Start a server; on failure return the reason instead."""
        try:
            server = starter()
        except (srv.ServerError, OSError) as e:
            return str(e)
        self.started.append(server)
        return server

    def stop(self, server: srv.Server) -> None:
        srv.stop(server)
        if server in self.started:
            self.started.remove(server)

    def stop_all(self) -> None:
        for server in reversed(list(self.started)):
            self.stop(server)


def start_caches(
    fleet: Fleet, origin: srv.Server, baseline: Path | None = None, workers: int = 1
) -> tuple[list[srv.Server], dict[str, str]]:
    tmp, port = fleet.tmp, origin.port
    starters: dict[str, Callable[[], srv.Server]] = {
        "nginx": lambda: srv.start_nginx_cache(tmp, port, workers, fleet.nginx_cache),
        "varnish": lambda: srv.start_varnish(tmp, port),
        "edgecache": lambda: srv.start_edgecache(tmp, port, EDGECACHE_BIN, workers=workers),
        report.CEILING: lambda: srv.start_bare(tmp),
    }
    if baseline is not None:
        starters[report.BASELINE] = lambda: srv.start_edgecache(
            tmp, port, baseline, report.BASELINE, workers=workers
        )
    servers, unavailable = [], {}
    for name, starter in starters.items():
        got = fleet.start(name, starter)
        if isinstance(got, str):
            unavailable[name] = got
            print(f"{name}: not available ({got})", flush=True)
        else:
            servers.append(got)
    return servers, unavailable


# --- hit scenarios -------------------------------------------------------------------------------------


def warm(server: srv.Server, paths: list[str]) -> str | None:
    """Warm `paths`; return why the server is not warm, or None."""
    try:
        cold = client.warm(server.port, paths, server.status_header)
    except (TimeoutError, OSError) as e:
        return f"warm-up failed: {e!r}"
    if cold:
        return f"{len(cold)} of {len(paths)} URLs never answered {server.status_header}: HIT (e.g. {cold[0]})"
    return None


def others_busy(interval: float) -> float:
    """CPU % (of one core) that processes outside the benchmark took over `interval` seconds."""
    before = srv.others_cpu()
    time.sleep(interval)
    return 100 * sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in srv.others_cpu().items()) / interval


def wait_quiet(max_wait: float = 10.0, threshold: float = 15.0) -> None:
    """Wait (bounded) until the rest of the machine is nearly idle, so a neighbour's burst is not measured."""
    deadline = time.monotonic() + max_wait
    while others_busy(0.5) > threshold and time.monotonic() < deadline:
        pass


def measure(
    server: srv.Server,
    origin: srv.Server,
    spec: Spec,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    round_no: int,
) -> report.Sample:
    pids, opids = server.pids(), origin.pids()
    others0 = srv.others_cpu()
    cpu0, ocpu0, t0 = srv.cpu_seconds(pids), srv.cpu_seconds(opids), time.monotonic()
    url = f"http://127.0.0.1:{server.port}{spec.path}"
    if args.client == "h2load":
        h2 = h2load.run(url, args.duration)
        rps, latency, errors, client_cpu = h2.rps, (h2.mean_ms, h2.max_ms), h2.errors, h2.cpu
    else:
        script = scripts[spec.script] if spec.script else None
        extra = (str((round_no + 1) * 10**8),) if spec.name == "missmix" else ()
        res = wrk.run(url, args.duration, script, extra)
        rps, latency, errors, client_cpu = res.rps, (res.p50_ms, res.p99_ms), res.errors, res.wrk_cpu
    wall = time.monotonic() - t0
    cpu = 100 * (srv.cpu_seconds(pids) - cpu0) / wall
    ocpu = 100 * (srv.cpu_seconds(opids) - ocpu0) / wall
    others = 100 * sum(max(0.0, t - others0.get(pid, 0.0)) for pid, t in srv.others_cpu().items()) / wall
    return report.Sample(rps, latency, errors, cpu, client_cpu, ocpu, others)


T = TypeVar("T")


def round_order(servers: list[T], round_no: int) -> list[T]:
    """The servers in the order round ``round_no`` runs them: each round starts one server further
    on, so that over as many rounds as servers each runs in every place (on a busy machine the
    place in a round biases a server, and the baseline, added last, would always run last)."""
    if not servers:
        return []
    turn = round_no % len(servers)
    return servers[turn:] + servers[:turn]


def run_scenario(
    spec: Spec,
    servers: list[srv.Server],
    origin: srv.Server,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    unavailable: dict[str, str],
) -> report.Scenario:
    scn = report.Scenario(
        spec.name,
        spec.title,
        unavailable=dict(unavailable),
        client=args.client,
        latency=LATENCY[args.client],
        setup=setup_line(args.workers, spec.ceiling),
    )
    ready = []
    for server in servers:
        if server.name == report.CEILING and not spec.ceiling:
            continue
        why = server.why_dead() if not server.alive() else warm(server, spec.warm_paths())
        if why:
            scn.unavailable[server.name] = why
        else:
            ready.append(server)
    for round_no in range(args.rounds):
        for server in round_order(ready, round_no):
            if not server.alive():
                scn.unavailable[server.name] = f"died during the runs: {server.why_dead()}"
                ready.remove(server)
                continue
            wait_quiet()
            try:
                sample = measure(server, origin, spec, args, scripts, round_no)
            except (wrk.WrkError, h2load.H2loadError) as e:
                scn.unavailable[server.name] = str(e)
                ready.remove(server)
                continue
            scn.samples.setdefault(server.name, []).append(sample)
            print(
                f"  {spec.name} round {round_no + 1} {server.name}: {sample.rps:,.0f} req/s, "
                f"{scn.latency[1]} {sample.latency_ms[1]:.2f} ms, errors {sample.errors}, "
                f"other CPU {sample.other_cpu:.0f}%",
                flush=True,
            )
    for name in scn.samples:
        scn.unavailable.pop(name, None)
    return scn


# --- memory --------------------------------------------------------------------------------------------


def fill_and_measure(server: srv.Server, label: str, rss: Callable[[srv.Server], int]) -> report.Memory:
    client.request_all(server.port, ["/small"], server.status_header, concurrency=1, timeout=30)
    time.sleep(1)
    empty = rss(server)
    paths = [f"/obj/{i:06d}" for i in range(MEMORY_OBJECTS)]
    fill = client.request_all(server.port, paths, server.status_header, concurrency=32, timeout=600)
    time.sleep(2)
    full = rss(server)
    sample = random.Random(1).sample(paths, 1000)
    check = client.request_all(server.port, sample, server.status_header, concurrency=8, timeout=60)
    errors = len(fill.errors) + sum(n for status, n in fill.statuses.items() if status != 200)
    return report.Memory(
        label, MEMORY_OBJECTS, empty, full, fill.seconds, errors, len(sample), len(check.hits)
    )


def run_memory(fleet: Fleet, origin: srv.Server) -> tuple[list[report.Memory], dict[str, str]]:
    tmp, port = fleet.tmp, origin.port
    plan: list[tuple[str, str, Callable[[], srv.Server], Callable[[srv.Server], int]]] = [
        (
            "varnish",
            "varnish (cache-main child)",
            lambda: srv.start_varnish(tmp, port, "varnish-mem"),
            lambda s: srv.rss_bytes(srv.varnish_child(s)),
        ),
        (
            "edgecache",
            "edgecache (all its processes)",
            lambda: srv.start_edgecache(tmp, port, EDGECACHE_BIN, "edgecache-mem"),
            lambda s: sum(srv.rss_bytes(p) for p in s.pids()),
        ),
    ]
    results, unavailable = [], {}
    for name, label, starter, rss in plan:
        got = fleet.start(name, starter)
        if isinstance(got, str):
            unavailable[name] = got
            continue
        print(f"  memory: filling {name} with {MEMORY_OBJECTS:,} objects", flush=True)
        try:
            results.append(fill_and_measure(got, label, rss))
        except (TimeoutError, OSError, srv.ServerError) as e:
            unavailable[name] = f"fill failed: {e!r}" + ("" if got.alive() else f"; {got.why_dead()}")
        finally:
            fleet.stop(got)
    return results, unavailable


# --- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument(
        "--only",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only this hit scenario (repeatable); skips memory unless --memory",
    )
    p.add_argument("--memory", action="store_true", help="run the memory step (alone unless --only)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory step")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument(
        "--baseline",
        type=Path,
        help="an edgecache executable of another build (e.g. main), measured in the same rounds",
    )
    p.add_argument(
        "--client",
        choices=sorted(LATENCY),
        default="wrk",
        help="load generator (default wrk); h2load runs the one-URL scenarios small and medium only",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="edgecache runtime.workers and nginx worker_processes (default 1)",
    )
    args = p.parse_args(argv)
    if args.memory and args.no_memory:
        p.error("--memory and --no-memory exclude each other")
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.client == "h2load" and args.only:
        scripted = [s.name for s in SCENARIOS if s.name in args.only and not fixed_url(s)]
        if scripted:
            p.error(f"--client h2load cannot run {', '.join(scripted)} (one URL per run only)")
    return args


def plan(args: argparse.Namespace) -> tuple[list[Spec], bool]:
    """Which hit scenarios run, and whether the memory step runs."""
    if args.only:
        return [s for s in SCENARIOS if s.name in args.only], args.memory
    if args.memory:
        return [], True
    runnable = [s for s in SCENARIOS if args.client == "wrk" or fixed_url(s)]
    return runnable, not args.no_memory


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Fleet]:
    """A temp dir, a tmpfs dir for nginx's cache files, and a fleet; on exit (also Ctrl-C / SIGTERM)
    every server is stopped and both dirs are removed.

    nginx's cache goes to tmpfs because on the machine's ext4 (no journal) creating a file skips every
    inode freed in the last 60-300 s one by one: after a mass delete (a previous run's temp dir, a test
    suite) its misses cost 10x the CPU (``docs/benchmarks.md``, "nginx's slow miss rounds").
    """
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-bench-"))
    tmp.chmod(0o755)  # nginx workers and Varnish's sandbox user read configs and files here
    shm = Path(tempfile.mkdtemp(prefix="edgecache-bench-nginx-", dir=SHM if SHM.is_dir() else None))
    shm.chmod(0o755)
    fleet = Fleet(tmp, shm / "nginx-cache")
    try:
        yield fleet
    finally:
        fleet.stop_all()
        shutil.rmtree(shm, ignore_errors=True)
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(fleet: Fleet, args: argparse.Namespace) -> str:
    specs, memory = plan(args)
    origin = srv.start_origin(fleet.tmp)
    fleet.started.append(origin)
    parts = []
    if specs:
        servers, unavailable = start_caches(fleet, origin, args.baseline, args.workers)
        scripts = wrk.write_scripts(fleet.tmp)
        for spec in specs:
            print(f"scenario {spec.title}", flush=True)
            scn = run_scenario(spec, servers, origin, args, scripts, unavailable)
            parts.append(report.scenario_table(scn))
        for server in servers:
            fleet.stop(server)
    if memory:
        print("memory step", flush=True)
        parts.append(report.memory_table(*run_memory(fleet, origin)))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools(args.client)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with workspace(args.keep) as fleet:
        tables = bench(fleet, args)
    load = {
        "wrk": f"wrk -t1 -c50 -d{args.duration}s",
        "h2load": f"h2load --h1 -t1 -c50 -m1 -D{args.duration}",
    }[args.client]
    method = f"{load}, {args.rounds} interleaved rounds; median (min-max); " if plan(args)[0] else ""
    header = (
        f"# edgecache hit-path benchmark, {datetime.now():%Y-%m-%d %H:%M}\n\n"
        f"{os.cpu_count()} CPUs, {platform.platform()}; {versions(args.client)}.\n"
        f"{method}took {time.monotonic() - started:.0f} s.\n"
    )
    text = header + "\n" + tables
    print("\n" + text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
