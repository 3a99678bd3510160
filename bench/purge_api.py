"""Purge benchmark: the Cloudflare-style purge API of a real edgecache node, its effect on hits, the
reclaimer, and Varnish's PURGE / xkey / ban side by side, in one command.

Run: ``.venv/bin/python bench/purge_api.py [--quick]``. Prints markdown tables and writes them to
``bench/out/purge.md``. The default run takes about 8-10 minutes, ``--quick`` (10k and 100k only, fewer
repetitions, 5 s wrk runs) about 2-3.

Method (reference setup and Varnish figures: /work/shared/reference/bench-anchors.md, "Purge anchors"):

1. API latency per selector type, at 10k, 100k and 1M stored objects. A node runs in a subprocess
   (bench/_purge_node.py builds ``Node`` from a generated config: one enterprise zone, rate limits and
   daily quotas raised out of the way, origin = an nginx serving the /obj/ keys). Its memory tier is
   filled directly with N synthetic 1 KiB entries (``http://bench.test/obj/NNNNNN``; every hundredth on
   ``alt.bench.test``; tags ``tagNN`` and ``grpNN``, each tag on N/100 objects; stored at the index
   position): filling over HTTP would take minutes and is not what is measured. The client times
   ``POST /client/v4/zones/{zone}/purge_cache`` on one keep-alive connection (http.client, one request
   at a time, answer read): one URL; one tag (N/100 objects); one host (``alt.bench.test``, N/100);
   one prefix (~N/100); ``invalidate_cache`` of one tag; a tag nobody carries (the floor: the same
   durable commit, nothing to reclaim); and purge everything. Kinds are interleaved round by round, so
   drift hits all alike. Each purge of 1a follows a purge of a tag nobody carries (answered and
   reclaimed, timed apart as "right after the harness's refill" in 1c): the harness's refill before it
   re-inserts N/100 entries (10k at 1M, 100 at 10k), which leaves the CPU's caches cold for the node's
   purge path in proportion to N (at the session's start, idle: the purges that followed a refill were
   ~0.9 ms slower at 1M; docs/benchmarks.md, 2026-11-30, branch purge1m), and 1a is to compare sizes,
   not refills. After each answer: a GET of an object the purge does not cover (a HIT, served while the
   reclaimer works) and one of an object it covers (must not be a HIT: the purge is in effect when the
   API answers); then the harness waits until the reclaimer is done ("reclaimer done after" = from the
   purge entering the index to the reclaimer finishing it, time-stamped inside the node; 1b also
   gives that window's longest loop stall and longest task step) and puts the purged objects back as
   fresh entries, so every purge of a kind sees the same N. Purge everything empties the tier, so it
   gets fewer repetitions, each on a tier refilled to N. p50/p99 are nearest-rank percentiles. For one
   URL and the floor (nothing to reclaim after the answer) the node's process CPU from just before the
   purge to just after its answer is read too (less what two back-to-back reads cost; it includes the
   commit's sync in the kernel). To split the floor: GET /healthz (aiohttp alone, on a connection of
   its own), an authenticated purge with an empty body (auth + validation, answered 400, no commit) and
   a bare SQLite INSERT+COMMIT (WAL, synchronous=FULL) in the node's data dir. The node's
   garbage-collector pauses during the rounds are recorded (``gc.callbacks``).
2. Hit throughput with 0 and with 100k outstanding purge rules: two nodes in front of the nginx origin,
   each warmed over the real data plane with /small and 10k /obj/ keys. One runs with the reclaimer
   stopped (so nothing is ever compacted) and gets 100k non-matching rules through the API (40k tags,
   30k URLs, 30k prefixes, 100 per request). ``wrk -t1 -c50`` runs alternate between the nodes: hot
   /small (stored before the rules: its first hit pays the index check, then it is re-stamped), hot
   /small?after (stored after the rules) and 10k random keys (all stored before); plus the clean node
   while ~50 purges/s of unrelated tags arrive. The random-key pair runs once; the others once per
   round. ``EpochIndex.check`` is also timed inside the node.
3. Reclaimer throughput: inside the node, one tag purge and one purge everything are submitted through
   ``node.purges``; objects/s, ``bytes_used`` and RSS before and after (and after ``malloc_trim``);
   the longest loop stall from the submission to 1.5 s after the reclaimer finished, and the longest
   task step in that window (``edgecache.looplag.StepTimer``: which task held the loop, its CPU).
4. Varnish 7.1 with the anchors' VCL (PURGE, BAN, XKEYPURGE with xkey), a fresh varnishd per N, filled
   over HTTP by 64 connections; ``ban_lurker_age=0`` is set before any ban. Single-URL PURGE, xkey.purge
   of one tag (N/100 objects) and a URL-prefix ban (accepted, and time until the lurker killed every
   match, polled with varnishstat at ~5 ms resolution), next to edgecache's figures from step 1.

The machine is shared: before each section and each wrk run the harness waits (at most 10 s) until
processes outside the benchmark use < 20% of a core, and reports what they used.
Everything listens on 127.0.0.1 on ports the kernel chose; every load is bounded (wrk inside timeout,
fills and commands with timeouts); every server is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import _client as client
import _servers as srv
import _wrk as wrk
from _purge_client import ALT_HOST, ALT_MOD, HOST, ApiClient, BenchError, Conn, EdgeNode, Varnish
from _purge_node import ALLOCATOR_ENV

from edgecache.allocator import find as find_jemalloc

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "purge.md"
ENTRY_BYTES = 1839
"""bytes_used per synthetic entry (1 KiB body, head, key, fixed overhead), for sizing the budget."""
KINDS = ("url", "tag", "host", "prefix", "invalidate", "floor")
LABELS = {
    "url": "one URL",
    "tag": "one tag",
    "host": "one host",
    "prefix": "one prefix",
    "invalidate": "invalidate_cache, one tag",
    "floor": "unknown tag (floor)",
    "everything": "purge everything",
}
FLEX = ("tag", "host", "prefix", "everything")
CPU_KINDS = ("url", "floor")
"""Kinds whose node CPU per purge is read (nothing, or one entry, to reclaim after the answer)."""


# --- small helpers ------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def n_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def load_avg() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} / {b:.2f} / {c:.2f}"


class OthersCpu:
    """CPU taken by processes outside this harness between start() and stop(), % of one core."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.snap = srv.others_cpu()

    def percent(self) -> float:
        wall = time.monotonic() - self.t0
        now = srv.others_cpu()
        return 100 * sum(max(0.0, t - self.snap.get(pid, 0.0)) for pid, t in now.items()) / max(wall, 1e-9)


