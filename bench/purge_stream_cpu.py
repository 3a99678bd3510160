"""What purges cost the node that serves hits: CPU per purge in a paced stream, grouping under a
burst, and hits served with and without a stream of 50 purges/s.

Run: ``.venv/bin/python bench/purge_stream_cpu.py [--seconds S] [--rate R] [--burst-clients C]
[--hit-rounds N] [--profile]`` (about two minutes). Nodes are bench/_purge_node.py (SQLite,
reclaimer running); purges go through ``POST /client/v4/zones/{id}/purge_cache``, each of a tag
nobody carries (the durable commit and the bookkeeping, nothing to reclaim).

1. Stream: the node idles for ``--seconds`` (its own CPU then is the baseline: loop-lag probes,
   timers), then receives ``--rate`` purges a second on one keep-alive connection for
   ``--seconds``. Printed: node CPU per purge (every thread, from the kernel's per-thread run time),
   gross and net of the idle baseline, per thread, and the API latency. ``--profile`` adds the
   cProfile of the event loop's and the ledger writer's threads (CPU clock) for the stream, and
   for a round of hits with the stream before section 3's measured ones (the purges' steps under
   hits: the profiler slows the hits, so that round is not in the table).
2. Burst: ``--burst-clients`` connections (threads of this process) each send purges back to back
   until 1,000 are answered; printed: purges per ledger commit, CPU per purge, latency.
3. Hits: ``wrk -t1 -c50`` on a warm 1 KiB ``/small``, ``--hit-rounds`` rounds of alternated runs
   without and with the stream; printed: req/s and req/s per node CPU-second.

CPU time is the trustworthy figure on a shared machine; the wall-clock ones (latency, req/s) are
noisy and say so.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _client as client
import _servers as srv
import _wrk as wrk
from _purge_client import ApiClient, EdgeNode

THREADS = {
    "MainThread": "event loop",
    "edgecache-ledger": "ledger writer",
    "edgecache-disk-writer": "disk writer",
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per thread label between two ``cpu`` readings, and the process total."""
    out = {"total": after["process_s"] - before["process_s"]}
    for prefix, label in THREADS.items():
        # By prefix: a thread pool names its threads ``<prefix>_<n>``.
        out[label] = sum(
            cpu - before["threads"].get(name, 0.0)
            for name, cpu in after["threads"].items()
            if name.startswith(prefix)
        )
    return out


def stream(
    node: EdgeNode, seconds: float, rate: float, tag: str, stop: threading.Event | None = None
) -> list[float]:
    """Purges of unrelated tags at ``rate`` per second on one connection; their latencies."""
    api = ApiClient(node.control_port, node.token)
    lat: list[float] = []
    start = time.monotonic()
    try:
        i = 0
        while time.monotonic() - start < seconds and not (stop is not None and stop.is_set()):
            ms, status, answer = api.purge({"tags": [f"{tag}-{i}"]})
            if status != 200:
                raise RuntimeError(f"purge answered {status}: {answer}")
            lat.append(ms)
            i += 1
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
    finally:
        api.close()
    return lat


def run_stream(tmp: Path, origin: int, seconds: float, rate: float, profile: bool) -> dict[str, Any]:
    node = EdgeNode("stream", tmp, origin, 64 << 20)
    try:
        stream(node, 1.0, rate, "warm")
        node.cmd("drain")
        c0 = node.cmd("cpu")
        time.sleep(seconds)
        c1 = node.cmd("cpu")
        if profile:
            node.cmd("profile", action="start")
        lat = stream(node, seconds, rate, "stream")
        node.cmd("drain")
        c2 = node.cmd("cpu")
        prof = node.cmd("profile", action="stop", top=45) if profile else None
        idle, busy = cpu_delta(c0, c1), cpu_delta(c1, c2)
        n = len(lat)
        # The stream lasted about as long as the idle window: subtract the idle CPU as a whole.
        return {"n": n, "idle": idle, "busy": busy, "lat": lat, "profile": prof}
    finally:
        node.stop()


