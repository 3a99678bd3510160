"""The event loop's CPU per purge request on the control listener, in process, paced.

Run: ``.venv/bin/python bench/purge_listener_cpu.py [--api cloudflare|edgeone] [--before SRC]
[--rounds R] [--n N] [--gap S] [--profile]`` (about a minute). Each round is a process of its own:
an ``edgecache.app.Node`` started in it on uvloop as ``edgecache serve`` starts one (SQLite, WAL,
``synchronous=FULL``; the zone of bench/_purge_node.py, rate limits out of the way), and a client
thread that sends ``--n`` purges, one unknown tag each (the caller's check, the body, the durable
commit, nothing to reclaim), on one keep-alive connection, ``--gap`` seconds apart (default 0.02: 50
purges/s). ``--api cloudflare`` (the default) sends ``POST /client/v4/zones/{id}/purge_cache`` with
a bearer token; ``--api edgeone`` sends EdgeOne's ``CreatePurgeTask`` (``POST /``, type
``purge_cache_tag``), signed TC3-HMAC-SHA256 by the client thread as the SDK signs it
(``Content-Type`` and ``Host``), with a SecretId of the node's (the SecretKey's lookup and
decryption run on a worker thread, as for every EdgeOne call). Around each request the client reads
the event loop thread's CPU clock (``pthread_getcpuclockid``): right before it sends and right after
it has read the answer. That is the loop's CPU from the request's bytes to its answer: the HTTP
server, the handler, the hand-over to the ledger writer and the wake-up on its commit (the writer's
own thread is not in it; the reclaimer's pass after the answer mostly is not either). With
``--before SRC`` the rounds alternate between this tree's code and ``SRC`` (a copy of another
commit's ``src``, by ``PYTHONPATH``), so that both sides see the same machine. The process's CPU
clock (every thread: the loop, the ledger writer with its commit's sync, the client thread itself)
is read around each request as well.

Printed: each round's median and mean µs per request, and per side the best round's median (CPU
time, the figure to trust on a shared machine; it still moves with what else runs). ``--profile``
adds each side's cProfile of the loop thread over one round (CPU clock; it inflates every call).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


Request = tuple[str, bytes, dict[str, str]]
"""A purge's path, body and fields."""