def wait_quiet(max_wait: float = 10.0, threshold: float = 20.0) -> float:
    """Wait (at most ``max_wait`` s) until processes outside the benchmark use < ``threshold``% of a
    core over half a second; return the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        probe = OthersCpu()
        time.sleep(0.5)
        busy = probe.percent()
        if busy < threshold or time.monotonic() > deadline:
            return busy


def wrk_run(url: str, duration: int, script: Path | None = None) -> tuple[wrk.WrkResult, float]:
    """One wrk run after waiting for a quiet moment; (result, others' CPU % during the run)."""
    wait_quiet()
    others = OthersCpu()
    result = wrk.run(url, duration, script)
    return result, others.percent()


def versions() -> list[tuple[str, str]]:
    def run(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"({e})"
        return (out.stdout + out.stderr).strip()

    dpkg = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "varnish", "varnish-modules", "wrk", "nginx"]
    )
    rev = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"])
    return [
        ("edgecache", f"{rev}{' + uncommitted changes in src/' if dirty else ''} (this working tree)"),
        (
            "Python / uvloop / aiohttp",
            f"{platform.python_version()} / {metadata.version('uvloop')} / {metadata.version('aiohttp')}",
        ),
        ("Debian packages", "; ".join(dpkg.splitlines())),
        ("varnishd", run(["varnishd", "-V"]).splitlines()[0]),
        ("kernel / CPUs", f"{platform.release()} / {os.cpu_count()}"),
    ]


@contextmanager
def stopping(items: list[Any]) -> Iterator[list[Any]]:
    """Stop every server put in ``items`` (by PID), whatever happens."""
    try:
        yield items
    finally:
        for item in reversed(items):
            try:
                if isinstance(item, srv.Server):
                    srv.stop(item)
                else:
                    item.stop()
            except Exception as e:
                print(f"warning: stopping {item}: {e}", file=sys.stderr)


# --- 1. API latency ---------------------------------------------------------------------------------


@dataclass
class Spec:
    body: dict[str, Any]
    soft: bool
    refill: list[list[int]]
    probe: int | None
    """An object the purge covers: GET right after the answer (must not be a HIT)."""
    other: int | None
    """An object it does not cover: GET right after the answer, first (a HIT, while the reclaimer works)."""


def path_host(i: int) -> tuple[str, str]:
    return f"/obj/{i:06d}", ALT_HOST if i % 100 == ALT_MOD else HOST


def spec_for(kind: str, r: int, n: int, rng: random.Random) -> Spec:
    """The r-th purge of ``kind`` on a tier of n objects (n a power of ten, 10k..1M)."""
    per = n // 100  # objects per tag / host / prefix
    if kind == "url":
        i = rng.randrange(n)
        while i % 100 == ALT_MOD:
            i = rng.randrange(n)
        return Spec({"files": [f"http://{HOST}/obj/{i:06d}"]}, False, [[i, i + 1, 1]], i, (i + 1) % n)
    if kind in ("tag", "invalidate"):
        k = r % 100 if kind == "tag" else (r + 50) % 100
        return Spec({"tags": [f"tag{k:02d}"]}, kind == "invalidate", [[k, n, 100]], k, (k + 1) % 100)
    if kind == "host":
        return Spec({"hosts": [ALT_HOST]}, False, [[ALT_MOD, n, 100]], ALT_MOD + 100 * (r % per), ALT_MOD + 1)
    if kind == "prefix":
        digits = 6 - round(math.log10(per))
        k = r % 100
        prefix = f"{HOST}/obj/{k:0{digits}d}"
        return Spec(
            {"prefixes": [prefix]}, False, [[k * per, (k + 1) * per, 1]], k * per, (k + 1) % 100 * per
        )
    if kind == "floor":
        return Spec({"tags": [f"nomatch-{r}"]}, False, [], None, 1)
    if kind == "everything":
        return Spec({"purge_everything": True}, False, [[0, n, 1]], rng.randrange(n), None)
    raise ValueError(kind)


@dataclass
class KindResult:
    lat: list[float] = field(default_factory=list)
    probe_ms: list[float] = field(default_factory=list)
    probe: Counter[str] = field(default_factory=Counter)
    other_ms: list[float] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    gone_ms: list[float] = field(default_factory=list)
    matched: list[int] = field(default_factory=list)
    stall_ms: list[float] = field(default_factory=list)
    stall_cpu_ms: list[float] = field(default_factory=list)
    unqueued: list[tuple[float, float, float]] = field(default_factory=list)
    """Per purge: the longest lateness not spent waiting for a CPU, that period's loop-thread CPU and
    how long a ``malloc_trim`` ran in it (ms)."""
    steps: list[tuple[str, float, float]] = field(default_factory=list)
    """Per purge: the window's longest task step (``StepTimer``): the task, its loop-thread CPU and
    wall ms."""
    trim_ms: list[float] = field(default_factory=list)
    """Per timed API call: how long a ``malloc_trim`` of the node ran during it (ms)."""
    refill_s: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    """Node process CPU from just before the purge to just after its answer, less the probe's own
    (``CPU_KINDS`` only: for the others it would include the reclaimer's first slices)."""
    after_refill: list[float] = field(default_factory=list)
    """The purge of nothing before each timed one, right after the harness's refill."""
    errors: list[str] = field(default_factory=list)


