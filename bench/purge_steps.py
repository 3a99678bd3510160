"""What the steps of one purge cost when purges come one at a time: thread CPU per step, paced.

Run: ``.venv/bin/python bench/purge_steps.py [--n N] [--gap S]`` (about a minute). Each step runs
``--n`` times, ``--gap`` seconds apart (default 0.02: a stream of 50 purges/s), so that each run
starts with the caches another process left, as a purge of a paced stream does; the same step in
a tight loop is printed next to it. CPU time of the thread that runs the step (``thread_time``:
user and kernel), read right before and after the step (the sleeps are not in it).

1. The ledger writer's statements (``edgecache.db``: SQLite, WAL, ``synchronous=FULL``, the
   product's schema, prepared statements and the transaction on the driver's connection, as the
   group writer runs them): ``BEGIN IMMEDIATE``, the ledger row, the task row, the
   acknowledgement of three earlier purges in every third write (as ``ACK_FOLD_AGE`` folds them),
   one acknowledgement in every write (as before it), the commit with its sync.
1b. The ledger writer's Python, which holds the GIL and so competes with the event loop: the
   product's write path (as in 1) less the same statements sent to the ``sqlite3`` connection with
   their values bound beforehand (SQLite's own work, during which the driver releases the GIL);
   both kinds of write alternate on one database.
2. An HTTP request on the event loop (uvloop): aiohttp with one route whose handler reads the body
   and answers prebuilt bytes, against a bare ``asyncio.Protocol`` on httptools that answers the
   same bytes: what the server costs before any of the purge's own code.
3. The ``purge accepted`` log line as ``edgecache serve`` configures logging (text and JSON
   formats, to ``/dev/null``): the benchmark nodes run without it.

``--instructions [--before SRC]`` instead counts instructions (callgrind, ``bench/_callgrind.py``) of
a purge through the product's ``PurgeService.submit`` (one unknown tag, the Cloudflare dialect's
rate limit, the zone's quotas, the reclaimer's acknowledgement of the purge before the next):
``--n`` purges less none, each in a process of its own, ``--gap`` apart, by thread: the event
loop's (the service's part of the purge: its record, the hand-over, the wake-up on the commit)
and the ledger writer's (the ``write`` operation, its statements, the commit, the group writer's
Python); with ``--before``, rounds alternate with another tree's ``src``.

``--counts [--before SRC] [--log] [--no-strace]`` instead counts what a paced purge costs the node
beyond its instructions, by thread: a ``Node`` in a child process as ``edgecache serve`` runs one
(uvloop, jemalloc when installed; ``--log``: its INFO log line too, to ``/dev/null``), ``--n``
Cloudflare purges of one unknown tag sent ``--gap`` apart on one keep-alive connection by this
process, less an idle window of the same length: user and system CPU (the kernel's ticks, 10 ms
each: trust them over a few hundred purges), run time (``schedstat``, exact), minor and major
faults, voluntary and involuntary context switches (``/proc/<pid>/task/<tid>/``), and, in a second
stream with ``strace -ff`` attached, the syscalls by name (``bench/_proc_counts.py``); with
``--perf``, in a third stream, where each thread's CPU samples land (``perf record -e cpu-clock``, a
software event: user code, or the kernel's context switches and wake-ups, file writes and their
sync down to the virtio notification, the rest). Counts, not timings: the machine's load does not
move them (the involuntary switches excepted; the perf shares are samples of time).

CPU time is the figure to trust on a shared machine; it still moves with what else runs (the cold
figures most): compare rows within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httptools
import uvloop
from aiohttp import web
from sqlalchemy import Engine

from edgecache import logs
from edgecache.config import Logging
from edgecache.control.ratelimit import RateLimiter
from edgecache.db import ledger
from edgecache.db import tasks as tasks_db
from edgecache.db.engine import begin_on_driver, end_on_driver, for_writes, open_database, sqlite_url
from edgecache.db.identity import IdentityStore
from edgecache.db.ledger import NewPurge, append_in
from edgecache.db.tasks import NewTask, finish_purges_in

ZONE = "b" * 32
ANSWER = json.dumps({"success": True, "errors": [], "messages": [], "result": {"id": "0" * 32}}).encode()
PURGE_PATH = f"/client/v4/zones/{ZONE}/purge_cache"


def paced(step: Callable[[int], None], n: int, gap: float) -> float:
    """ms of thread CPU per run of ``step``, runs ``gap`` seconds apart."""
    used = 0.0
    for i in range(n):
        t0 = time.thread_time()
        step(i)
        used += time.thread_time() - t0
        time.sleep(gap)
    return used / n * 1000


def hot(step: Callable[[int], None], n: int) -> float:
    t0 = time.thread_time()
    for i in range(n):
        step(i)
    return (time.thread_time() - t0) / n * 1000


# -- 1. the ledger writer ------------------------------------------------------------------------


def _ledger_db() -> tuple[Path, Engine]:
    """A fresh database with the product's schema and one zone."""
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-steps-"))
    engine = open_database(sqlite_url(tmp))
    ids = IdentityStore(engine)
    now = datetime.now(UTC)
    ids.upsert_account("a" * 32, "bench", "free", now)
    ids.upsert_zone(ZONE, "a" * 32, "z.example", "free", now)
    return tmp, engine


