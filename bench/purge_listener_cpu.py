"""The event loop's CPU per purge request on the control listener, in process, paced.

Run: ``.venv/bin/python bench/purge_listener_cpu.py [--before SRC] [--rounds R] [--n N] [--gap S]
[--profile]`` (about a minute). Each round is a process of its own: an ``edgecache.app.Node`` started
in it on uvloop as ``edgecache serve`` starts one (SQLite, WAL, ``synchronous=FULL``; the zone of
bench/_purge_node.py, rate limits out of the way), and a client thread that sends ``--n`` purges
(``POST /client/v4/zones/{id}/purge_cache``, one unknown tag each: the token check, the body, the
durable commit, nothing to reclaim) on one keep-alive connection, ``--gap`` seconds apart (default
0.02: 50 purges/s). Around each request the client reads the event loop thread's CPU clock
(``pthread_getcpuclockid``): right before it sends and right after it has read the answer. That is
the loop's CPU from the request's bytes to its answer: the HTTP server, the handler, the hand-over
to the ledger writer and the wake-up on its commit (the writer's own thread is not in it; the
reclaimer's pass after the answer mostly is not either). With ``--before SRC`` the rounds alternate
between this tree's code and ``SRC`` (a copy of another commit's ``src``, by ``PYTHONPATH``), so
that both sides see the same machine. The process's CPU clock (every thread: the loop, the ledger
writer with its commit's sync, the client thread itself) is read around each request as well.

Printed: each round's median and mean µs per request, and per side the best round's median (CPU
time, the figure to trust on a shared machine; it still moves with what else runs). ``--profile``
adds each side's cProfile of the loop thread over one round (CPU clock; it inflates every call).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _client(
    port: int,
    token: str,
    zone: str,
    n: int,
    gap: float,
    loop_clock: int,
    out: list[float],
    whole: list[float],
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/client/v4/zones/{zone}/purge_cache"
    try:
        for i in range(n):
            body = json.dumps({"tags": [f"nobody-{i}"]}).encode()
            p0 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            c0 = time.clock_gettime(loop_clock)
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            c1 = time.clock_gettime(loop_clock)
            p1 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            if resp.status != 200:
                raise RuntimeError(f"purge answered {resp.status}: {data[:200]!r}")
            out.append((c1 - c0) * 1e6)
            whole.append((p1 - p0) * 1e6)
            time.sleep(gap)
    finally:
        conn.close()


async def _round(n: int, gap: float, profile: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from _purge_node import ZONE_ID, build_config

    from edgecache.app import Node
    from edgecache.control.credentials import Permission

    with tempfile.TemporaryDirectory(prefix="edgecache-listener-") as tmp:
        node = Node(build_config(Path(tmp), "http://127.0.0.1:1", 64 << 20))
        await node.start()
        try:
            _, token = await asyncio.to_thread(
                node.credentials.create_token,
                node.config.accounts[0].id,
                "bench",
                [Permission.CACHE_PURGE],
                None,
            )
            clock = time.pthread_getcpuclockid(threading.get_ident())
            warm: list[float] = []
            await asyncio.to_thread(_client, node.control_port, token, ZONE_ID, 20, gap, clock, warm, [])
            samples: list[float] = []
            whole: list[float] = []
            prof = cProfile.Profile(time.thread_time) if profile else None
            if prof is not None:
                prof.enable()
            await asyncio.to_thread(_client, node.control_port, token, ZONE_ID, n, gap, clock, samples, whole)
            text = ""
            if prof is not None:
                prof.disable()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
                text = buf.getvalue()
        finally:
            await node.stop()
    return {"samples": samples, "whole": whole, "profile": text}


def _child(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(_round(args.n, args.gap, args.profile))
    print(json.dumps(result))


def _spawn(src: Path, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    argv = [sys.executable, __file__, "--child", "--n", str(args.n), "--gap", str(args.gap)]
    if profile:
        argv.append("--profile")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, help="another tree's src, measured in alternate rounds")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side")
    p.add_argument("--n", type=int, default=200, help="purges per round")
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    sides = [("this tree", SRC)] + ([("before", args.before)] if args.before else [])
    rounds: dict[str, list[list[float]]] = {name: [] for name, _ in sides}
    wholes: dict[str, list[list[float]]] = {name: [] for name, _ in sides}
    profiles: dict[str, str] = {}
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for name, src in order:
            result = _spawn(src, args, args.profile and r == 0)
            rounds[name].append(result["samples"])
            wholes[name].append(result["whole"])
            if result["profile"]:
                profiles[name] = result["profile"]
    print(f"### Loop CPU per purge request, paced {args.gap * 1000:.0f} ms apart, {args.n} per round\n")
    print(
        "| code | loop: round medians, µs | loop: round means, µs | loop: best round's median, µs "
        "| process (every thread, the client's too): round medians, µs | best |"
    )
    print("|---|---|---|---:|---|---:|")
    for name, src in sides:
        meds = [statistics.median(s) for s in rounds[name]]
        means = [statistics.mean(s) for s in rounds[name]]
        whole = [statistics.median(s) for s in wholes[name]]
        label = f"{name} (`{src}`)"
        print(
            f"| {label} | {', '.join(f'{m:.0f}' for m in meds)} | {', '.join(f'{m:.0f}' for m in means)}"
            f" | {min(meds):.0f} | {', '.join(f'{m:.0f}' for m in whole)} | {min(whole):.0f} |"
        )
    for name, text in profiles.items():
        print(
            f"\n#### cProfile of the loop thread, {name}, first round (CPU clock)\n\n```\n{text.strip()}\n```"
        )


if __name__ == "__main__":
    main()