@dataclass
class ApiResult:
    n: int
    fill: dict[str, Any]
    kinds: dict[str, KindResult]
    commit_ms: list[float]
    healthz_ms: list[float]
    auth_ms: list[float]
    reclaim: list[dict[str, Any]]
    others_cpu: float
    load: str
    seconds: float
    reconnects: int
    gc: list[dict[str, float]]
    """Per generation: count, total_s, max_s of the node's collections during the rounds."""


def budget_for(n: int) -> int:
    return max(256 << 20, int(n * ENTRY_BYTES * 1.25))


_JEMALLOC = find_jemalloc(None)
ALLOCATORS = {"glibc": {ALLOCATOR_ENV: "system"}, "jemalloc": {ALLOCATOR_ENV: "jemalloc"}}
"""The API node's allocator (``--allocator``): the launcher re-executes itself on it as ``edgecache
serve`` does (decision 0019); by default, what ``serve`` would choose here."""


def run_api(
    n: int, rounds: int, everything: int, tmp: Path, origin: int, seed: int, allocator: str
) -> ApiResult:
    rng = random.Random(seed)
    t_start = time.monotonic()
    print(f"[api] N={n:,}: starting node ({allocator}) and filling", flush=True)
    env = ALLOCATORS[allocator]
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the node's process inherits them
    try:
        node = EdgeNode(f"api-{n_label(n)}", tmp, origin, budget_for(n))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    with stopping([node]):
        fill = node.cmd("fill", n=n)
        print(
            f"[api] N={n:,}: filled in {fill['fill_s']:.1f} s; {rounds} rounds of {len(KINDS)} kinds",
            flush=True,
        )
        wait_quiet()
        commit = node.cmd("commitcost", n=200)["ms"]
        node.purge({"tags": ["warm-up"]})  # open the connection, load the token cache: untimed
        node.get("/obj/000000", HOST)
        node.cmd("drain")
        # What two back-to-back CPU reads cost the node: subtracted from each purge's reading.
        probe_cpu = []
        for _ in range(20):
            c0 = node.cmd("cpu")["process_s"]
            probe_cpu.append((node.cmd("cpu")["process_s"] - c0) * 1000)
        probe_ms = statistics.median(probe_cpu)
        others = OthersCpu()
        res = {k: KindResult() for k in (*KINDS, "everything")}
        healthz: list[float] = []
        health = Conn(node.control_port)
        auth: list[float] = []

        def one(kind: str, r: int) -> None:
            s = spec_for(kind, r, n, rng)
            kr = res[kind]
            # The same path once, after the harness's refill and before the timed purge (see the
            # module docstring): what is timed then depends on N, not on how much the harness refilled.
            ms, _, _ = node.purge({"tags": [f"settle-{kind}-{r}"]})
            kr.after_refill.append(ms)
            node.cmd("drain")
            node.cmd("lag")  # a new window: the harness's refill before this purge is not counted
            node.cmd("trims")
            cpu0 = node.cmd("cpu")["process_s"] if kind in CPU_KINDS else 0.0
            t0 = time.perf_counter()
            ms, status, answer = node.purge(s.body, soft=s.soft)
            t1 = time.perf_counter()
            if kind in CPU_KINDS:
                kr.cpu_ms.append((node.cmd("cpu")["process_s"] - cpu0) * 1000 - probe_ms)
            if status != 200 or not (answer or {}).get("success"):
                kr.errors.append(f"{status} {answer}")
            kr.lat.append(ms)
            for i, times, seen in ((s.other, kr.other_ms, kr.other), (s.probe, kr.probe_ms, kr.probe)):
                if i is not None:
                    pms, _, cache = node.get(*path_host(i))
                    times.append(pms)
                    seen[cache] += 1
            d = node.cmd("drain")
            lag = node.cmd("lag")
            kr.stall_ms.append(lag["ms"])
            kr.stall_cpu_ms.append(lag["cpu_ms"])
            kr.unqueued.append((lag["unqueued_ms"], lag["unqueued_cpu_ms"], lag["unqueued_trim_ms"]))
            kr.steps.append((lag["step"], lag["step_cpu_ms"], lag["step_wall_ms"]))
            trims = node.cmd("trims")["trims"]
            kr.trim_ms.append(sum(max(0.0, min(t1, b) - max(t0, a)) for a, b, _ in trims) * 1000)
            if d["gone_ms"] is not None:
                kr.gone_ms.append(d["gone_ms"])
            if d["matched"] is not None:
                kr.matched.append(d["matched"])
            if s.refill:
                kr.refill_s.append(node.cmd("refill", ranges=s.refill)["s"])

        t_rounds = time.monotonic()
        for r in range(rounds):
            for kind in KINDS:
                one(kind, r)
            # The floor's parts: aiohttp alone, then authentication + validation (an empty body: 400).
            # /healthz on a connection of its own: the control listener hands a connection to
            # aiohttp at its first request of another route, and the purges' one must stay on the
            # purge route's own side (decision 0027).
            healthz.append(health.request("GET", "/healthz")[0])
            ms, status, _ = node.purge({})
            if status == 400:
                auth.append(ms)
            if (r + 1) % 50 == 0 or r + 1 == rounds:
                rate = (time.monotonic() - t_rounds) / (r + 1)
                print(f"[api] N={n:,}: round {r + 1}/{rounds} ({rate:.2f} s a round)", flush=True)
        health.close()
        for r in range(everything):
            one("everything", r)
        print(f"[api] N={n:,}: {everything} x purge everything done; reclaimer benchmark", flush=True)
        gc_stats = node.cmd("stats")["gc"]
        reclaim = [node.cmd("reclaim", kind="tag", arg="tag07")]
        node.cmd("refill", ranges=[[7, n, 100]])
        reclaim.append(node.cmd("reclaim", kind="everything"))
        return ApiResult(
            n,
            fill,
            res,
            commit,
            healthz,
            auth,
            reclaim,
            others.percent(),
            load_avg(),
            time.monotonic() - t_start,
            node.api.conn.reconnects + node.data.reconnects,
            gc_stats,
        )