def ledger_steps(n: int, gap: float) -> list[tuple[str, float, float]]:
    tmp, engine = _ledger_db()
    conn = for_writes(engine.connect())
    seqs: list[int] = []

    def write(i: int, acks: str, clock: dict[str, float]) -> None:
        t = time.thread_time
        t0 = t()
        begin_on_driver(conn)
        t1 = t()
        row = _purge_row(i)
        now = row.created_at
        seq = append_in(conn, row)
        t2 = t()
        if acks == "every" and seqs:
            finish_purges_in(conn, [(seqs[-1], {})], now)
        elif acks == "third" and len(seqs) >= 3 and i % 3 == 2:
            finish_purges_in(conn, [(s, {}) for s in seqs[-3:]], now)
        seqs.append(seq)
        t3 = t()
        end_on_driver(conn, commit=True)
        t4 = t()
        for name, dt in (
            ("BEGIN", t1 - t0),
            ("ledger and task rows", t2 - t1),
            ("acknowledgements", t3 - t2),
            ("COMMIT and sync", t4 - t3),
        ):
            clock[name] = clock.get(name, 0.0) + dt

    out: list[tuple[str, float, float]] = []
    for acks, label in (
        ("every", "one acknowledgement in every write"),
        ("third", "three acknowledgements in every third write"),
    ):
        cold: dict[str, float] = {}
        warm: dict[str, float] = {}
        for i in range(n):
            write(i, acks, cold)
            time.sleep(gap)
        for i in range(n, 2 * n):
            write(i, acks, warm)
        for name in cold:
            out.append((f"{name} ({label})", cold[name] / n * 1000, warm[name] / n * 1000))
        out.append(
            (f"**writer total** ({label})", sum(cold.values()) / n * 1000, sum(warm.values()) / n * 1000)
        )
    conn.close()
    engine.dispose()
    shutil.rmtree(tmp)
    return out


def _purge_row(i: int) -> NewPurge:
    return NewPurge(
        ZONE,
        "delete",
        {"tags": [f"t{i}"]},
        "p",
        "cloudflare",
        uuid.uuid4().hex,
        datetime.now(UTC),
        [NewTask(f"t{i}", "purge_cache_tag", None, "delete")],
    )


