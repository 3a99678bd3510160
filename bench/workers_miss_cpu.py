"""Where a miss's CPU goes, per process of a node, with one worker and with two.

Method: an nginx origin and an edgecache node (``bench/run.py``'s configuration and its miss-heavy
mix (d): ~90% never-seen keys, ~10% one hot key, ``wrk -t1 -c50``), once with ``runtime.workers = 1``
and once with ``--workers`` (2), rounds interleaved, a fresh node per run. During each run every
process of the node is read from ``/proc/<pid>/stat`` (utime + stime) and named by its role:
the supervisor (the ``edgecache serve`` process), the data-plane workers, their fill-writer children,
anything else. The figure is each role's CPU µs per request served (all the run's requests), best
run of ``--rounds`` by the whole node's CPU per request. ``--profile DIR``: one more run of each
with ``py-spy record --native`` on every process of the node (raw stacks in DIR; py-spy takes CPU
itself, so those runs are not in the table).

The machine is shared: wall-clock rates are noise, CPU per request less so; say which when quoting.

Run: ``.venv/bin/python bench/workers_miss_cpu.py [--rounds 3] [--duration 8] [--workers 2]``
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import _servers as srv
import _wrk as wrk

ROLES = ("supervisor", "workers", "fill writers", "other")


def role(pid: int, root: int) -> str:
    """What a process of the node is, by its command line."""
    if pid == root:
        return "supervisor"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    if b"edgecache.edge.fillwriter" in argv:
        return "fill writers"
    if b"edgecache.cluster.worker" in argv:
        return "workers"
    return "other"


def run_once(
    tmp: Path, origin: srv.Server, workers: int, seconds: int, first: int, script: Path, spy: Path | None
) -> tuple[float, dict[str, float]]:
    """(requests/s, CPU µs per request by role) of one run on a fresh node."""
    binary = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "edgecache"
    node = srv.start_edgecache(tmp / f"w{workers}-{first}", origin.port, binary, workers=workers)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        root = node.proc.pid
        pids = node.pids()
        before = {p: srv.cpu_seconds([p]) for p in pids}
        if spy is not None:
            for p in pids:
                out = spy / f"w{workers}-{role(p, root).replace(' ', '-')}-{p}.txt"
                argv = ["py-spy", "record", "--native", "-r", "200", "-f", "raw", "-o", str(out)]
                spies.append(
                    subprocess.Popen([*argv, "-p", str(p), "-d", str(seconds)], stderr=subprocess.DEVNULL)
                )
        res = wrk.run(f"http://127.0.0.1:{node.port}/", seconds, script, (str(first),))
        used: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        for p in node.pids():
            used[role(p, root)] += srv.cpu_seconds([p]) - before.get(p, 0.0)
        for s in spies:
            s.wait(timeout=seconds + 30)
    finally:
        for s in spies:
            with contextlib.suppress(ProcessLookupError):
                s.kill()
        srv.stop(node)
    return res.rps, {name: 1e6 * cpu / res.total for name, cpu in used.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per run")
    parser.add_argument("--workers", type=int, default=2, help="the run compared with one worker")
    parser.add_argument("--profile", type=Path, help="also one py-spy run of each, stacks in this directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-wmiss-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        script = wrk.write_scripts(tmp)["missmix"]
        best: dict[int, tuple[float, dict[str, float]]] = {}
        for r in range(args.rounds):
            for workers in (1, args.workers):
                rps, cpu = run_once(
                    tmp, origin, workers, args.duration, (r * 2 + workers) * 10**8, script, None
                )
                total = sum(cpu.values())
                print(f"round {r + 1}, workers {workers}: {rps:,.0f} req/s, {total:.1f} CPU µs per request")
                if workers not in best or sum(cpu.values()) < sum(best[workers][1].values()):
                    best[workers] = (rps, cpu)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for workers in (1, args.workers):
                run_once(tmp, origin, workers, args.duration, (99 + workers) * 10**8, script, args.profile)
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)
    w = args.workers
    print(f"\n| CPU µs per request (best of {args.rounds} by the node's total) | workers 1 | workers {w} |")
    print("|---|---:|---:|")
    for name in ROLES:
        print(f"| {name} | {best[1][1][name]:.1f} | {best[args.workers][1][name]:.1f} |")
    total = {w: sum(best[w][1].values()) for w in best}
    print(f"| whole node | {total[1]:.1f} | {total[args.workers]:.1f} |")
    print(f"| requests per node CPU-second | {1e6 / total[1]:,.0f} | {1e6 / total[args.workers]:,.0f} |")
    print(f"| req/s of that run (noise on a shared machine) | {best[1][0]:,.0f} | {best[w][0]:,.0f} |")


if __name__ == "__main__":
    main()