def run_burst(tmp: Path, origin: int, clients: int, total: int) -> dict[str, Any]:
    node = EdgeNode("burst", tmp, origin, 64 << 20)
    try:
        stream(node, 0.5, 50, "warm")
        node.cmd("drain")
        lat: list[float] = []
        lock = threading.Lock()
        left = [total]
        errors: list[str] = []

        def one(k: int) -> None:
            api = ApiClient(node.control_port, node.token)
            i = 0
            try:
                while True:
                    with lock:
                        if left[0] <= 0:
                            return
                        left[0] -= 1
                    ms, status, answer = api.purge({"tags": [f"burst-{k}-{i}"]})
                    i += 1
                    if status != 200:
                        errors.append(f"{status}: {answer}")
                        return
                    with lock:
                        lat.append(ms)
            finally:
                api.close()

        c0 = node.cmd("cpu")
        threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        wall = time.perf_counter() - t0
        node.cmd("drain")
        c1 = node.cmd("cpu")
        if errors:
            raise RuntimeError(f"burst purges failed: {errors[:3]}")
        return {
            "n": len(lat),
            "commits": None if c1["ledger_commits"] is None else c1["ledger_commits"] - c0["ledger_commits"],
            "cpu": cpu_delta(c0, c1),
            "lat": lat,
            "wall": wall,
        }
    finally:
        node.stop()


def _background(
    node: EdgeNode, seconds: float, rate: float, stop: threading.Event, out: list[list[float]]
) -> None:
    out.append(stream(node, seconds, rate, f"hits-{time.time()}", stop))