def gil_steps(n: int, gap: float) -> list[tuple[str, float]]:
    """The writer's Python per write, which holds the GIL, as the product's write path less the same
    statements sent to the driver with their values bound beforehand (the driver releases the GIL
    while SQLite runs). Both kinds of write alternate, paced, on one database."""
    tmp, engine = _ledger_db()
    conn = for_writes(engine.connect())
    raw: Any = conn.connection.driver_connection
    dialect = conn.dialect
    # The statements as the product compiles them (db/prepared.py), bound outside the timed part.
    ledger_insert = ledger._INSERT_ROWID._compiled(dialect)
    task_insert = tasks_db._INSERT_SQLITE._compiled(dialect)
    succeed = tasks_db._SUCCEED_REST._compiled(dialect)
    seqs: list[int] = []
    spent = {"product": 0.0, "driver": 0.0}

    def product(i: int) -> float:
        row = _purge_row(i)
        t0 = time.thread_time()
        begin_on_driver(conn)
        seqs.append(append_in(conn, row))
        if i % 3 == 2:
            finish_purges_in(conn, [(s, {}) for s in seqs[-4:-1]], row.created_at)
        end_on_driver(conn, commit=True)
        return time.thread_time() - t0

    def driver(i: int) -> float:
        row = _purge_row(i)
        ledger_row = ledger_insert.row(ledger.ledger_row(row))
        # The task rows' values but their seq (the fourth), which the ledger row's insert gives.
        task_rows = [list(values) for values in ledger.purge_task_rows(row, None)]
        acks = [succeed.bind({"seq": s, "now": row.created_at}) for s in seqs[-4:-1]] if i % 3 == 2 else []
        t0 = time.thread_time()
        raw.execute("BEGIN IMMEDIATE")
        cur = raw.cursor()
        cur.execute(ledger_insert.sql, ledger_row)
        seq = cur.lastrowid
        for values in task_rows:
            values[3] = seq
        cur.executemany(task_insert.sql, [task_insert.row(values) for values in task_rows])
        for values in acks:
            cur.execute(succeed.sql, values)
        cur.close()
        raw.commit()
        spent_here = time.thread_time() - t0
        seqs.append(seq)
        return spent_here

    for i in range(2 * n):
        kind = "product" if i % 2 == 0 else "driver"
        spent[kind] += (product if kind == "product" else driver)(i)
        time.sleep(gap)
    conn.close()
    engine.dispose()
    shutil.rmtree(tmp)
    product_ms, driver_ms = spent["product"] / n * 1000, spent["driver"] / n * 1000
    return [
        ("product's write path (begin, ledger and task rows, acknowledgements, commit)", product_ms),
        ("the same statements on the driver, values bound beforehand", driver_ms),
        ("**the writer's Python around them (holds the GIL)**", product_ms - driver_ms),
    ]


# -- 2. the HTTP server ---------------------------------------------------------------------------


async def _read_and_answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


class _Bare(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
            ANSWER
        )
        self.transport.write(head + ANSWER)


def _client(port: int, n: int, gap: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"tags": ["x"]})
    headers = {"Authorization": "Bearer " + "t" * 40, "Content-Type": "application/json"}
    for _ in range(n):
        conn.request("POST", PURGE_PATH, body=body, headers=headers)
        conn.getresponse().read()
        time.sleep(gap)
    conn.close()


async def _server_cpu(kind: str, n: int, gap: float) -> float:
    loop = asyncio.get_running_loop()
    runner: web.AppRunner | None = None
    if kind == "aiohttp":
        app = web.Application()
        app.router.add_post("/client/v4/zones/{zone_id}/purge_cache", _read_and_answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])
        server = None
    else:
        server = await loop.create_server(_Bare, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])

    async def run(count: int) -> float:
        th = threading.Thread(target=_client, args=(port, count, gap))
        c0 = time.thread_time()
        w0 = time.monotonic()
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.005)
        busy = time.thread_time() - c0
        c1 = time.thread_time()
        await asyncio.sleep(time.monotonic() - w0)  # the same time idle: the loop's own polling
        return (busy - (time.thread_time() - c1)) / count * 1000

    await run(20)
    cpu = await run(n)
    if runner is not None:
        await runner.cleanup()
    if server is not None:
        server.close()
    return cpu


def server_steps(n: int, gap: float) -> list[tuple[str, float]]:
    out = []
    for kind, label in (
        ("aiohttp", "aiohttp: read the body, answer prebuilt bytes"),
        ("bare", "bare httptools protocol, same answer"),
    ):
        cpu = uvloop.run(_server_cpu(kind, n, gap))
        out.append((label, cpu))
    return out


# -- 3. the log line ------------------------------------------------------------------------------


def log_steps(n: int, gap: float) -> list[tuple[str, float, float]]:
    out = []
    saved = sys.stderr
    try:
        with open("/dev/null", "w") as null:
            sys.stderr = null
            for fmt in ("text", "json"):
                logs.configure(Logging(format=fmt))
                log = logging.getLogger("edgecache.control.purges")

                def line(i: int, log: logging.Logger = log) -> None:
                    record = {"tags": [f"t{i}"]}
                    log.info(
                        "purge accepted: %s %s on zone %s by %s via %s",
                        "delete",
                        record,
                        ZONE,
                        "token:0123",
                        "cloudflare",
                        extra={
                            "event": "purge_accepted",
                            "job_id": "0" * 32,
                            "seq": i,
                            "zone_id": ZONE,
                            "mode": "delete",
                            "selectors": record,
                            "principal": "token:0123",
                            "dialect": "cloudflare",
                        },
                    )

                out.append((f"`purge accepted` log line, {fmt}", paced(line, n, gap), hot(line, n * 10)))
    finally:
        sys.stderr = saved
        logging.getLogger().handlers.clear()
    return out


