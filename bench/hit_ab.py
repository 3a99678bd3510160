"""Two builds of edgecache under wrk, rounds alternated: requests per server CPU-second, and the
server's user and system CPU per request.

For a change to the hit path on a shared machine, where req/s are noise: both builds run at once
(`bench/_servers.py`, one nginx origin), each scenario is warmed on both, then each round runs
`wrk -t1 -c50` against one build and then the other (the order flips every round). The user / system
split comes from `/proc/<pid>/stat` of the server's processes; it tells Python's share (user) from
the kernel's `read` and `write` (system). `bench/run.py --baseline EXE` compares against nginx and
Varnish too, without the split. Scenarios: ``small`` (1 KiB), ``medium`` (64 KiB), ``rand10k``
(10,000 random 1 KiB keys) and ``mrand2k`` (2,000 random 64 KiB keys: more large objects hit each
second than the hit path's memos hold, ``edge/hitmemo.py``).

Run: ``.venv/bin/python bench/hit_ab.py --before EXE [--after EXE] [--only small,rand10k]``, where EXE
is another build's ``edgecache`` executable (e.g. a script running ``edgecache.cli.main`` with
``PYTHONPATH`` at a copy of that build's ``src``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _client as client
import _servers as srv
import _wrk as wrk

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "small": ("/small", None, lambda: ["/small"]),
    "medium": ("/medium", None, lambda: ["/medium"]),
    "rand10k": ("/", "rand10k", lambda: [f"/obj/{i:06d}" for i in range(10_000)]),
    "mrand2k": ("/", "mrand2k", lambda: [f"/mobj/{i:06d}" for i in range(2_000)]),
}
MRAND2K_LUA = """\
-- 2,000 warm 64 KiB keys, uniformly random: more large objects hit each second than the hit
-- path's memos hold (edge/hitmemo.py), so most hits are written as they were before the memo
request = function()
  return wrk.format("GET", string.format("/mobj/%06d", math.random(0, 1999)))
end
"""


def user_system(pids: list[int]) -> tuple[float, float]:
    """CPU seconds in user and in system mode of ``pids`` so far."""
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / srv.CLK_TCK
        system += int(fields[12]) / srv.CLK_TCK
    return user, system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other build's edgecache executable")
    parser.add_argument("--after", type=Path, default=REPO / ".venv" / "bin" / "edgecache")
    parser.add_argument(
        "--only", default="small,rand10k", help="comma-separated: small, medium, rand10k, mrand2k"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx's workers read the origin's files here
        scripts = wrk.write_scripts(tmp)
        scripts["mrand2k"] = tmp / "mrand2k.lua"
        scripts["mrand2k"].write_text(MRAND2K_LUA)
        origin = srv.start_origin(tmp)
        servers: list[srv.Server] = []
        try:
            srv.wait_listening(origin, 10)
            for name, exe in (("after", args.after), ("before", args.before)):
                servers.append(srv.start_edgecache(tmp, origin.port, exe.resolve(), name))
            for server in servers:
                srv.wait_listening(server, 30)
            for scenario in args.only.split(","):
                path, script, warm_paths = SCENARIOS[scenario]
                for server in servers:
                    cold = client.warm(server.port, warm_paths(), server.status_header)
                    if cold:
                        raise SystemExit(f"{server.name}: {len(cold)} URLs never answered HIT")
                for round_no in range(args.rounds):
                    for server in servers if round_no % 2 == 0 else servers[::-1]:
                        pids = server.pids()
                        user0, system0 = user_system(pids)
                        started = time.monotonic()
                        res = wrk.run(
                            f"http://127.0.0.1:{server.port}{path}",
                            args.duration,
                            scripts[script] if script else None,
                        )
                        wall = time.monotonic() - started
                        user1, system1 = user_system(pids)
                        done = res.requests
                        cpu = (user1 - user0) + (system1 - system0)
                        row = (done / cpu, (user1 - user0) / done * 1e6, (system1 - system0) / done * 1e6)
                        rows.setdefault((scenario, server.name), []).append(row)
                        print(
                            f"  {scenario} round {round_no + 1} {server.name}: {res.rps:,.0f} req/s, "
                            f"{row[0]:,.0f} req/CPU-s, server CPU {100 * cpu / wall:.0f}%",
                            flush=True,
                        )
        finally:
            for server in servers:
                srv.stop(server)
            srv.stop(origin)
    print("\n| scenario | build | req per server CPU-s, median (min-max) | user µs / req | system µs / req |")
    print("|---|---|---:|---:|---:|")
    for (scenario, name), samples in rows.items():
        per_cpu = [s[0] for s in samples]
        spread = f"{statistics.median(per_cpu):,.0f} ({min(per_cpu):,.0f}-{max(per_cpu):,.0f})"
        user = statistics.median(s[1] for s in samples)
        system = statistics.median(s[2] for s in samples)
        print(f"| {scenario} | {name} | {spread} | {user:.2f} | {system:.2f} |")


if __name__ == "__main__":
    main()
