"""Launcher for bench/purge_api.py: one real edgecache node, plus a small command port for the harness.

Run: ``.venv/bin/python bench/_purge_node.py --hook-port P --origin http://127.0.0.1:O --data-dir D
[--no-reclaimer] [--memory-bytes B]``. The node is built by ``edgecache.app.Node`` from a generated
configuration (data and control ports chosen by the kernel) and started as ``edgecache serve`` would
(uvloop). Then a tiny aiohttp app listens on ``--hook-port`` (POST /cmd, one JSON object in, one out),
which lets the harness do what the public API cannot:

- ``info``: ports, zone id, a fresh API token (``node.credentials.create_token``), pid.
- ``fill`` / ``refill``: put synthetic 1 KiB entries straight into the memory tier (``node.store``),
  object ``i`` = ``http://bench.test/obj/{i:06d}`` (every hundredth, ``i % 100 == 42``, on host
  ``alt.bench.test`` so that a host purge covers 1%), tags ``tag{i%100}`` and ``grp{i//100%100}``,
  ``stored_seq`` = the index position. Filling a million objects over HTTP would take minutes; the
  purge path does not care how an entry got there.
- ``drain``: wait until the reclaimer is idle and the ledger writer has committed the reclaimer's
  acknowledgements; report how long the last purge took from "in the index" to "reclaimed".
- ``reclaim``: the reclaimer benchmark, in process: RSS and ``bytes_used`` before, submit one purge
  through ``node.purges`` (the API's own service), wait, RSS after (and after ``malloc_trim``).
- ``checkcost``: ns per ``EpochIndex.check`` for an entry older than every outstanding rule.
- ``commitcost``: ms per bare SQLite ``INSERT`` + commit (WAL, synchronous=FULL) in the data dir.
- ``stats``: RSS, entries, bytes_used, outstanding index rows, pending purges, and the garbage
  collector's pauses per generation since the start (``gc.callbacks``; the event loop stops meanwhile).
- ``cpu``: the node process's CPU time so far (every thread), each thread's by name, and the ledger
  writer's commits so far.
- ``profile``: ``{"action": "start"}`` runs cProfile on the event loop's thread and the ledger
  writer's thread; ``{"action": "stop", "top": N}`` stops it and answers each thread's N most
  expensive functions by their own time, with the thread's CPU seconds over the window.
- ``lag``: the longest event-loop stall since the last ``lag`` (``edgecache.looplag.LoopLag`` with a
  1 ms period, wall and loop-thread CPU; and, from the kernel's per-thread statistics, the longest
  lateness less the loop thread's wait for a CPU, with that period's CPU and how long a
  ``malloc_trim`` ran in it), and start a new window. The harness opens a window right before each
  purge and reads it after the reclaimer is done, so its own fills are never counted.
  The same window's longest task step (``edgecache.looplag.StepTimer``: the task's function, its
  CPU and wall ms) names what held the loop. The StepTimer is installed for the node's whole life,
  not only while a window is read: each task step of the node costs +1.6 µs (docs/benchmarks.md)
  in every section that runs this launcher (1, 2 and 3 of purge_api.py; a hit answered without
  awaiting is no task step).
- ``trims``: the node's ``malloc_trim`` calls since the last ``trims`` (start and end,
  ``time.perf_counter()``, the same clock as the harness's; and each one's CPU): what an API call
  that overlapped one waited for (glibc's arena lock, see ``edgecache.memtrim``).

Instrumentation wraps ``edgecache.memtrim.trim_now`` (to time each trim) and reads two private
attributes (``PurgeService._apply`` and ``Reclaimer._on_reclaimed``
are wrapped to time-stamp each purge; ``PurgeService._writer`` is waited on): a benchmark may look
inside, the product is not changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import dataclasses
import gc
import io
import json
import os
import pstats
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from edgecache import allocator, memtrim
from edgecache.app import Node
from edgecache.config import Account, Config, Listener, PurgeRate, Quota, Storage, Zone
from edgecache.control import purges as purges_module
from edgecache.control.credentials import Permission
from edgecache.control.purges import PurgeRequest
from edgecache.looplag import LoopLag, StepTimer
from edgecache.purge.selectors import Mode, Purge, Selector
from edgecache.store.entry import Entry

ZONE_ID = "be4c4e0000000000000000000000beef"
HOST = "bench.test"
ALT_HOST = "alt.bench.test"
ALT_MOD = 42
"""Objects with ``i % 100 == ALT_MOD`` live on ALT_HOST."""
HEAD = (
    b"Server: nginx/1.22.1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Last-Modified: Sun, 22 Nov 2026 13:00:00 GMT\r\n"
    b'ETag: "6740a1b0-400"\r\n'
    b"Cache-Control: public, max-age=3600\r\n"
    b"Accept-Ranges: bytes\r\n"
)
BODY = b"a" * 1024
ENTRY_FIELDS = frozenset(f.name for f in dataclasses.fields(Entry))
HUGE = 10**9


def object_key(i: int) -> str:
    host = ALT_HOST if i % 100 == ALT_MOD else HOST
    return f"http://{host}/obj/{i:06d}"


def object_tags(i: int) -> tuple[str, str]:
    return (f"tag{i % 100:02d}", f"grp{i // 100 % 100:02d}")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each of this process's threads, summed per thread name (the kernel's
    per-thread run time in ns, ``/proc/self/task/*/schedstat``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
            out[name] = out.get(name, 0.0) + ns / 1e9
    return out


TRIMS: list[tuple[float, float, float]] = []
"""Each of the node's trims: (start, end, CPU seconds)."""
_trim_now = memtrim.trim_now