# -- 4. instructions of a purge through the service ----------------------------------------------


def _service_db(tmp: Path) -> None:
    """A database with the product's schema, the zone and its account in ``tmp`` (made before the
    counted child starts: the migrations are most of a child's instructions otherwise)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _purge_node import ZONE_ID, build_config

    config = build_config(tmp, "http://127.0.0.1:1", 1 << 20)
    engine = open_database(sqlite_url(tmp))
    ids = IdentityStore(engine)
    account = config.accounts[0]
    now = datetime.now(UTC)
    ids.upsert_account(account.id, "bench", account.plan, now)
    ids.upsert_zone(ZONE_ID, account.id, config.zones[0].name, "enterprise", now)
    engine.dispose()


async def _service_purges(tmp: Path, n: int, gap: float) -> None:
    """``n`` purges through ``PurgeService.submit`` as the Cloudflare dialect makes them, each
    acknowledged (as the reclaimer acknowledges an applied purge) before the next, on the
    database :func:`_service_db` made in ``tmp``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _purge_node import ZONE_ID, build_config

    from edgecache.control.purges import PurgeRequest, PurgeService
    from edgecache.control.quotas import QuotaService
    from edgecache.control.ratelimit import limits_by_account
    from edgecache.db.engine import connect
    from edgecache.db.ledger import LedgerStore
    from edgecache.db.tasks import TaskStore
    from edgecache.edge.zones import ZoneTable
    from edgecache.purge.selectors import Mode

    config = build_config(tmp, "http://127.0.0.1:1", 1 << 20)
    engine = connect(sqlite_url(tmp))
    account = config.accounts[0]
    zone = ZoneTable(config.zones).by_id[ZONE_ID]
    limits = limits_by_account({account.id: account.plan})
    tasks = TaskStore(engine)
    # callgrind numbers threads as they start: the ledger writer must be the second (see _count).
    assert threading.active_count() == 1, threading.enumerate()
    service = PurgeService(
        ledger_store=LedgerStore(engine),
        task_store=tasks,
        quotas=QuotaService(tasks.count_since),
        limiter=RateLimiter(limits),
        limits_for=limits,
        apply=lambda purge: None,
    )
    try:
        for i in range(n + 1):
            req = PurgeRequest(tags=(f"nobody-{i}",))
            items = service.items(zone, req)
            accepted = await service.submit(
                zone, Mode.DELETE, items, req, principal="token:b", dialect="cloudflare", rate_limited=True
            )
            if i == 0:
                continue  # the first purge warms what every later one finds ready (counted with none)
            service.reclaimed(accepted.purge, {})
            await asyncio.sleep(gap)
    finally:
        service.close()
        engine.dispose()