def cloudflare_purge(token: str, zone: str) -> Callable[[int], Request]:
    """The i-th purge of the v4 API: one unknown tag, a bearer token."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/client/v4/zones/{zone}/purge_cache"

    def make(i: int) -> Request:
        return path, json.dumps({"tags": [f"nobody-{i}"]}).encode(), headers

    return make


def edgeone_purge(secret_id: str, secret_key: str, zone: str, host: str) -> Callable[[int], Request]:
    """The i-th ``CreatePurgeTask``: one unknown tag, signed as the SDK signs it (made before the
    loop's clock is read, so the signing is the client's CPU, not the loop's)."""
    from edgecache.api.edgeone import tc3

    def make(i: int) -> Request:
        body = json.dumps({"ZoneId": zone, "Type": "purge_cache_tag", "Targets": [f"nobody-{i}"]}).encode()
        now = int(time.time())
        date = tc3.utc_date(now)
        scope = f"{date}/{tc3.SERVICE}/{tc3.TERMINATOR}"
        sts = tc3.string_to_sign(
            method="POST",
            query="",
            signed_headers=[("content-type", "application/json"), ("host", host)],
            payload_hash=hashlib.sha256(body).hexdigest(),
            timestamp=str(now),
            credential_scope=scope,
        )
        signature = tc3.signature(secret_key, date, tc3.SERVICE, sts)
        headers = {
            "Host": host,
            "Content-Type": "application/json",
            "X-TC-Action": "CreatePurgeTask",
            "X-TC-Version": "2022-09-01",
            "X-TC-Timestamp": str(now),
            "Authorization": f"{tc3.ALGORITHM} Credential={secret_id}/{scope}, "
            f"SignedHeaders=content-type;host, Signature={signature}",
        }
        return "/", body, headers

    return make


def _client(
    port: int,
    make: Callable[[int], Request],
    n: int,
    gap: float,
    loop_clock: int,
    out: list[float],
    whole: list[float],
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i in range(n):
            path, body, headers = make(i)
            p0 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            c0 = time.clock_gettime(loop_clock)
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            c1 = time.clock_gettime(loop_clock)
            p1 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            # EdgeOne answers its errors with 200 too: an accepted purge carries a JobId.
            if resp.status != 200 or (b'"Error"' in data and b'"JobId"' not in data):
                raise RuntimeError(f"purge answered {resp.status}: {data[:200]!r}")
            out.append((c1 - c0) * 1e6)
            whole.append((p1 - p0) * 1e6)
            time.sleep(gap)
    finally:
        conn.close()


async def _round(api: str, n: int, gap: float, profile: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from _purge_node import ZONE_ID, build_config

    from edgecache.api.edgeone.dispatch import EDGEONE_KEY
    from edgecache.app import Node
    from edgecache.control.credentials import Permission
    from edgecache.control.ratelimit import Rate

    with tempfile.TemporaryDirectory(prefix="edgecache-listener-") as tmp:
        node = Node(build_config(Path(tmp), "http://127.0.0.1:1", 64 << 20))
        await node.start()
        try:
            account = node.config.accounts[0].id
            if api == "edgeone":
                assert node._control is not None
                # EdgeOne's 20 calls per second and action: out of the way, as the zone's quotas are.
                node._control.app[EDGEONE_KEY].limiter.rate = Rate(1e6, 1e6)
                secret = await asyncio.to_thread(
                    node.secrets.create, account, "bench", [Permission.CACHE_PURGE]
                )
                make = edgeone_purge(*secret, ZONE_ID, f"127.0.0.1:{node.control_port}")
            else:
                _, token = await asyncio.to_thread(
                    node.credentials.create_token, account, "bench", [Permission.CACHE_PURGE], None
                )
                make = cloudflare_purge(token, ZONE_ID)
            clock = time.pthread_getcpuclockid(threading.get_ident())
            warm: list[float] = []
            await asyncio.to_thread(_client, node.control_port, make, 20, gap, clock, warm, [])
            samples: list[float] = []
            whole: list[float] = []
            prof = cProfile.Profile(time.thread_time) if profile else None
            if prof is not None:
                prof.enable()
            await asyncio.to_thread(_client, node.control_port, make, n, gap, clock, samples, whole)
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

    result = uvloop.run(_round(args.api, args.n, args.gap, args.profile))
    if args.uncounted:
        # Counted by callgrind: the samples' JSON (2n floats' repr, ~30k instructions a purge on
        # the main thread) would be charged to the purges.
        return
    print(json.dumps(result))


def _spawn(src: Path, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    argv = [
        sys.executable,
        __file__,
        "--child",
        "--api",
        args.api,
        "--n",
        str(args.n),
        "--gap",
        str(args.gap),
    ]
    if profile:
        argv.append("--profile")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _instructions(args: argparse.Namespace) -> None:
    """Each side's instructions per purge: a round of ``--n`` purges less a round of none (the
    node's start, the warm-up and the stop), both unpaced, counted by callgrind for the event loop's
    thread (the main thread) and for the whole process (with the ledger writer, the worker threads
    and the client's signing and parsing, which is the same on both sides). Rounds alternate
    between the sides."""
    from _callgrind import thread_instructions

    sides = [("this tree", SRC)] + ([("before", args.before)] if args.before else [])
    loop: dict[str, list[float]] = {name: [] for name, _ in sides}
    whole: dict[str, list[float]] = {name: [] for name, _ in sides}
    for r in range(args.rounds):
        for name, src in sides if r % 2 == 0 else sides[::-1]:
            none, some = (
                thread_instructions(
                    __file__, src, "--api", args.api, "--n", str(n), "--gap", "0", "--uncounted"
                )
                for n in (0, args.n)
            )
            loop[name].append((some[1] - none[1]) / args.n)
            whole[name].append((sum(some.values()) - sum(none.values())) / args.n)
    print(f"### Instructions per {args.api} purge request, {args.n} unpaced less none (callgrind)\n")
    print("| code | loop thread: rounds | median | whole process: rounds | median |")
    print("|---|---|---:|---|---:|")
    for name, src in sides:
        print(
            f"| {name} (`{src}`) | {', '.join(f'{x:,.0f}' for x in loop[name])} | "
            f"{statistics.median(loop[name]):,.0f} | {', '.join(f'{x:,.0f}' for x in whole[name])} | "
            f"{statistics.median(whole[name]):,.0f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--api", choices=("cloudflare", "edgeone"), default="cloudflare", help="the purge's dialect"
    )
    p.add_argument("--before", type=Path, help="another tree's src, measured in alternate rounds")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side")
    p.add_argument("--n", type=int, default=200, help="purges per round")
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="instead: instructions per purge by callgrind (loop thread, whole process), --n unpaced",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--uncounted", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    if args.instructions:
        _instructions(args)
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
    print(
        f"### Loop CPU per {args.api} purge request, paced {args.gap * 1000:.0f} ms apart, "
        f"{args.n} per round\n"
    )
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