def run_hits(
    tmp: Path, origin: int, rounds: int, duration: int, rate: float, profile: bool = False
) -> dict[str, Any]:
    node = EdgeNode("hits", tmp, origin, 64 << 20)
    out: dict[str, Any] = {"none": [], "stream": []}
    try:
        if client.warm(node.data_port, ["/small"], "cf-cache-status"):
            raise RuntimeError("/small never answered HIT")
        url = f"http://127.0.0.1:{node.data_port}/small"
        wrk.run(url, 2)  # warm-up
        if profile:
            # A round of its own, before the measured ones: the profiler slows the hits.
            stop = threading.Event()
            profiled: list[list[float]] = []
            th = threading.Thread(target=_background, args=(node, duration + 5, rate, stop, profiled))
            th.start()
            time.sleep(0.5)
            node.cmd("profile", action="start")
            wrk.run(url, duration)
            out["profile"] = node.cmd("profile", action="stop", top=90)
            stop.set()
            th.join(30)
            out["profile_purges"] = len(profiled[0])
            node.cmd("drain")
        for _ in range(rounds):
            for kind in ("none", "stream"):
                stop = threading.Event()
                sent: list[list[float]] = []
                th = threading.Thread(target=_background, args=(node, duration + 5, rate, stop, sent))
                if kind == "stream":
                    th.start()
                    time.sleep(0.5)
                c0 = node.cmd("cpu")
                res = wrk.run(url, duration)
                c1 = node.cmd("cpu")
                stop.set()
                if kind == "stream":
                    th.join(30)
                cpu = c1["process_s"] - c0["process_s"]
                out[kind].append(
                    {
                        "rps": res.rps,
                        "p99": res.p99_ms,
                        "errors": res.errors,
                        "per_cpu_s": res.requests / cpu if cpu > 0 else 0.0,
                        "purges": len(sent[0]) if sent else 0,
                    }
                )
                node.cmd("drain")
    finally:
        node.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--burst-clients", type=int, default=50)
    p.add_argument("--burst-purges", type=int, default=1000)
    p.add_argument("--hit-rounds", type=int, default=3)
    p.add_argument("--hit-seconds", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], choices=["stream", "burst", "hits"])
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-stream-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        if "stream" not in args.skip:
            s = run_stream(tmp, origin.port, args.seconds, args.rate, args.profile)
            n = s["n"]
            print(f"### 1. Paced stream: {args.rate:.0f} purges/s for {args.seconds:.0f} s ({n} purges)\n")
            print("| thread | CPU ms per purge, gross | idle baseline, ms per purge slot | net |")
            print("|---|---:|---:|---:|")
            for label in ("total", *THREADS.values()):
                gross, idle = s["busy"][label] * 1000 / n, s["idle"][label] * 1000 / n
                print(f"| {label} | {gross:.2f} | {idle:.2f} | {gross - idle:.2f} |")
            print(
                f"\nAPI latency (wall, noisy): p50 {pct(s['lat'], 50):.2f} ms, "
                f"p99 {pct(s['lat'], 99):.2f} ms\n"
            )
            if s["profile"]:
                for name, prof in s["profile"].items():
                    print(
                        f"#### cProfile, {name} thread "
                        f"(CPU clock, {prof['cpu_s'] * 1000 / n:.2f} ms per purge)\n"
                    )
                    print("```\n" + prof["tottime"].strip() + "\n```\n")
                    print("```\n" + prof["cumulative"].strip() + "\n```\n")
        if "burst" not in args.skip:
            b = run_burst(tmp, origin.port, args.burst_clients, args.burst_purges)
            n = b["n"]
            print(f"### 2. Burst: {args.burst_clients} connections, {n} purges back to back\n")
            print(
                "| purges per ledger commit | node CPU ms per purge | ledger writer ms per purge "
                "| API p50 / p99 ms (wall, noisy) | purges/s (wall, noisy) |"
            )
            print("|---:|---:|---:|---|---:|")
            grouped = "1 (one commit each)" if b["commits"] is None else f"{n / max(1, b['commits']):.1f}"
            print(
                f"| {grouped} | "
                f"{b['cpu']['total'] * 1000 / n:.2f} | "
                f"{b['cpu']['ledger writer'] * 1000 / n:.2f} | "
                f"{pct(b['lat'], 50):.2f} / {pct(b['lat'], 99):.2f} | "
                f"{n / b['wall']:,.0f} |\n"
            )
        if "hits" not in args.skip:
            h = run_hits(tmp, origin.port, args.hit_rounds, args.hit_seconds, args.rate, args.profile)
            prof = h.pop("profile", None)
            purges = h.pop("profile_purges", 0)
            if prof is not None:
                for name, one in prof.items():
                    print(
                        f"#### cProfile under hits, {name} thread, first round with the stream "
                        f"({purges} purges; CPU clock, {one['cpu_s'] * 1000 / max(1, purges):.2f} ms per "
                        "purge with the hits' share)\n"
                    )
                    print("```\n" + one["cumulative"].strip() + "\n```\n")
            print(
                f"### 3. Hits, 1 KiB /small, wrk -t1 -c50 {args.hit_seconds} s, "
                f"{args.hit_rounds} rounds alternated\n"
            )
            print(
                "| purges during the run | req/s median (noisy) | p99 ms "
                "| req per node CPU-second, median | errors |"
            )
            print("|---|---:|---:|---:|---:|")
            med = {
                k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p99", "per_cpu_s")}
                for k, v in h.items()
            }
            for kind, label in (("none", "none"), ("stream", f"~{args.rate:.0f}/s")):
                runs = h[kind]
                purges = sum(r["purges"] for r in runs)
                print(
                    f"| {label} ({purges} purges) | {med[kind]['rps']:,.0f} | {med[kind]['p99']:.2f} | "
                    f"{med[kind]['per_cpu_s']:,.0f} | {sum(int(r['errors']) for r in runs)} |"
                )
            ratio = med["stream"]["rps"] / med["none"]["rps"]
            ratio_cpu = med["stream"]["per_cpu_s"] / med["none"]["per_cpu_s"]
            print(f"\nwith / without the stream: req/s {ratio:.3f}x, req per CPU-second {ratio_cpu:.3f}x")
            print(
                "per round (req/s none, stream): "
                + ", ".join(
                    f"{a['rps']:,.0f} / {b['rps']:,.0f}" for a, b in zip(h["none"], h["stream"], strict=True)
                )
            )
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