def timed_trim() -> bool:
    """``memtrim.trim_now``, recorded in ``TRIMS`` (it runs in a worker thread)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        return _trim_now()
    finally:
        TRIMS.append((t0, time.perf_counter(), time.thread_time() - c0))


memtrim.trim_now = timed_trim


def trimming(start: float, end: float) -> float:
    """Seconds of the node's trims between ``start`` and ``end``."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b, _ in TRIMS)


def malloc_trim() -> bool:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    return False


def build_config(data_dir: Path, origin: str, memory_bytes: int) -> Config:
    """One enterprise zone with rate limits and quotas out of the way (they are not what is measured)."""
    quotas = {
        t: Quota(batch=b, daily=HUGE)
        for t, b in (
            ("purge_url", 5000),
            ("purge_prefix", 1000),
            ("purge_host", 1000),
            ("purge_all", 1),
            ("purge_cache_tag", 100),
            ("prefetch_url", 5000),
        )
    }
    return Config(
        data=Listener(port=0),
        control=Listener(port=0),
        data_dir=data_dir,
        accounts=(
            Account(
                flex_purge=PurgeRate(per_second=1e6, burst=1e6),
                single_file_purge=PurgeRate(per_second=1e6, burst=1e6),
            ),
        ),
        zones=(
            Zone(
                id=ZONE_ID,
                name=HOST,
                hostnames=(HOST, ALT_HOST, "127.0.0.1", "localhost"),
                origin=origin,
                quotas=quotas,
            ),
        ),
        storage=Storage(memory_bytes=memory_bytes, max_object_bytes=1 << 20),
    )


