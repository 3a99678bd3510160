"""Where a miss's CPU goes, per process of a node, with one worker and with two.

Method: an nginx origin and an edgecache node (``bench/run.py``'s configuration and its miss-heavy
mix (d): ~90% never-seen keys, ~10% one hot key, ``wrk -t1 -c50``), once with ``runtime.workers = 1``,
once with ``--workers`` (2), and once with as many workers and no fill locks
(``runtime.fill_lock_timeout = 0``, decision 0021), rounds interleaved, a fresh node per run.
During each run every process of the node is read from ``/proc/<pid>/stat`` (utime + stime) and
named by its role: the ``edgecache serve`` process (the data plane itself with one worker, the
supervisor with more), the data-plane workers, their fill-writer children,
anything else. The figure is each role's CPU µs per request served (all the run's requests), best
run of ``--rounds`` by the whole node's CPU per request. ``--profile DIR``: one more run of each
with ``py-spy record --native`` on every process of the node (raw stacks in DIR; py-spy takes CPU
itself, so those runs are not in the table).

The machine is shared: wall-clock rates are noise, CPU per request less so; say which when quoting.

Run: ``.venv/bin/python bench/workers_miss_cpu.py [--rounds 3] [--duration 8] [--workers 2] [--split]``
(``--split`` adds a column: one worker behind a control plane in a process of its own, decision 0026).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _servers as srv
import _wrk as wrk

ROLES = ("serve process", "workers", "fill writers", "other")
"""The ``edgecache serve`` process is the data plane with one worker, the supervisor with more."""


def role(pid: int, root: int) -> str:
    """What a process of the node is, by its command line."""
    if pid == root:
        return "serve process"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    if b"edgecache.edge.fillwriter" in argv:
        return "fill writers"
    if b"edgecache.cluster.worker" in argv:
        return "workers"
    return "other"


def switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far (an event
    loop's waits for events, a thread's for the interpreter lock; preemptions by other processes)."""
    total = [0, 0]
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total[0] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    total[1] += int(line.split()[1])
    return total[0], total[1]


def start(
    tmp: Path, origin: int, binary: Path, workers: int, locks: bool, control_plane: str = "auto"
) -> srv.Server:
    """``_servers.start_edgecache``'s node, with ``runtime.fill_lock_timeout = 0`` (no fill locks:
    decision 0021) unless ``locks``, and ``runtime.control_plane``."""
    tmp.mkdir()
    port, control = srv.free_port(), srv.free_port()
    toml = srv.EDGECACHE_TOML.format(
        tmp=tmp,
        name="edgecache",
        port=port,
        control=control,
        origin=origin,
        zone=srv.ZONE_ID,
        memory=2147483648,
        max_object=8 << 20,
        disk_budget=1 << 30,
        workers=workers,
        listen="reuseport",
        control_plane=control_plane,
    )
    if not locks:
        unlocked = toml.replace("[runtime]\n", "[runtime]\nfill_lock_timeout = 0\n")
        # Else the "no fill locks" column would measure the locks on, silently.
        assert unlocked != toml, "the node's configuration has no [runtime] table to turn the locks off in"
        toml = unlocked
    (tmp / "edgecache.toml").write_text(toml)
    argv = [str(binary), "serve", "--config", str(tmp / "edgecache.toml")]
    return srv.spawn("edgecache", argv, port, "cf-cache-status", tmp)


def settled(node: srv.Server, workers: int) -> list[int]:
    """The node's processes once each data-plane process runs its fill writer (their start-up's
    CPU is not the load's)."""
    deadline = time.monotonic() + 30
    while True:
        pids = node.pids()
        writers = sum(role(p, node.proc.pid) == "fill writers" for p in pids)
        if writers >= workers or time.monotonic() > deadline:
            time.sleep(1.0)
            return node.pids()
        time.sleep(0.2)