def _count(src: Path, n: int, gap: float) -> tuple[int, int]:
    """Instructions of a child that runs ``n`` purges through the service: (event loop, ledger
    writer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _callgrind import thread_instructions

    tmp = Path(tempfile.mkdtemp(prefix="edgecache-steps-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, __file__, "--prepare", str(tmp)], env=env, check=True)
        counts = thread_instructions(__file__, src, "--db", str(tmp), "--n", str(n), "--gap", str(gap))
    finally:
        shutil.rmtree(tmp)
    return counts[1], counts[2]


def service_instructions(before: Path | None, n: int, gap: float, rounds: int) -> None:
    """Print instructions per purge by thread, this tree against ``before`` in alternate rounds."""
    here = Path(__file__).resolve().parent.parent / "src"
    sides = [("this tree", here)] + ([("before", before)] if before else [])
    loop: dict[str, list[float]] = {name: [] for name, _ in sides}
    writer: dict[str, list[float]] = {name: [] for name, _ in sides}
    for r in range(rounds):
        for name, src in sides if r % 2 == 0 else sides[::-1]:
            none, some = _count(src, 0, gap), _count(src, n, gap)
            loop[name].append((some[0] - none[0]) / n)
            writer[name].append((some[1] - none[1]) / n)
    print(f"### Instructions per purge, `PurgeService.submit`, {n} less none, {gap * 1000:.0f} ms apart")
    print()
    print("| code | event loop: rounds | median | ledger writer: rounds | median |")
    print("|---|---|---:|---|---:|")
    for name, src in sides:
        print(
            f"| {name} (`{src}`) | {', '.join(f'{x:,.0f}' for x in loop[name])} | "
            f"{statistics.median(loop[name]):,.0f} | {', '.join(f'{x:,.0f}' for x in writer[name])} | "
            f"{statistics.median(writer[name]):,.0f} |"
        )


# -- 5. software counts of a paced purge, by thread --------------------------------------------------


def _purge_request(port: int, token: str) -> Callable[[int], None]:
    """A keep-alive client for ``POST …/purge_cache`` of one unknown tag, as the stream benchmark sends."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _purge_node import ZONE_ID

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    path = f"/client/v4/zones/{ZONE_ID}/purge_cache"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(i: int) -> None:
        conn.request("POST", path, body=json.dumps({"tags": [f"nobody-{i}"]}), headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"purge answered {resp.status}: {body[:200]!r}")

    return send


def _paced(send: Callable[[int], None], first: int, n: int, gap: float) -> float:
    """``n`` purges ``gap`` apart (on a fixed schedule, as the stream benchmark sends them); the wall
    seconds they took, with a settle time for the last one's acknowledgement."""
    t0 = time.monotonic()
    for i in range(n):
        send(first + i)
        time.sleep(max(0.0, t0 + (i + 1) * gap - time.monotonic()))
    time.sleep(SETTLE)
    return time.monotonic() - t0


SETTLE = 0.3
"""Seconds after a stream's last purge for its reclaim and acknowledgement (``ACK_DELAY`` 0.1 s)."""