class Bench:
    """The command handlers; everything runs on the node's event loop."""

    def __init__(self, node: Node, data_dir: Path, steps: StepTimer) -> None:
        self.node = node
        self.data_dir = data_dir
        self.token = ""
        self.applied: dict[int, float] = {}
        self.reclaimed: dict[int, tuple[float, int]] = {}
        self.last_seq = 0
        self.gc_pauses: list[list[float]] = [[], [], []]
        """Seconds of each collection per generation (the whole loop stops meanwhile)."""
        self.probe = LoopLag(0.001, schedstat=True)
        self.steps = steps
        """The longest task step in the probe's window (installed on the loop by ``main``)."""
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc_timer)
        self._wrap()
        self._profiles: dict[str, cProfile.Profile] = {}
        self._thread_cpu0: dict[str, float] = {}

    def _gc_timer(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_t0)

    def _wrap(self) -> None:
        purges: Any = self.node.purges
        reclaimer: Any = self.node.reclaimer
        apply: Callable[[Purge], None] = purges._apply
        done: Callable[[Purge, dict[Selector, int]], None] | None = reclaimer._on_reclaimed

        def timed_apply(purge: Purge) -> None:
            self.applied[purge.seq] = time.perf_counter()
            self.last_seq = purge.seq
            apply(purge)

        def timed_done(purge: Purge, matched: dict[Selector, int]) -> None:
            self.reclaimed[purge.seq] = (time.perf_counter(), sum(matched.values()))
            if done is not None:
                done(purge, matched)

        purges._apply = timed_apply
        reclaimer._on_reclaimed = timed_done

    # -- entries -------------------------------------------------------------------------------------

    def _put_all(self, indices: Iterator[int]) -> int:
        store, seq, now, n = self.node.store, self.node.index.position, time.time(), 0
        tail = BODY[6:]
        # Fields that older Entry versions had and newer ones derive (validators from the head).
        optional: dict[str, Any] = {
            k: v
            for k, v in (
                ("request_time", now),
                ("etag", '"6740a1b0-400"'),
                ("last_modified", "Sun, 22 Nov 2026 13:00:00 GMT"),
            )
            if k in ENTRY_FIELDS
        }
        for i in indices:
            store.put(
                Entry(
                    zone=ZONE_ID,
                    key=object_key(i),
                    status=200,
                    head=HEAD,
                    body=b"%06d" % i + tail,
                    tags=object_tags(i),
                    stored_seq=seq,
                    response_time=now,
                    initial_age=0.0,
                    freshness_lifetime=86400.0,
                    **optional,
                )
            )
            n += 1
        return n

    def fill(self, n: int) -> dict[str, Any]:
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        gc.disable()  # a bulk load: generational passes over a growing heap would dominate
        try:
            put = self._put_all(iter(range(n)))
        finally:
            gc.enable()
        t1 = time.perf_counter()
        gc.collect()  # as a node that filled over hours: every entry in the oldest generation
        self.gc_pauses = [[], [], []]  # count what happens from now on, not this explicit pass
        return {
            "n": put,
            "fill_s": t1 - t0,
            "gc_s": time.perf_counter() - t1,
            "rss_before": rss0,
            "rss_after": rss_bytes(),
            "bytes_used": self.node.store.bytes_used,
            "entries": len(self.node.store),
        }

    def refill(self, ranges: list[list[int]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = self._put_all(i for r in ranges for i in range(*r))
        return {"n": n, "s": time.perf_counter() - t0, "entries": len(self.node.store)}

    # -- reclaimer -----------------------------------------------------------------------------------

    async def _writer_idle(self) -> None:
        writer = getattr(self.node.purges, "_writer", None)
        if writer is not None:
            await asyncio.wrap_future(writer.submit(lambda conn: self.node.purges._flush_acks(conn, [])))

    async def drain(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        await self.node.reclaimer.drain()
        await self._writer_idle()
        seq = self.last_seq
        applied = self.applied.get(seq)
        done = self.reclaimed.get(seq)
        return {
            "seq": seq,
            "gone_ms": None if applied is None or done is None else (done[0] - applied) * 1000,
            "matched": None if done is None else done[1],
            "wait_ms": (time.perf_counter() - t0) * 1000,
            "entries": len(self.node.store),
        }

    async def reclaim(self, kind: str, arg: str) -> dict[str, Any]:
        """Time one purge from acceptance to reclaimed, with memory before and after."""
        node = self.node
        zone = node.zones.by_id[ZONE_ID]
        req = PurgeRequest(everything=True) if kind == "everything" else PurgeRequest(tags=(arg,))
        items = node.purges.items(zone, req)
        await self.drain()
        gc.collect()
        rss0, used0, n0 = rss_bytes(), node.store.bytes_used, len(node.store)
        removed0 = node.reclaimer.removed
        # The probe's period under way began before the collection and the reads above: let it end
        # before the window opens, so that they are not counted against the purge.
        await asyncio.sleep(0.005)
        self.probe.reset()
        self.steps.reset()
        t0 = time.perf_counter()
        accepted = await node.purges.submit(zone, Mode.DELETE, items, req, principal="bench", dialect="bench")
        t_ack = time.perf_counter()
        await node.reclaimer.drain()
        seq = accepted.purge.seq
        t_done = self.reclaimed[seq][0]
        await self._writer_idle()
        await asyncio.sleep(1.5)  # the reclaimer's compaction and its malloc_trim, in the background
        stall, stall_cpu = self.probe.reset()
        step, step_cpu, step_wall = self.steps.reset()
        rss1 = rss_bytes()
        gc.collect()
        rss2 = rss_bytes()
        trimmed = malloc_trim()
        rss3 = rss_bytes()
        removed = node.reclaimer.removed - removed0
        reclaim_s = t_done - self.applied[seq]
        return {
            "kind": kind,
            "entries_before": n0,
            "removed": removed,
            "accept_ms": (t_ack - t0) * 1000,
            "reclaim_s": reclaim_s,
            "objects_per_s": removed / reclaim_s if reclaim_s > 0 else None,
            "bytes_used_before": used0,
            "bytes_used_after": node.store.bytes_used,
            "rss_before": rss0,
            "rss_after": rss1,
            "rss_after_gc": rss2,
            "rss_after_trim": rss3 if trimmed else None,
            "stall_ms": stall * 1000,
            "stall_cpu_ms": stall_cpu * 1000,
            "step": step,
            "step_cpu_ms": step_cpu * 1000,
            "step_wall_ms": step_wall * 1000,
            "entries_after": len(node.store),
            # Deleted entries are "retired": out of the index, still holding their bodies until the ring
            # is compacted (when retired bytes pass budget/8). Private; read for this table only.
            "retired_bytes_after": getattr(node.store, "_retired_bytes", None),
        }

    # -- costs ---------------------------------------------------------------------------------------

    def checkcost(self, key: str, tags: list[str], loops: int) -> dict[str, Any]:
        index = self.node.index
        tup = tuple(tags)
        best = {}
        for name, stored in (("older_than_rules", 0), ("newer_than_rules", index.position)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter_ns()
                for _ in range(loops):
                    index.check(ZONE_ID, key, tup, stored)
                times.append((time.perf_counter_ns() - t0) / loops)
            best[name] = min(times)
        return {"ns": best, "verdict": repr(index.check(ZONE_ID, key, tup, 0)), "rows": len(index)}

    def commitcost(self, n: int) -> dict[str, Any]:
        path = self.data_dir / "commit-probe.db"
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
                con.execute("COMMIT")
                out.append((time.perf_counter() - t0) * 1000)
        finally:
            con.close()
        return {"ms": out}

    # -- profile -------------------------------------------------------------------------------------

    def _on_writer(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the ledger writer's thread and wait for it (the loop blocks meanwhile: a
        benchmark command, between measured windows)."""
        writer: Any = self.node.purges._writer
        if not hasattr(writer, "call"):  # before the group writer: a thread pool of one
            return writer.submit(fn).result()
        return writer.call(lambda _conn: fn())

    def profile(self, action: str, top: int) -> dict[str, Any]:
        if action == "start":
            # Timed by each thread's CPU clock: waits (the GIL, fsync, the queue) are not counted.
            self._profiles = {name: cProfile.Profile(time.thread_time) for name in ("loop", "writer")}
            self._thread_cpu0 = {"loop": time.thread_time(), "writer": self._on_writer(time.thread_time)}
            self._on_writer(self._profiles["writer"].enable)
            self._profiles["loop"].enable()
            return {"started": True}
        self._profiles["loop"].disable()
        cpu = {"loop": time.thread_time(), "writer": 0.0}
        self._on_writer(self._profiles["writer"].disable)
        cpu["writer"] = self._on_writer(time.thread_time)
        out: dict[str, Any] = {}
        for name, prof in self._profiles.items():
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("tottime").print_stats(top)
            buf2 = io.StringIO()
            pstats.Stats(prof, stream=buf2).sort_stats("cumulative").print_stats(top)
            out[name] = {
                "cpu_s": cpu[name] - self._thread_cpu0[name],
                "tottime": buf.getvalue(),
                "cumulative": buf2.getvalue(),
            }
        return out

    def stats(self) -> dict[str, Any]:
        node = self.node
        return {
            "rss": rss_bytes(),
            "entries": len(node.store),
            "bytes_used": node.store.bytes_used,
            "index_rows": len(node.index),
            "index_position": node.index.position,
            "pending": node.reclaimer.pending,
            "removed": node.reclaimer.removed,
            "marked_stale": node.reclaimer.marked_stale,
            "gc": [
                {"count": len(p), "total_s": sum(p), "max_s": max(p, default=0.0)} for p in self.gc_pauses
            ],
        }

    def info(self) -> dict[str, Any]:
        node = self.node
        return {
            "pid": os.getpid(),
            "data_port": node.data_port,
            "control_port": node.control_port,
            "zone": ZONE_ID,
            "token": self.token,
            "budget": node.store.budget,
        }

    async def handle(self, request: web.Request) -> web.Response:
        cmd: dict[str, Any] = await request.json()
        op = cmd["op"]
        result: dict[str, Any]
        if op == "info":
            result = self.info()
        elif op == "fill":
            result = self.fill(int(cmd["n"]))
        elif op == "refill":
            result = self.refill(cmd["ranges"])
        elif op == "drain":
            result = await self.drain()
        elif op == "reclaim":
            result = await self.reclaim(cmd["kind"], cmd.get("arg", ""))
        elif op == "checkcost":
            result = self.checkcost(cmd["key"], cmd["tags"], int(cmd.get("loops", 100_000)))
        elif op == "commitcost":
            result = self.commitcost(int(cmd.get("n", 100)))
        elif op == "stats":
            result = self.stats()
        elif op == "profile":
            result = self.profile(cmd["action"], int(cmd.get("top", 40)))
        elif op == "cpu":
            writer: Any = self.node.purges._writer
            result = {
                "process_s": time.process_time(),
                "threads": thread_cpu(),
                # None before the group writer (one commit per purge).
                "ledger_commits": getattr(writer, "commits", None),
            }
        elif op == "lag":
            probe = self.probe
            late, busy, _ = probe.worst
            trim = trimming(probe.worst_end - late - probe.every, probe.worst_end)
            own = probe.longest_unqueued
            wall, cpu = probe.reset()
            step, step_cpu, step_wall = self.steps.reset()
            result = {
                "step": step,
                "step_cpu_ms": step_cpu * 1000,
                "step_wall_ms": step_wall * 1000,
                "ms": wall * 1000,
                "cpu_ms": cpu * 1000,
                "unqueued_ms": own * 1000,
                "unqueued_cpu_ms": busy * 1000,
                "unqueued_trim_ms": trim * 1000,
            }
        elif op == "trims":
            result = {"trims": list(TRIMS)}
            TRIMS.clear()
        else:
            return web.json_response({"error": f"unknown op {op!r}"}, status=400)
        return web.json_response(result)


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir)
    if args.ack_delay is not None:
        purges_module.ACK_DELAY = args.ack_delay
    data_dir.mkdir(parents=True, exist_ok=True)
    steps = StepTimer()
    steps.install(asyncio.get_running_loop())  # before the node's tasks (the reclaimer's) exist
    node = Node(build_config(data_dir, args.origin, args.memory_bytes))
    await node.start()
    if args.no_reclaimer:
        # Purges stay outstanding (in the index, never compacted) until the process ends.
        await node.reclaimer.stop()
    bench = Bench(node, data_dir, steps)
    probe = asyncio.get_running_loop().create_task(bench.probe.run())
    _, bench.token = await asyncio.to_thread(
        node.credentials.create_token, node.config.accounts[0].id, "bench", [Permission.CACHE_PURGE], None
    )
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/cmd", bench.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.hook_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(bench.info()), flush=True)
    await stop.wait()
    probe.cancel()
    await runner.cleanup()
    await node.stop()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hook-port", type=int, required=True)
    p.add_argument("--origin", required=True, help="http://host:port of the zone's origin")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--memory-bytes", type=int, default=256 << 20)
    p.add_argument("--no-reclaimer", action="store_true", help="stop the reclaimer: purges stay outstanding")
    p.add_argument(
        "--ack-delay", type=float, help="PurgeService's ACK_DELAY (0: every acknowledgement alone)"
    )
    return p.parse_args()


ALLOCATOR_ENV = "EDGECACHE_BENCH_ALLOCATOR"
"""``runtime.allocator`` for this launcher ("auto" when unset): it re-executes itself on jemalloc as
``edgecache serve`` does (decision 0019), so that a benchmark's node runs on what a served one does."""


if __name__ == "__main__":
    setting = os.environ.get(ALLOCATOR_ENV, "auto")
    if setting not in ("auto", "jemalloc", "system"):
        raise SystemExit(f"{ALLOCATOR_ENV}={setting!r}: expected auto, jemalloc or system")
    allocator.ensure(setting, None)
    uvloop.run(main(parse_args()))