def run_once(
    tmp: Path,
    origin: srv.Server,
    workers: int,
    locks: bool,
    seconds: int,
    first: int,
    script: Path,
    spy: Path | None,
    control_plane: str = "auto",
) -> tuple[float, dict[str, float]]:
    """(requests/s, CPU µs per request by role) of one run on a fresh node."""
    binary = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "edgecache"
    node = start(
        tmp / f"w{workers}-{control_plane}-{first}", origin.port, binary, workers, locks, control_plane
    )
    spies: list[subprocess.Popen[bytes]] = []
    try:
        root = node.proc.pid
        pids = settled(node, workers)
        before = {p: srv.cpu_seconds([p]) for p in pids}
        waits = {p: switches(p) for p in pids}
        if spy is not None:
            for p in pids:
                out = spy / f"w{workers}-{role(p, root).replace(' ', '-')}-{p}.txt"
                argv = [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--native",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                ]
                spies.append(
                    subprocess.Popen([*argv, "-p", str(p), "-d", str(seconds)], stderr=subprocess.DEVNULL)
                )
        res = wrk.run(f"http://127.0.0.1:{node.port}/", seconds, script, (str(first),))
        used: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        waited: dict[str, tuple[int, int]] = dict.fromkeys(ROLES, (0, 0))
        for p in node.pids():
            used[role(p, root)] += srv.cpu_seconds([p]) - before.get(p, 0.0)
            now, was, had = switches(p), waits.get(p, (0, 0)), waited[role(p, root)]
            waited[role(p, root)] = (had[0] + now[0] - was[0], had[1] + now[1] - was[1])
        for s in spies:
            s.wait(timeout=seconds + 30)
        named = ", ".join(f"{p} {role(p, root)}" for p in sorted(before))
        print(f"workers {workers}: processes {named}", flush=True)
        per = ", ".join(
            f"{name} {v / res.requests:.2f} / {i / res.requests:.2f}" for name, (v, i) in waited.items() if v
        )
        print(f"context switches per request, voluntary / involuntary: {per}", flush=True)
    finally:
        for s in spies:
            with contextlib.suppress(ProcessLookupError):
                s.kill()
        srv.stop(node)
    return res.rps, {name: 1e6 * cpu / res.requests for name, cpu in used.items()}


def label(variant: tuple[int, bool, str]) -> str:
    """A column's name: the node's workers, and how it differs from the default."""
    workers, locks, control_plane = variant
    split = ", control plane in its own process" if workers == 1 and control_plane == "process" else ""
    return f"workers {workers}{split}{'' if locks else ', no fill locks'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per run")
    parser.add_argument("--workers", type=int, default=2, help="the run compared with one worker")
    parser.add_argument("--profile", type=Path, help="also one py-spy run of each, stacks in this directory")
    parser.add_argument(
        "--split",
        action="store_true",
        help='also one worker behind a control plane of its own (control_plane = "process", decision 0026)',
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-wmiss-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        script = wrk.write_scripts(tmp)["missmix"]
        variants = [(1, True, "auto"), (args.workers, True, "auto"), (args.workers, False, "auto")]
        if args.split:
            variants.insert(1, (1, True, "process"))
        best: dict[tuple[int, bool, str], tuple[float, dict[str, float]]] = {}
        for r in range(args.rounds):
            for n, v in enumerate(variants):
                workers, locks, control_plane = v
                first = (r * len(variants) + n + 1) * 10**8
                rps, cpu = run_once(
                    tmp, origin, workers, locks, args.duration, first, script, None, control_plane
                )
                total = sum(cpu.values())
                print(
                    f"round {r + 1}, {label(v)}: {rps:,.0f} req/s, {total:.1f} CPU µs per request", flush=True
                )
                if v not in best or total < sum(best[v][1].values()):
                    best[v] = (rps, cpu)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for n, (workers, locks, control_plane) in enumerate([v for v in variants if v[2] == "auto"][:2]):
                run_once(
                    tmp,
                    origin,
                    workers,
                    locks,
                    args.duration,
                    (90 + n) * 10**8,
                    script,
                    args.profile,
                    control_plane,
                )
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)
    head = " | ".join(label(v) for v in variants)
    print(f"\n| CPU µs per request, best of {args.rounds} | {head} |")
    print("|---|" + "---:|" * len(variants))
    for name in ROLES:
        print(f"| {name} | " + " | ".join(f"{best[v][1][name]:.1f}" for v in variants) + " |")
    totals = [sum(best[v][1].values()) for v in variants]
    print("| whole node | " + " | ".join(f"{t:.1f}" for t in totals) + " |")
    print("| requests per node CPU-second | " + " | ".join(f"{1e6 / t:,.0f}" for t in totals) + " |")
    print("| req/s of that run (noise here) | " + " | ".join(f"{best[v][0]:,.0f}" for v in variants) + " |")


if __name__ == "__main__":
    main()