class _NodeChild:
    """``purge_steps.py --node-child`` with ``src`` first on the path: a ``Node`` as ``edgecache
    serve`` runs one (uvloop, jemalloc when it is installed), answering ``threads`` on its stdin."""

    def __init__(self, src: Path, log: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        argv = [sys.executable, __file__, "--node-child"] + (["--log"] if log else [])
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.pid, self.port, self.token = int(ready["pid"]), int(ready["port"]), str(ready["token"])

    def threads(self) -> dict[int, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("threads\n")
        self.proc.stdin.flush()
        return {int(k): v for k, v in json.loads(self.proc.stdout.readline()).items()}

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(60)


def _count_round(src: Path, n: int, gap: float, log: bool, strace: bool, perf: bool) -> dict[str, Any]:
    """One node: per paced purge, each thread's counters and syscalls, net of an idle window."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _proc_counts as pc

    child = _NodeChild(src, log)
    try:
        send = _purge_request(child.port, child.token)
        _paced(send, 0, 50, gap)  # warm-up
        s0 = pc.snapshot(child.pid)
        time.sleep(n * gap + SETTLE)
        s1 = pc.snapshot(child.pid)
        wall = _paced(send, 1000, n, gap)
        s2 = pc.snapshot(child.pid)
        names = child.threads()
        idle, busy = pc.delta(s0, s1, names), pc.delta(s1, s2, names)
        scale = wall / (n * gap + SETTLE)
        per: dict[str, dict[str, float]] = {}
        for label, counts in busy.items():
            base = idle.get(label, dict.fromkeys(counts, 0.0))
            per[label] = {k: (v - base.get(k, 0.0) * scale) / n for k, v in counts.items()}
        calls: dict[str, dict[str, float]] = {}
        if strace:
            tracer = pc.Strace(child.pid)
            time.sleep(n * gap + SETTLE)
            quiet = pc.by_label(tracer.stop(), names)
            tracer = pc.Strace(child.pid)
            wall = _paced(send, 100_000, n, gap)
            traced = pc.by_label(tracer.stop(), child.threads())
            scale = wall / (n * gap + SETTLE)
            for label, counts in traced.items():
                base = quiet.get(label, Counter())
                calls[label] = {k: (v - base.get(k, 0) * scale) / n for k, v in counts.items()}
        kinds: dict[str, dict[str, float]] = {}
        kernel: dict[str, Counter[str]] = {}
        if perf:
            recorder = pc.PerfRecord(child.pid)
            _paced(send, 200_000, n, gap)
            samples, symbols = recorder.stop()
            names = child.threads()
            for tid, counts in samples.items():
                label = names.get(tid, str(tid))
                acc = kinds.setdefault(label, {})
                for kind, k in counts.items():
                    acc[kind] = acc.get(kind, 0.0) + k
                kernel.setdefault(label, Counter()).update(symbols.get(tid, Counter()))
        return {"counts": per, "calls": calls, "kinds": kinds, "kernel": kernel}
    finally:
        child.stop()


def _median_table(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    labels = {label for r in rounds for label in r}
    return {
        label: {
            k: statistics.median(r.get(label, {}).get(k, 0.0) for r in rounds)
            for k in {k for r in rounds for k in r.get(label, {})}
        }
        for label in labels
    }


def counts(before: Path | None, n: int, gap: float, rounds: int, log: bool, strace: bool, perf: bool) -> None:
    """Print per paced purge and per thread: CPU split user/system, faults, context switches and
    syscalls by name, this tree against ``before`` in alternate rounds (medians of the rounds)."""
    here = Path(__file__).resolve().parent.parent / "src"
    sides = [("this tree", here)] + ([("before", before)] if before else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    for r in range(rounds):
        for name, src in sides if r % 2 == 0 else sides[::-1]:
            results[name].append(_count_round(src, n, gap, log, strace, perf))
    print(
        f"### Software counts per paced purge, {n} purges {gap * 1000:.0f} ms apart less an idle window,"
        f" median of {rounds} rounds{' (log line on)' if log else ''}\n"
    )
    print(
        "| code | thread | user ms | system ms | run ms (schedstat) | minor faults | major faults "
        "| voluntary cs | involuntary cs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _src in sides:
        table = _median_table([res["counts"] for res in results[name]])
        for label in sorted(table, key=lambda lb: (lb == "process", -table[lb].get("run_ms", 0.0))):
            c = table[label]
            if label != "process" and abs(c.get("run_ms", 0.0)) < 0.005 and abs(c.get("minflt", 0.0)) < 0.5:
                continue
            print(
                f"| {name} | {label} | {c.get('utime_ms', 0):.3f} | {c.get('stime_ms', 0):.3f} | "
                f"{c.get('run_ms', 0):.3f} | {c.get('minflt', 0):.1f} | {c.get('majflt', 0):.2f} | "
                f"{c.get('vcsw', 0):.2f} | {c.get('ivcsw', 0):.2f} |"
            )
    if perf:
        _print_perf(sides, results)
    if not strace:
        return
    print("\n### Syscalls per paced purge by thread (strace -ff, net of an idle window; median of rounds)\n")
    print("| code | thread | total | by name |")
    print("|---|---|---:|---|")
    for name, _src in sides:
        table = _median_table([res["calls"] for res in results[name]])
        for label in sorted(table, key=lambda lb: -sum(table[lb].values())):
            c = {k: v for k, v in table[label].items() if abs(v) >= 0.05}
            if not c:
                continue
            named = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))
            print(f"| {name} | {label} | {sum(c.values()):.2f} | {named} |")


def _print_perf(sides: list[tuple[str, Path]], results: dict[str, list[dict[str, Any]]]) -> None:
    """Where each thread's CPU samples land (``perf record -e cpu-clock`` over a third stream, the
    idle work of its window included), summed over the rounds."""
    kinds = ("user", "kernel: switch", "kernel: block I/O", "kernel: other")
    print("\n### Where each thread's CPU samples land (perf record -e cpu-clock, a stream's window)\n")
    print("| code | thread | samples | " + " | ".join(kinds) + " | top kernel symbols |")
    print("|---|---|---:|" + "---:|" * len(kinds) + "---|")
    for name, _src in sides:
        total: dict[str, Counter[str]] = {}
        symbols: dict[str, Counter[str]] = {}
        for res in results[name]:
            for label, counts in res["kinds"].items():
                total.setdefault(label, Counter()).update({k: int(v) for k, v in counts.items()})
            for label, syms in res["kernel"].items():
                symbols.setdefault(label, Counter()).update(syms)
        for label in sorted(total, key=lambda lb: -sum(total[lb].values())):
            all_ = sum(total[label].values())
            if all_ < 20:
                continue
            shares = " | ".join(f"{100 * total[label][k] / all_:.0f}%" for k in kinds)
            top = ", ".join(
                f"{sym} {100 * c / all_:.1f}%" for sym, c in symbols.get(label, Counter()).most_common(4)
            )
            print(f"| {name} | {label} | {all_} | {shares} | {top} |")


async def _node_child(log: bool) -> None:
    """The node of ``--counts``: started, its token printed, then ``threads`` and ``stop`` on stdin."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _purge_node import build_config

    from edgecache.app import Node
    from edgecache.control.credentials import Permission

    with tempfile.TemporaryDirectory(prefix="edgecache-counts-") as tmp:
        config = build_config(Path(tmp), "http://127.0.0.1:1", 64 << 20)
        if log:
            logs.configure(config.logging)
        node = Node(config)
        await node.start()
        _, token = await asyncio.to_thread(
            node.credentials.create_token, config.accounts[0].id, "bench", [Permission.CACHE_PURGE], None
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def commands() -> None:
            # A thread blocked in ``read`` makes no syscall while the counts are read.
            for line in sys.stdin:
                if line.strip() == "threads":
                    names = {t.native_id: t.name for t in threading.enumerate()}
                    print(json.dumps(names), flush=True)
                else:
                    break
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=commands, name="bench-commands", daemon=True).start()
        print(json.dumps({"pid": os.getpid(), "port": node.control_port, "token": token}), flush=True)
        await stop.wait()
        await node.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument(
        "--instructions",
        action="store_true",
        help="instead: instructions per purge through the service by callgrind (loop, ledger writer)",
    )
    p.add_argument("--before", type=Path, help="with --instructions: another tree's src, alternated")
    p.add_argument("--rounds", type=int, default=3, help="with --instructions: rounds per side")
    p.add_argument(
        "--counts",
        action="store_true",
        help="instead: per paced purge and thread, CPU user/system, faults, context switches, syscalls",
    )
    p.add_argument("--log", action="store_true", help="with --counts: log at INFO as `edgecache serve` does")
    p.add_argument("--no-strace", action="store_true", help="with --counts: no syscall counts")
    p.add_argument(
        "--perf",
        action="store_true",
        help="with --counts: where each thread's CPU samples land (perf record)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--node-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prepare:
        _service_db(args.prepare)
        return
    if args.child:
        uvloop.run(_service_purges(args.db, args.n, args.gap))
        return
    if args.node_child:
        from edgecache import allocator

        allocator.ensure("auto", None)  # as `edgecache serve` does: jemalloc when installed
        uvloop.run(_node_child(args.log))
        return
    if args.counts:
        counts(args.before, args.n, args.gap, args.rounds, args.log, not args.no_strace, args.perf)
        return
    if args.instructions:
        service_instructions(args.before, args.n, args.gap, args.rounds)
        return
    print(
        f"### 1. Ledger writer, {args.n} writes {args.gap * 1000:.0f} ms apart, then {args.n} back to back\n"
    )
    print("| step | paced ms | back to back ms |\n|---|---:|---:|")
    for name, cold, warm in ledger_steps(args.n, args.gap):
        print(f"| {name} | {cold:.3f} | {warm:.3f} |")
    print(
        f"\n### 1b. The ledger writer's Python per write, {args.n} of each kind alternating"
        f" {args.gap * 1000:.0f} ms apart\n"
    )
    print("| step | paced ms |\n|---|---:|")
    for name, cpu in gil_steps(args.n, args.gap):
        print(f"| {name} | {cpu:.3f} |")
    print(
        f"\n### 2. Event loop CPU per request, {args.n} requests {args.gap * 1000:.0f} ms apart"
        " (net of the idle loop)\n"
    )
    print("| server | ms per request |\n|---|---:|")
    for name, cpu in server_steps(args.n, args.gap):
        print(f"| {name} | {cpu:.3f} |")
    print("\n### 3. The log line per purge, as `edgecache serve` logs (INFO)\n")
    print("| line | paced ms | back to back ms |\n|---|---:|---:|")
    for name, cold, warm in log_steps(args.n, args.gap):
        print(f"| {name} | {cold:.3f} | {warm:.3f} |")


if __name__ == "__main__":
    main()