def api_tables(results: list[ApiResult]) -> str:
    ns = [r.n for r in results]
    first, last = results[0], results[-1]
    head = "| selector | objects per purge | " + " | ".join(f"N={n_label(n)} p50 / p99 ms" for n in ns)
    ratio = f"{n_label(last.n)}/{n_label(first.n)}" if len(results) > 1 else ""
    head += f" | {ratio} p50 | {ratio} p99 | p99 ≤ 5 ms | {ratio} ≤ 1.2x |" if ratio else " | p99 ≤ 5 ms |"
    cols = head.count("|") - 1
    out = [
        "### 1a. Purge API latency (POST on one keep-alive connection, answer read)",
        "",
        head,
        "|" + "---|" * cols,
    ]
    for kind in (*KINDS, "everything"):
        cells = [LABELS[kind]]
        matched = [statistics.median(r.kinds[kind].matched) if r.kinds[kind].matched else 0 for r in results]
        cells.append(" / ".join(f"{m:,.0f}" for m in matched))
        for r in results:
            k = r.kinds[kind]
            err = f" ({len(k.errors)} errors)" if k.errors else ""
            during = [ms for ms, t in zip(k.lat, k.trim_ms, strict=True) if t > 0]
            trimmed = f", {len(during)} during a trim (max {fmt_ms(max(during))})" if during else ""
            n_err = f"(n={len(k.lat)}{trimmed}){err}"
            cells.append(f"{fmt_ms(pct(k.lat, 50))} / {fmt_ms(pct(k.lat, 99))} {n_err}")
        p99_ok = all(pct(r.kinds[kind].lat, 99) <= 5 for r in results)
        if ratio:
            a, b = first.kinds[kind].lat, last.kinds[kind].lat
            r50, r99 = pct(b, 50) / pct(a, 50), pct(b, 99) / pct(a, 99)
            cells += [f"{r50:.2f}x", f"{r99:.2f}x", "yes" if p99_ok else "**no**"]
            cells.append(
                ("yes" if r50 <= 1.2 and r99 <= 1.2 else "**no**") if kind in FLEX else "(no target)"
            )
        else:
            cells.append("yes" if p99_ok else "**no**")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Objects per purge: median matched per N (" + " / ".join(n_label(n) for n in ns) + ").", ""]

    out += [
        "### 1b. In effect at once, gone after the reclaimer",
        "",
        "Right after each purge's answer: a GET of an object it does not cover, then one it covers;"
        " then the harness waits for the reclaimer.",
        "",
        "| selector | N | uncovered GET: status, ms p50 / max | covered GET: status | covered GET ms p50/max "
        "| reclaimer done after, ms p50 / p99 / max | longest loop stall, ms wall / loop-thread CPU"
        " | longest stall not queued for a CPU, ms: late / CPU / of it a trim ran"
        " | longest task step: task, loop-thread CPU / wall ms | refill s (harness, not timed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def seen(c: Counter[str]) -> str:
        return ", ".join(f"{s or '-'} {n}" for s, n in c.most_common()) or "-"

    def p50max(v: list[float]) -> str:
        return f"{fmt_ms(pct(v, 50))} / {fmt_ms(max(v))}" if v else "-"

    for kind in (*KINDS, "everything"):
        for r in results:
            k = r.kinds[kind]
            other = f"{seen(k.other)}, {p50max(k.other_ms)}" if k.other_ms else "-"
            gone = (
                f"{fmt_ms(pct(k.gone_ms, 50))} / {fmt_ms(pct(k.gone_ms, 99))} / {fmt_ms(max(k.gone_ms))}"
                if k.gone_ms
                else "-"
            )
            refill = f"{statistics.median(k.refill_s):.3f}" if k.refill_s else "-"
            stall = f"{fmt_ms(max(k.stall_ms))} / {fmt_ms(max(k.stall_cpu_ms))}" if k.stall_ms else "-"
            own = " / ".join(fmt_ms(v) for v in max(k.unqueued)) if k.unqueued else "-"
            step = "-"
            if k.steps:
                name, step_cpu, step_wall = max(k.steps, key=lambda t: t[1])
                step = f"{name or '-'}, {fmt_ms(step_cpu)} / {fmt_ms(step_wall)}"
            out.append(
                f"| {LABELS[kind]} | {n_label(r.n)} | {other} | {seen(k.probe)} | {p50max(k.probe_ms)}"
                f" | {gone} | {stall} | {own} | {step} | {refill} |"
            )
    out += [
        "",
        "### 1c. Where the floor goes: HTTP, authentication, the durable commit",
        "",
        "| N | GET /healthz (aiohttp alone) p50 / p99 | authenticated purge, rejected as empty (400) "
        "| floor purge (unknown tag) p50 / p99 | the same, right after the harness's refill p50 / p99 "
        "| node CPU per purge, one URL / floor: p50 ms | bare SQLite INSERT+COMMIT (WAL, FULL) p50 / p99 "
        "| node fill: s, entries, bytes_used MB, RSS MB | full GC passes during the rounds: n, max, total "
        "| others' CPU % | load 1/5/15 after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pp(v: list[float]) -> str:
        return f"{fmt_ms(pct(v, 50))} / {fmt_ms(pct(v, 99))} ms" if v else "-"

    for r in results:
        f, g = r.fill, r.gc[2]
        out.append(
            f"| {n_label(r.n)} | {pp(r.healthz_ms)} | {pp(r.auth_ms)} | {pp(r.kinds['floor'].lat)}"
            f" | {pp([ms for k in r.kinds.values() for ms in k.after_refill])}"
            f" | {' / '.join(fmt_ms(statistics.median(r.kinds[k].cpu_ms)) for k in CPU_KINDS)}"
            f" | {pp(r.commit_ms)}"
            f" | {f['fill_s']:.1f} s, {f['entries']:,}, {f['bytes_used'] / 1e6:,.0f} MB,"
            f" {f['rss_after'] / 1e6:,.0f} MB | {g['count']:.0f}, {g['max_s'] * 1000:,.0f} ms,"
            f" {g['total_s']:.1f} s | {r.others_cpu:.0f} | {r.load} |"
        )
    return "\n".join(out) + "\n"


def reclaim_table(results: list[ApiResult]) -> str:
    out = [
        "### 3. Reclaimer throughput and memory released (inside the node, one purge each)",
        "",
        "| N | purge | entries before | removed | accepted ms | reclaimer s | objects/s "
        "| bytes_used MB before → after | retired MB after | RSS MB before → after (node's own trim)"
        " → gc → malloc_trim | longest loop stall ms, wall / loop-thread CPU"
        " | longest task step: task, loop-thread CPU / wall ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for c in r.reclaim:
            ops = c["objects_per_s"]
            trim = c["rss_after_trim"]
            retired = c.get("retired_bytes_after")
            out.append(
                f"| {n_label(r.n)} | {'one tag' if c['kind'] == 'tag' else 'everything'}"
                f" | {c['entries_before']:,}"
                f" | {c['removed']:,} | {fmt_ms(c['accept_ms'])} | {c['reclaim_s']:.3f}"
                f" | {'-' if ops is None else f'{ops:,.0f}'}"
                f" | {c['bytes_used_before'] / 1e6:,.1f} → {c['bytes_used_after'] / 1e6:,.1f}"
                f" | {'-' if retired is None else f'{retired / 1e6:,.1f}'}"
                f" | {c['rss_before'] / 1e6:,.0f} → {c['rss_after'] / 1e6:,.0f}"
                f" → {c['rss_after_gc'] / 1e6:,.0f}"
                f" → {'-' if trim is None else f'{trim / 1e6:,.0f}'}"
                f" | {fmt_ms(c.get('stall_ms'))} / {fmt_ms(c.get('stall_cpu_ms'))}"
                f" | {c.get('step') or '-'}, {fmt_ms(c.get('step_cpu_ms'))}"
                f" / {fmt_ms(c.get('step_wall_ms'))} |"
            )
    return "\n".join(out) + "\n"


# --- 2. hits with outstanding rules ---------------------------------------------------------------------


@dataclass
class HitResult:
    runs: dict[str, list[tuple[wrk.WrkResult, float]]]
    """Per scenario: (wrk result, others' CPU % during the run)."""
    rules: int
    rules_s: float
    rules_lat: list[float]
    rows_before: int
    rows_after: int
    check_ns: list[tuple[str, dict[str, Any]]]
    stream_purges: int
    stream_seconds: float
    others_cpu: float
    load: str
    notes: list[str]


def rule_bodies(n_rules: int) -> Iterator[dict[str, Any]]:
    """100k non-matching rules: 40% tags, 30% URLs, 30% prefixes, 100 per request."""
    tags, urls = int(n_rules * 0.4), int(n_rules * 0.3)
    prefixes = n_rules - tags - urls
    for s in range(0, tags, 100):
        yield {"tags": [f"other-{i}" for i in range(s, min(s + 100, tags))]}
    for s in range(0, urls, 100):
        yield {
            "files": [f"http://127.0.0.1/obj/{i:06d}" for i in range(10_000 + s, 10_000 + min(s + 100, urls))]
        }
    for s in range(0, prefixes, 100):
        items = []
        for i in range(s, min(s + 100, prefixes)):
            kind = i % 3  # other directories; longer names under /obj/; names sharing /small's "s"
            items.append(
                f"127.0.0.1/p{i}/"
                if kind == 0
                else f"127.0.0.1/obj/{i:06d}x"
                if kind == 1
                else f"127.0.0.1/s{i}"
            )
        yield {"prefixes": items}


def run_hits(tmp: Path, origin: int, rounds: int, duration: int, n_rules: int) -> HitResult:
    print("[hits] starting two nodes and warming 10k keys over HTTP", flush=True)
    notes: list[str] = []
    clean = EdgeNode("hits-clean", tmp, origin, 256 << 20)
    with stopping([clean]) as servers:
        rules = EdgeNode("hits-rules", tmp, origin, 256 << 20, no_reclaimer=True)
        servers.append(rules)
        paths = [f"/obj/{i:06d}" for i in range(10_000)] + ["/small"]
        for node in (clean, rules):
            left = client.warm(node.data_port, paths, "cf-cache-status", timeout=180)
            if left:
                raise BenchError(f"{len(left)} keys never answered HIT, e.g. {left[:3]}")
        print(f"[hits] applying {n_rules:,} rules through the API", flush=True)
        lat: list[float] = []
        t0 = time.perf_counter()
        for body in rule_bodies(n_rules):
            ms, status, answer = rules.purge(body)
            if status != 200:
                raise BenchError(f"rule purge answered {status}: {answer}")
            lat.append(ms)
        rules_s = time.perf_counter() - t0
        rows_before = int(rules.cmd("stats")["index_rows"])
        if client.warm(rules.data_port, ["/small?after"], "cf-cache-status"):
            raise BenchError("/small?after never answered HIT")
        checks = [
            (
                "/small (tags bench, small)",
                rules.cmd("checkcost", key="http://127.0.0.1/small", tags=["bench", "small"]),
            ),
            (
                "/obj/000123 (tag tag23)",
                rules.cmd("checkcost", key="http://127.0.0.1/obj/000123", tags=["tag23"]),
            ),
        ]
        scripts = wrk.write_scripts(tmp)
        runs: dict[str, list[tuple[wrk.WrkResult, float]]] = {}
        plan: list[tuple[str, str, Path | None]] = [
            ("clean: /small", f"http://127.0.0.1:{clean.data_port}/small", None),
            (
                "100k rules: /small, stored before the rules",
                f"http://127.0.0.1:{rules.data_port}/small",
                None,
            ),
            (
                "100k rules: /small?after, stored after",
                f"http://127.0.0.1:{rules.data_port}/small?after",
                None,
            ),
            ("clean: 10k random keys", f"http://127.0.0.1:{clean.data_port}/", scripts["rand10k"]),
            (
                "100k rules: 10k random keys, stored before",
                f"http://127.0.0.1:{rules.data_port}/",
                scripts["rand10k"],
            ),
        ]
        stream_name = "clean: /small while ~50 purges/s arrive"
        sent = [0]
        stream_s = 0.0

        def with_stream() -> tuple[wrk.WrkResult, float]:
            """wrk on the clean node's /small while a thread sends ~50 purges/s of unrelated tags
            (reclaimer running, as in production)."""
            nonlocal stream_s
            stop = threading.Event()

            def stream() -> None:
                api = ApiClient(clean.control_port, clean.token)
                start, mine = time.monotonic(), 0
                try:
                    while not stop.is_set():
                        api.purge({"tags": [f"stream-{sent[0]}"]})
                        sent[0] += 1
                        mine += 1
                        stop.wait(max(0.0, start + mine / 50 - time.monotonic()))  # 50/s when it can
                finally:
                    api.close()

            th = threading.Thread(target=stream, daemon=True)
            wait_quiet()
            t0 = time.perf_counter()
            th.start()
            busy = OthersCpu()
            try:
                res = wrk.run(f"http://127.0.0.1:{clean.data_port}/small", duration)
            finally:
                stop.set()
                th.join(10)
                stream_s += time.perf_counter() - t0
            return res, busy.percent()

        others = OthersCpu()
        for r in range(rounds):
            print(f"[hits] wrk round {r + 1}/{rounds}", flush=True)
            for name, url, script in plan:
                if script is not None and r > 0:
                    continue  # random keys: one run per node (the time budget goes to the hot-key runs)
                for node in (clean, rules):
                    if not node.server.alive():
                        raise BenchError(node.server.why_dead())
                runs.setdefault(name, []).append(wrk_run(url, duration, script))
            runs.setdefault(stream_name, []).append(with_stream())
        rows_after = int(rules.cmd("stats")["index_rows"])
        if rows_after < rows_before:
            notes.append(f"index rows fell from {rows_before:,} to {rows_after:,} during the runs")
        return HitResult(
            runs,
            n_rules,
            rules_s,
            lat,
            rows_before,
            rows_after,
            checks,
            sent[0],
            stream_s,
            others.percent(),
            load_avg(),
            notes,
        )


def hits_table(h: HitResult, duration: int) -> str:
    def med(name: str) -> float:
        return statistics.median(x.rps for x, _ in h.runs[name])

    base = {"hot": med("clean: /small"), "rand": med("clean: 10k random keys")}
    out = [
        f"### 2. Hits with 0 and {h.rules:,} outstanding purge rules"
        f" (wrk -t1 -c50 -d{duration}s, median of runs)",
        "",
        "| node: key | req/s median (min-max) | p50 ms | p99 ms | errors | wrk CPU % | others' CPU % "
        "| vs clean | ≥ 0.95x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, pairs in h.runs.items():
        runs = [x for x, _ in pairs]
        rps = [x.rps for x in runs]
        ratio = statistics.median(rps) / (base["rand"] if "random" in name else base["hot"])
        baseline = name.startswith("clean:") and "arrive" not in name
        verdict = "(baseline)" if baseline else "yes" if ratio >= 0.95 else "**no**"
        spread = f"{statistics.median(rps):,.0f}" + (
            f" ({min(rps):,.0f}-{max(rps):,.0f})" if len(rps) > 1 else ""
        )
        out.append(
            f"| {name} | {spread} | {statistics.median(x.p50_ms for x in runs):.2f}"
            f" | {statistics.median(x.p99_ms for x in runs):.2f} | {sum(x.errors for x in runs)}"
            f" | {statistics.median(x.wrk_cpu for x in runs):.0f}"
            f" | {statistics.median(b for _, b in pairs):.0f} | {ratio:.3f}x | {verdict} |"
        )
    out += [
        "",
        f"Rules: {h.rules:,} applied through the API in {h.rules_s:.1f} s"
        f" ({h.rules / h.rules_s:,.0f} rules/s;"
        f" {len(h.rules_lat)} requests of 100 items, p50 {fmt_ms(pct(h.rules_lat, 50))} ms,"
        f" p99 {fmt_ms(pct(h.rules_lat, 99))} ms). Outstanding index rows: {h.rows_before:,}"
        " before the wrk runs,"
        f" {h.rows_after:,} after (reclaimer stopped, nothing compacted)."
        f" Purge stream: {h.stream_purges} purges"
        f" in {h.stream_seconds:.1f} s. Others' CPU during the runs: {h.others_cpu:.0f}% of a core;"
        f" load {h.load}.",
        "",
        "`EpochIndex.check` against those rules, in the node (best of 5 x 100k calls):",
        "",
        "| entry | older than every rule (the check a first hit pays) ns | newer (fast path) ns"
        " | rows | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, c in h.check_ns:
        out.append(
            f"| {name} | {c['ns']['older_than_rules']:,.0f} | {c['ns']['newer_than_rules']:,.0f}"
            f" | {c['rows']:,} | {c['verdict']} |"
        )
    out += [f"- {n}" for n in h.notes]
    return "\n".join(out) + "\n"


# --- 4. Varnish side by side ----------------------------------------------------------------------------


@dataclass
class VarnishResult:
    n: int
    fill_s: float
    fill_errors: int
    n_object: int
    purge_ms: list[float]
    purge_seen_s: float | None
    """After the PURGE loop: until n_object had dropped by all of them (objects are freed lazily)."""
    xkey_ms: list[float]
    xkey_gone_s: list[float | None]
    xkey_objects: list[int]
    ban_ms: list[float]
    ban_gone_s: list[float | None]
    ban_objects: list[int]
    rss_child: int
    error: str = ""


def run_varnish(n: int, tmp: Path, origin: int, purges: int, seed: int) -> VarnishResult:
    rng = random.Random(seed)
    print(f"[varnish] N={n:,}: fresh varnishd, fill over HTTP", flush=True)
    v = Varnish.start(f"varnish-{n_label(n)}", tmp, origin)
    with stopping([v]):
        v.adm("param.set", "ban_lurker_age", "0")  # before any ban: a sleeping lurker is not woken
        wait_quiet()
        present = set(range(n))
        fill = client.request_all(
            v.port, [f"/obj/{i:06d}" for i in range(n)], "x-cache", concurrency=64, timeout=240
        )
        n_object = v.counters("MAIN.n_object")["MAIN.n_object"]
        rss = srv.rss_bytes(srv.varnish_child(v.server))
        conn = Conn(v.port, timeout=30)
        conn.request("GET", "/obj/000000")
        per = n // 100
        bans = (5, 6, 7)
        # Single-URL PURGE victims: tags 90-99, outside the ban prefixes (xkey takes tags 10-14).
        pool = [i for i in range(n) if i % 100 >= 90 and not bans[0] * per <= i < (bans[-1] + 1) * per]
        victims = rng.sample(pool, purges)
        before = v.counters("MAIN.n_object")["MAIN.n_object"]
        purge_ms = []
        for i in victims:
            ms, status, _, _ = conn.request("PURGE", f"/obj/{i:06d}")
            if status != 200:
                raise BenchError(f"PURGE answered {status}")
            purge_ms.append(ms)
            present.discard(i)
        purge_seen = v.wait_below("MAIN.n_object", before - purges, time.perf_counter(), 10)
        xkey_ms, xkey_gone, xkey_objs = [], [], []
        for k in range(10, 15):
            before = v.counters("MAIN.n_object")["MAIN.n_object"]
            t0 = time.perf_counter()
            ms, status, _, body = conn.request("XKEYPURGE", "/", headers={"X-Xkey": f"tag{k}"})
            m = re.search(rb"Invalidated (\d+)", body)
            gone_count = int(m.group(1)) if m else 0
            xkey_ms.append(ms)
            xkey_objs.append(gone_count)
            xkey_gone.append(v.wait_below("MAIN.n_object", before - gone_count, t0, 10))
            present -= set(range(k, n, 100))
        digits = 6 - round(math.log10(per))
        ban_ms, ban_gone, ban_objs = [], [], []
        for k in bans:
            expected = sum(1 for i in range(k * per, (k + 1) * per) if i in present)
            killed0 = v.counters("MAIN.bans_lurker_obj_killed")["MAIN.bans_lurker_obj_killed"]
            t0 = time.perf_counter()
            ms, status, _, _ = conn.request("BAN", "/", headers={"X-Ban-Url": f"^/obj/{k:0{digits}d}"})
            if status != 200:
                raise BenchError(f"BAN answered {status}")
            ban_ms.append(ms)
            ban_objs.append(expected)
            ban_gone.append(v.wait_counter("MAIN.bans_lurker_obj_killed", killed0 + expected, t0, 30))
            present -= set(range(k * per, (k + 1) * per))
        conn.close()
        return VarnishResult(
            n,
            fill.seconds,
            len(fill.errors),
            n_object,
            purge_ms,
            purge_seen,
            xkey_ms,
            xkey_gone,
            xkey_objs,
            ban_ms,
            ban_gone,
            ban_objs,
            rss,
        )


def side_by_side(vres: list[VarnishResult], api: dict[int, ApiResult]) -> str:
    out = [
        "### 4. Side by side: Varnish 7.1 (+ xkey) and edgecache, same machine, same run",
        "",
        "| operation | N | Varnish: accepted ms p50 / p99 (n) | Varnish: gone after | edgecache: accepted ms "
        "p50 / p99 (n) | edgecache: reclaimer done after, ms p50 | edgecache: next GET |",
        "|---|---|---|---|---|---|---|",
    ]

    def gone(values: list[float | None]) -> str:
        ok = [x * 1000 for x in values if x is not None]
        missing = len(values) - len(ok)
        text = f"{fmt_ms(statistics.median(ok))} ms (median of {len(ok)})" if ok else "-"
        return text + (f", {missing} not seen within the timeout" if missing else "")

    for v in vres:
        e = api.get(v.n)

        def ec(kind: str, e: ApiResult | None = e) -> list[str]:
            if e is None:
                return ["(not measured at this N)", "-", "-"]
            k = e.kinds[kind]
            probe = ", ".join(f"{s} {c}" for s, c in k.probe.most_common())
            return [
                f"{fmt_ms(pct(k.lat, 50))} / {fmt_ms(pct(k.lat, 99))} ({len(k.lat)})",
                fmt_ms(pct(k.gone_ms, 50)) if k.gone_ms else "-",
                f"{probe} (p50 {fmt_ms(pct(k.probe_ms, 50))} ms)",
            ]

        nl = n_label(v.n)
        rows = [
            (
                "single URL: `PURGE` / `files`",
                "url",
                f"{fmt_ms(pct(v.purge_ms, 50))} / {fmt_ms(pct(v.purge_ms, 99))} ({len(v.purge_ms)})",
                f"at once; n_object reflects all {len(v.purge_ms)} "
                + (
                    "(not within 10 s)"
                    if v.purge_seen_s is None
                    else f"{v.purge_seen_s * 1000:.0f} ms after the loop"
                ),
            ),
            (
                f"one tag, {statistics.median(v.xkey_objects):,.0f} objects: `xkey.purge` / `tags`",
                "tag",
                f"{fmt_ms(pct(v.xkey_ms, 50))} / {fmt_ms(max(v.xkey_ms))} ({len(v.xkey_ms)})",
                f"synchronous; n_object reflects it after {gone(v.xkey_gone_s)}",
            ),
            (
                f"prefix, {statistics.median(v.ban_objects):,.0f} objects: ban (lurker age 0) / `prefixes`",
                "prefix",
                f"{fmt_ms(pct(v.ban_ms, 50))} / {fmt_ms(max(v.ban_ms))} ({len(v.ban_ms)})",
                f"lurker killed all after {gone(v.ban_gone_s)}",
            ),
        ]
        for label, kind, vacc, vgone in rows:
            out.append(f"| {label} | {nl} | {vacc} | {vgone} | " + " | ".join(ec(kind)) + " |")
    out += [
        "",
        "| Varnish | fill (64 conns) | fill errors | n_object | child RSS after fill |",
        "|---|---|---|---|---|",
    ]
    for v in vres:
        out.append(
            f"| N={n_label(v.n)} | {v.fill_s:.1f} s ({v.n / v.fill_s:,.0f} req/s) | {v.fill_errors}"
            f" | {v.n_object:,} | {v.rss_child / 1e6:,.0f} MB |"
        )
    out.append("")
    out.append(
        "Varnish p99 with 5 or 3 samples is the max. edgecache's prefix covers N/100 on bench.test minus "
        "the 1% on alt.bench.test; Varnish's prefix ban covers N/100 minus what earlier steps purged."
    )
    return "\n".join(out) + "\n"


# --- main ---------------------------------------------------------------------------------------------


def need_tools() -> None:
    missing = [
        t for t in ("varnishd", "varnishadm", "varnishstat", "wrk", "nginx") if shutil.which(t) is None
    ]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: apt-get install -y varnish varnish-modules wrk nginx"
        )


def main() -> None:
    p = argparse.ArgumentParser(description="edgecache purge benchmark (see the module docstring)")
    p.add_argument("--quick", action="store_true", help="10k/100k only, fewer repetitions, 5 s wrk runs")
    p.add_argument("--sizes", type=int, nargs="+", help="stored objects per API node (powers of ten, 10k-1M)")
    p.add_argument("--rounds", type=int, help="purges per kind (default 200, quick 50)")
    p.add_argument("--skip", nargs="*", default=[], choices=["api", "hits", "varnish"])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--allocator",
        choices=sorted(ALLOCATORS),
        default="jemalloc" if _JEMALLOC else "glibc",
        help="the API nodes' malloc (default: what edgecache serve runs on here; glibc to compare)",
    )
    args = p.parse_args()
    need_tools()
    quick = args.quick
    sizes = args.sizes or ([10_000, 100_000] if quick else [10_000, 100_000, 1_000_000])
    rounds = args.rounds or (50 if quick else 200)
    everything = {10_000: 5, 100_000: 5, 1_000_000: 3} if quick else {10_000: 20, 100_000: 10, 1_000_000: 3}
    hit_rounds, duration = (1, 5) if quick else (3, 10)
    varnish_purges = 100 if quick else 200
    command = "  ".join([".venv/bin/python bench/purge_api.py", *sys.argv[1:]]).strip()
    started = datetime.now().astimezone()
    load0 = load_avg()
    others = OthersCpu()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-purge-bench-"))
    tmp.chmod(0o755)  # nginx workers and Varnish's sandbox user read configs and files here
    api: list[ApiResult] = []
    hits: HitResult | None = None
    vres: list[VarnishResult] = []
    failures: list[str] = []

    def report(final: bool) -> str:
        """The whole report so far; written after every section, so a later failure loses nothing."""
        minutes = (time.monotonic() - t0) / 60
        head = [
            "## edgecache purge benchmark" + ("" if final else " (partial: still running)"),
            "",
            f"Command: `{command}` (run {started:%Y-%m-%d %H:%M %Z}, {minutes:.1f} min)."
            " Machine: 2 vCPU shared VM;"
            f" load average (1/5/15 min) {load0} at the start, {load_avg()} at the end; processes outside"
            f" the benchmark used {others.percent():.0f}% of a core on average over the run.",
            "",
            "| component | version |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in versions()],
            "",
        ]
        body: list[str] = []
        if api:
            body.append(api_tables(api))
        if hits is not None:
            body.append(hits_table(hits, duration))
        if api:
            body.append(reclaim_table(api))
        if vres:
            body.append(side_by_side(vres, {r.n: r for r in api}))
        if failures:
            body.append("### Failures\n\n" + "\n".join(f"- {f}" for f in failures) + "\n")
        text = "\n".join(head) + "\n" + "\n".join(body)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        return text

    def failed(what: str, e: Exception) -> None:
        failures.append(f"{what}: {type(e).__name__}: {e}")
        traceback.print_exc()

    try:
        with stopping([]) as servers:
            origin = srv.start_origin(tmp)
            servers.append(origin)
            if "api" not in args.skip:
                for i, n in enumerate(sizes):
                    try:
                        per = everything.get(n, 3)
                        api.append(run_api(n, rounds, per, tmp, origin.port, i, args.allocator))
                    except Exception as e:
                        failed(f"API N={n:,}", e)
                    report(False)
            if "hits" not in args.skip:
                try:
                    hits = run_hits(tmp, origin.port, hit_rounds, duration, 100_000)
                except Exception as e:
                    failed("hits", e)
                report(False)
            if "varnish" not in args.skip:
                for i, n in enumerate(x for x in sizes if x <= 100_000):
                    try:
                        vres.append(run_varnish(n, tmp, origin.port, varnish_purges, seed=100 + i))
                    except Exception as e:
                        failed(f"Varnish N={n:,}", e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + report(True))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
