"""EdgeOne task API at scale: DescribePurgeTasks over 1,000,000 stored tasks, CreatePurgeTask throughput.

Usage: ``.venv/bin/python bench/tasks_api.py [--quick] [--tasks N] [--out bench/out/tasks.md]``
(default ~6-8 minutes on 2 cores; ``--quick``: 100,000 tasks, shorter runs, ~2 minutes).

Method:
1. Fill. A fresh data directory (temp dir) gets the node's schema (``open_database``), the node's account
   and zone (``CredentialService.ensure_*``, as ``Node`` seeds them) and N purge tasks (default 10^6) over
   7 days, synthesised by ``_tasks_fill`` (~1,000 hostnames, URL/tag/prefix/host/all targets, mostly
   success, some failed/timeout, the last minute processing) and written with SQLAlchemy Core
   ``executemany`` in 4 write transactions (WAL, ``synchronous=FULL``). Reported: wall time, DB size.
   The node's housekeeping statements (``TaskStore.expire``/``forget``, run every 5 s, and the quota's
   ``count_since``) are timed on that database with their query plans.
2. Node. ``_tasks_node.py`` starts a real node (``edgecache.app.Node`` on uvloop) on that directory in a
   child process, 127.0.0.1 port 0, and prints its ports, a SecretId/SecretKey and the zone ids. The
   launcher lifts the EdgeOne per-account action limit (20 requests/s) so the server is measured, not
   the limiter; zone quotas are raised to 10^9 a day (``_tasks_common``).
3. DescribePurgeTasks, (a) job-id only, (b) 1-day window + statuses=[failed], (c) 1-day window + fuzzy
   target substring, (d) 7-day window, no filter, Limit 100, (e) 1-day window + type (rotating). Windows,
   job ids and substrings vary per call (seeded). For each call the same parameters go through the raw
   signed client and the official SDK, interleaved, each on its own keep-alive connection; ``--calls``
   calls each (default 100, a cell stops after 60 s). "DB" is ``TaskStore.query`` in this process on
   the same file (what the server spends in SQLite + SQLAlchemy), with the plans (EXPLAIN QUERY PLAN).
4. CreatePurgeTask: T threads, each its own SDK client, submit 1-URL (and 100-URL) ``purge_url`` tasks
   back to back for ``--create-seconds``; req/s, tasks/s, latency, errors, CPU of node and clients.
   For scale, the latency of one durable commit on this disk is measured (serial write transactions).
5. Fixes, prototyped on the bench database while the node runs (src/ untouched): the proposed indexes
   are created (timed), then the describes (SDK), ``TaskStore.query`` and housekeeping are measured
   again; two query changes that an index cannot give (one-scan fuzzy listing, an hourly count rollup)
   are measured in this process; and creates (1 and 100 URLs, 4 threads) alternate A/B/A/B between
   the node as it is and the launcher's prototypes (batched acknowledgements, per-(zone, kind)
   retention delete; SIGUSR1/2);
   then the indexes are dropped and the per-purge runs repeated, to show the indexes' write cost.
Percentiles are nearest-rank over the calls made. The machine is shared: load averages are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import random
import select as io_select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _tasks_client import ApiError, RawClient, no_proxy, sdk_client
from _tasks_common import ACCOUNT_ID, ZONE_ID, ZONE_NAME, hostnames
from _tasks_fill import FillResult, fill
from sqlalchemy import and_, delete, event, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.teo.v20220901 import models

from edgecache.control.credentials import CredentialService
from edgecache.db.engine import open_database, read_transaction, sqlite_url, write_transaction
from edgecache.db.schema import tasks
from edgecache.db.tasks import NewTask, TaskQuery, TaskStore, insert_task_rows, task_rows

BENCH = Path(__file__).resolve().parent
CELL_SECONDS = 60.0
TYPES = ("purge_prefix", "purge_cache_tag", "purge_host", "purge_url", "purge_all")
QUERIES = {
    "a": "job-id only",
    "b": "1 day, statuses=[failed]",
    "c": "1 day, target fuzzy substring",
    "d": "7 days, no filter, Limit 100",
    "e": "1 day, type (rotating)",
}
# The schema now has these (src/edgecache/db/schema.py, under other names; ix_tasks_processing_seq
# of decision 0022 replaced the last one); "before" is therefore the shipped schema, and adding them
# again shows what duplicates cost.
FIX_INDEXES = (
    # (a): job id first, then the columns every listing pins, then the order: no plan can prefer the
    # (zone_id, kind, created_at) index any more, with or without a time range.
    "CREATE INDEX IF NOT EXISTS ix_tasks_job_id_zone_id_kind_created_at"
    " ON tasks (job_id, zone_id, kind, created_at)",
    # (b): statuses filter; covering for the count, ordered for the page.
    "CREATE INDEX IF NOT EXISTS ix_tasks_zone_id_kind_status_created_at"
    " ON tasks (zone_id, kind, status, created_at)",
    # (e) and QuotaService's count_since.
    "CREATE INDEX IF NOT EXISTS ix_tasks_zone_id_kind_type_created_at"
    " ON tasks (zone_id, kind, type, created_at)",
    # TaskStore.expire (every 5 s) and the acknowledgements: only the few processing rows are indexed.
    "CREATE INDEX IF NOT EXISTS ix_tasks_processing_seq_dup ON tasks (seq) WHERE status = 'processing'",
)


# -- small utilities ------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} / {b:.2f} / {c:.2f}"


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, all threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# -- the node ------------------------------------------------------------------------------------


class NodeProcess:
    """The node launcher as a child process (stopped by its pid, never by name)."""

    def __init__(self, data_dir: Path, hosts: int, log: Path) -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH / "_tasks_node.py"),
                    *("--data-dir", str(data_dir), "--hosts", str(hosts), "--action-rate", "1000000"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=str(BENCH.parent),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        assert self.proc.stdout is not None
        ready, _, _ = io_select.select([self.proc.stdout], [], [], 90.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the node did not start; see {log}: {self.log_tail()}")
        self.info: dict[str, Any] = json.loads(line)

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- fill and housekeeping -------------------------------------------------------------------------


def fill_database(data_dir: Path, rows: int, hosts: int) -> tuple[Engine, FillResult, int, int]:
    engine = open_database(sqlite_url(data_dir))
    creds = CredentialService(engine)
    creds.ensure_account(ACCOUNT_ID, "default", "enterprise")
    creds.ensure_zone(ZONE_ID, ACCOUNT_ID, ZONE_NAME, "enterprise")
    result = fill(engine, zone_id=ZONE_ID, rows=rows, hosts=hostnames(hosts), now=datetime.now(UTC))
    wal = data_dir / "edgecache.db-wal"
    wal_peak = wal.stat().st_size if wal.exists() else 0
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return engine, result, (data_dir / "edgecache.db").stat().st_size, wal_peak


@dataclass
class Housekeeping:
    name: str
    plan: str
    times_ms: list[float]


def explain(engine: Engine, sql: str, params: Any = ()) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
    return "; ".join(str(r[3]) for r in rows)


def housekeeping(engine: Engine, repeat: int = 3) -> list[Housekeeping]:
    """Time the node's periodic task statements on the bench database (no node running meanwhile)."""
    store = TaskStore(engine)
    now = datetime.now(UTC)
    fmt = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    out = [
        Housekeeping(
            "expire (every 5 s, write lock)",
            explain(engine, "SELECT id FROM tasks WHERE status = 'processing' AND created_at < ?", (fmt,)),
            [],
        ),
        Housekeeping(
            "forget (every 5 s, write lock)",
            explain(engine, "SELECT id FROM tasks WHERE created_at < ?", (fmt,)),
            [],
        ),
        Housekeeping(
            "count_since (quota, once a day per type)",
            explain(
                engine,
                "SELECT count(*) FROM tasks WHERE zone_id = ? AND kind = 'purge' AND created_at >= ? "
                "AND type = 'purge_url'",
                (ZONE_ID, fmt),
            ),
            [],
        ),
    ]
    out.append(
        Housekeeping(
            "forget per (zone, kind) [proposed]",
            explain(
                engine,
                "SELECT id FROM tasks WHERE zone_id = ? AND kind = 'purge' AND created_at < ?",
                (ZONE_ID, fmt),
            ),
            [],
        )
    )
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(repeat):
        t = time.perf_counter()
        # older_than = the node's (now - 60 s); processing rows younger than that stay processing.
        store.expire(datetime.now(UTC) - timedelta(seconds=600), datetime.now(UTC))
        out[0].times_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        store.forget(now - timedelta(days=30), [ZONE_ID])
        out[1].times_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        store.count_since(ZONE_ID, "purge", "purge_url", day)
        out[2].times_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        with write_transaction(engine) as conn:
            for kind in ("purge", "prefetch"):
                conn.execute(
                    delete(tasks).where(
                        tasks.c.zone_id == ZONE_ID,
                        tasks.c.kind == kind,
                        tasks.c.created_at < now - timedelta(days=30),
                    )
                )
        out[3].times_ms.append((time.perf_counter() - t) * 1000)
    return out


def commit_latency(directory: Path, n: int) -> list[float]:
    """Latency of one durable write transaction (one task row) on this disk, as the node commits."""
    engine = open_database(sqlite_url(directory))
    creds = CredentialService(engine)
    creds.ensure_account(ACCOUNT_ID, "default", "enterprise")
    creds.ensure_zone(ZONE_ID, ACCOUNT_ID, ZONE_NAME, "enterprise")
    out: list[float] = []
    item = [NewTask("https://s0000.shop.example/x", "purge_url", "s0000.shop.example", "invalidate")]
    for i in range(n):
        t = time.perf_counter()
        with write_transaction(engine) as conn:
            insert_task_rows(
                conn,
                task_rows(
                    job_id=f"{i:032x}",
                    kind="purge",
                    zone_id=ZONE_ID,
                    seq=None,
                    items=item,
                    principal="bench",
                    dialect="edgeone",
                    created_at=datetime.now(UTC),
                ),
            )
        out.append((time.perf_counter() - t) * 1000)
    engine.dispose()
    return out


# -- DescribePurgeTasks ----------------------------------------------------------------------------


def describe_params(fr: FillResult, eo_zone: str, n: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)

    def window() -> tuple[str, str]:
        start = fr.start + timedelta(seconds=rng.uniform(0, 6 * 86400))
        return iso(start), iso(start + timedelta(days=1))

    out: dict[str, list[dict[str, Any]]] = {k: [] for k in QUERIES}
    for i in range(n):
        job = rng.choice(fr.job_ids)
        out["a"].append({"ZoneId": eo_zone, "Filters": [{"Name": "job-id", "Values": [job]}]})
        s, e = window()
        out["b"].append(
            {
                "ZoneId": eo_zone,
                "StartTime": s,
                "EndTime": e,
                "Filters": [{"Name": "statuses", "Values": ["failed"]}],
            }
        )
        s, e = window()
        frag = rng.choice(fr.fragments)
        out["c"].append(
            {
                "ZoneId": eo_zone,
                "StartTime": s,
                "EndTime": e,
                "Filters": [{"Name": "target", "Values": [frag], "Fuzzy": True}],
            }
        )
        out["d"].append(
            {
                "ZoneId": eo_zone,
                "StartTime": iso(fr.start - timedelta(minutes=1)),
                "EndTime": iso(fr.end + timedelta(hours=1)),
                "Limit": 100,
            }
        )
        s, e = window()
        out["e"].append(
            {
                "ZoneId": eo_zone,
                "StartTime": s,
                "EndTime": e,
                "Filters": [{"Name": "type", "Values": [TYPES[i % 5]]}],
            }
        )
    return out


def task_query(p: dict[str, Any]) -> TaskQuery:
    """The ``TaskQuery`` the server builds from these parameters (``actions._describe``)."""
    f = {x["Name"]: x for x in p.get("Filters", [])}

    def t(name: str) -> datetime | None:
        return datetime.fromisoformat(p[name].replace("Z", "+00:00")) if name in p else None

    return TaskQuery(
        zone_id=ZONE_ID,
        kind="purge",
        start=t("StartTime"),
        end=t("EndTime"),
        job_id=f["job-id"]["Values"][0] if "job-id" in f else None,
        target=f["target"]["Values"][0] if "target" in f else None,
        target_fuzzy=bool(f.get("target", {}).get("Fuzzy", False)),
        statuses=tuple(f["statuses"]["Values"]) if "statuses" in f else (),
        types=tuple(f["type"]["Values"]) if "type" in f else (),
        limit=int(p.get("Limit", 20)),
    )


@dataclass
class Cell:
    """Latencies of one (query, client) pair."""

    lat: list[float] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        return f"{ms(pct(self.lat, 50))} / {ms(pct(self.lat, 99))}"


def sdk_describe(client: Any, params: dict[str, Any]) -> int:
    req = models.DescribePurgeTasksRequest()
    req.from_json_string(json.dumps(params))
    return int(client.DescribePurgeTasks(req).TotalCount)


def raw_describe(client: RawClient, params: dict[str, Any]) -> int:
    return int(client.call("DescribePurgeTasks", params)["TotalCount"])


def timed(cell: Cell, fn: Callable[[dict[str, Any]], int], params: dict[str, Any]) -> None:
    t = time.perf_counter()
    try:
        total = fn(params)
    except (ApiError, TencentCloudSDKException, OSError) as exc:
        cell.errors[getattr(exc, "code", None) or exc.__class__.__name__] += 1
        return
    cell.lat.append((time.perf_counter() - t) * 1000)
    cell.totals.append(total)


def run_describes(
    info: dict[str, Any], params: dict[str, list[dict[str, Any]]], clients: tuple[str, ...], warmup: int = 3
) -> dict[str, dict[str, Cell]]:
    """Each query: ``clients`` ("raw", "sdk") interleaved call by call, one connection each."""
    raw = RawClient(info["control_port"], info["secret_id"], info["secret_key"])
    sdk = sdk_client(info["control_port"], info["secret_id"], info["secret_key"])
    calls: dict[str, Callable[[dict[str, Any]], int]] = {
        "raw": lambda p: raw_describe(raw, p),
        "sdk": lambda p: sdk_describe(sdk, p),
    }
    out: dict[str, dict[str, Cell]] = {}
    try:
        for q, plist in params.items():
            cells = {c: Cell() for c in clients}
            for p in plist[:warmup]:
                for c in clients:
                    timed(Cell(), calls[c], p)
            deadline = time.monotonic() + CELL_SECONDS * len(clients)
            for p in plist:
                if time.monotonic() > deadline:
                    break
                for c in clients:
                    timed(cells[c], calls[c], p)
            out[q] = cells
            print(
                f"  describe {q}: " + ", ".join(f"{c} {cells[c].summary()} ms" for c in clients), flush=True
            )
    finally:
        raw.close()
    return out


def db_queries(
    engine: Engine, params: dict[str, list[dict[str, Any]]], n: int, plans: dict[str, list[str]] | None
) -> dict[str, Cell]:
    """``TaskStore.query`` in this process on the bench file; optionally capture the plans."""
    store = TaskStore(engine)
    captured: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    out: dict[str, Cell] = {}
    for q, plist in params.items():
        cell = Cell()
        deadline = time.monotonic() + CELL_SECONDS
        for p in plist[:n]:
            if time.monotonic() > deadline:
                break
            tq = task_query(p)
            t = time.perf_counter()
            total, _ = store.query(tq)
            cell.lat.append((time.perf_counter() - t) * 1000)
            cell.totals.append(total)
        out[q] = cell
        if plans is not None:
            event.listen(engine, "before_cursor_execute", capture)
            try:
                captured.clear()
                store.query(task_query(plist[0]))
            finally:
                event.remove(engine, "before_cursor_execute", capture)
            plans[q] = [
                explain(engine, s, prm) for s, prm in captured if s.lstrip().upper().startswith("SELECT")
            ]
    return out


# -- query changes prototyped in process ----------------------------------------------------------


def _conds(q: TaskQuery) -> ColumnElement[bool]:
    """``TaskStore.query``'s WHERE clause (copied)."""
    conds: list[ColumnElement[bool]] = [tasks.c.zone_id == q.zone_id, tasks.c.kind == q.kind]
    if q.start is not None:
        conds.append(tasks.c.created_at >= q.start)
    if q.end is not None:
        conds.append(tasks.c.created_at <= q.end)
    if q.job_id is not None:
        conds.append(tasks.c.job_id == q.job_id)
    if q.target is not None:
        if q.target_fuzzy:
            escaped = q.target.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(tasks.c.target.like(f"%{escaped}%", escape="\\"))
        else:
            conds.append(tasks.c.target == q.target)
    if q.domains:
        conds.append(or_(*(tasks.c.domain == d for d in q.domains)))
    if q.statuses:
        conds.append(tasks.c.status.in_(q.statuses))
    if q.types:
        conds.append(tasks.c.type.in_(q.types))
    return and_(*conds)


def one_scan_query(engine: Engine, q: TaskQuery) -> tuple[int, int]:
    """Fuzzy listing in one index scan: ids in order (count = their number), then the page by id."""
    where = _conds(q)
    with read_transaction(engine) as conn:
        ids = (
            conn.execute(
                select(tasks.c.id).where(where).order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            )
            .scalars()
            .all()
        )
        page = list(ids[q.offset : q.offset + q.limit])
        rows = conn.execute(select(tasks).where(tasks.c.id.in_(page))).all() if page else []
    return len(ids), len(rows)


ROLLUP_DDL = (
    "CREATE TABLE bench_task_hours (zone_id TEXT NOT NULL, kind TEXT NOT NULL, hour TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (zone_id, kind, hour)) WITHOUT ROWID"
)


def build_rollup(engine: Engine) -> float:
    t = time.perf_counter()
    with write_transaction(engine) as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_task_hours")
        conn.exec_driver_sql(ROLLUP_DDL)
        conn.exec_driver_sql(
            "INSERT INTO bench_task_hours SELECT zone_id, kind, substr(created_at, 1, 13), count(*) "
            "FROM tasks GROUP BY 1, 2, 3"
        )
    return time.perf_counter() - t


def exact_count(engine: Engine, q: TaskQuery) -> int:
    """The count ``TaskStore.query`` runs (its first statement)."""
    with read_transaction(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(tasks).where(_conds(q))).scalar_one())


def rollup_count(engine: Engine, q: TaskQuery) -> int:
    """Tasks in [start, end]: whole hours from the rollup, the two partial hours from the index."""
    assert q.start is not None and q.end is not None

    def f(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    lo = q.start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hi = q.end.replace(minute=0, second=0, microsecond=0)
    z = (q.zone_id, q.kind)
    with read_transaction(engine) as conn:
        if lo >= hi:
            return int(conn.execute(select(func.count()).select_from(tasks).where(_conds(q))).scalar_one())
        whole = conn.exec_driver_sql(
            "SELECT coalesce(sum(n), 0) FROM bench_task_hours WHERE zone_id = ? AND kind = ? "
            "AND hour >= ? AND hour < ?",
            (*z, f(lo)[:13], f(hi)[:13]),
        ).scalar_one()
        edges = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM tasks WHERE zone_id = ? AND kind = ? AND created_at >= ? "
            "AND created_at < ?) + (SELECT count(*) FROM tasks WHERE zone_id = ? AND kind = ? "
            "AND created_at >= ? AND created_at <= ?)",
            (*z, f(q.start), f(lo), *z, f(hi), f(q.end)),
        ).scalar_one()
    return int(whole) + int(edges)


def compare(
    queries: list[TaskQuery], now: Callable[[TaskQuery], int], proposed: Callable[[TaskQuery], int]
) -> tuple[list[float], list[float], bool]:
    """Time the current and the proposed form on the same queries, interleaved; do they agree?"""
    a: list[float] = []
    b: list[float] = []
    same = True
    deadline = time.monotonic() + CELL_SECONDS
    for q in queries:
        if time.monotonic() > deadline:
            break
        t = time.perf_counter()
        x = now(q)
        a.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        y = proposed(q)
        b.append((time.perf_counter() - t) * 1000)
        same = same and x == y
    return a, b, same


# -- CreatePurgeTask -------------------------------------------------------------------------------


@dataclass
class CreateRun:
    urls: int
    threads: int
    seconds: float = 0.0
    lat: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    node_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    label: str = ""

    def add(self, other: CreateRun) -> None:
        self.seconds += other.seconds
        self.lat += other.lat
        self.errors.update(other.errors)
        self.node_cpu_s += other.node_cpu_s
        self.client_cpu_s += other.client_cpu_s


def run_creates(
    info: dict[str, Any], urls: int, threads: int, seconds: float, hosts: int, tag: str
) -> CreateRun:
    run = CreateRun(urls, threads)
    names = hostnames(hosts)
    lock = threading.Lock()
    start_gate = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        client = sdk_client(info["control_port"], info["secret_id"], info["secret_key"])
        rng = random.Random(k)
        lat: list[float] = []
        errs: Counter[str] = Counter()
        start_gate.wait(timeout=30)
        i = 0
        while time.monotonic() < deadline[0]:
            req = models.CreatePurgeTaskRequest()
            req.ZoneId = info["eo_zone_id"]
            req.Type = "purge_url"
            req.Targets = [f"https://{rng.choice(names)}/bench/{tag}/{k}/{i}/{j}.html" for j in range(urls)]
            i += 1
            t = time.perf_counter()
            try:
                client.CreatePurgeTask(req)
            except TencentCloudSDKException as exc:
                errs[str(exc.code)] += 1
                continue
            lat.append((time.perf_counter() - t) * 1000)
        with lock:
            run.lat += lat
            run.errors.update(errs)

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for th in pool:
        th.start()
    pid = info["pid"]
    n0, c0, t0 = proc_cpu(pid), self_cpu(), time.monotonic()
    deadline[0] = t0 + seconds
    start_gate.wait(timeout=30)
    for th in pool:
        th.join(timeout=seconds + 60)
    run.seconds = time.monotonic() - t0
    run.node_cpu_s = proc_cpu(pid) - n0
    run.client_cpu_s = self_cpu() - c0
    return run


def ab_creates(
    info: dict[str, Any], urls: int, threads: int, seconds: float, hosts: int
) -> tuple[CreateRun, CreateRun]:
    """The node as it is (A) vs the launcher's prototypes (B) on the same node, A/B/A/B, ``seconds``
    each in all."""
    runs = (CreateRun(urls, threads), CreateRun(urls, threads))
    for rep in range(2):
        for batched in (0, 1):
            os.kill(info["pid"], signal.SIGUSR1 if batched else signal.SIGUSR2)
            time.sleep(0.3)
            runs[batched].add(run_creates(info, urls, threads, seconds / 2, hosts, f"ab{rep}{batched}"))
    os.kill(info["pid"], signal.SIGUSR2)
    return runs


def host_check_us(hosts: int) -> tuple[float, float]:
    """µs per ``host in zone.config.hostnames`` (a tuple, as the node checks each URL target twice)
    for a host drawn uniformly from the zone, and the same with a frozenset."""
    names = hostnames(hosts)
    as_set = frozenset(names)
    probe = [names[i] for i in random.Random(1).choices(range(hosts), k=2000)]
    # Equal strings that are not the same object, as parsed from a request.
    probe = ["".join(p) for p in probe]
    t = time.perf_counter()
    for p in probe:
        _ = p in names
    in_tuple = (time.perf_counter() - t) / len(probe) * 1e6
    t = time.perf_counter()
    for p in probe:
        _ = p in as_set
    return in_tuple, (time.perf_counter() - t) / len(probe) * 1e6


def one_create(info: dict[str, Any]) -> float:
    """Latency of a single 1-URL create on a fresh client (ms)."""
    client = sdk_client(info["control_port"], info["secret_id"], info["secret_key"])
    req = models.CreatePurgeTaskRequest()
    req.ZoneId = info["eo_zone_id"]
    req.Type = "purge_url"
    req.Targets = [f"https://s0000.{ZONE_NAME}/bench/first.html"]
    t = time.perf_counter()
    client.CreatePurgeTask(req)
    return (time.perf_counter() - t) * 1000


# -- report ----------------------------------------------------------------------------------------


def create_rows(runs: list[CreateRun]) -> list[str]:
    out = [
        "| run | URLs/req | threads | req/s | tasks/s | p50 ms | p99 ms | max ms | errors | node CPU"
        " | node CPU ms/req | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        rps = len(r.lat) / r.seconds if r.seconds else 0.0
        errs = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0"
        per_req = r.node_cpu_s / len(r.lat) * 1000 if r.lat else math.nan
        out.append(
            f"| {r.label} | {r.urls} | {r.threads} | {rps:.0f} | {rps * r.urls:.0f} | {ms(pct(r.lat, 50))} | "
            f"{ms(pct(r.lat, 99))} | {ms(max(r.lat) if r.lat else math.nan)} | {errs} | "
            f"{r.node_cpu_s / r.seconds:.0%} | {ms(per_req)} | {r.client_cpu_s / r.seconds:.0%} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 tasks and shorter runs (~2 minutes)")
    ap.add_argument("--tasks", type=int, default=0, help="tasks to fill (default 1,000,000; quick 100,000)")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--create-seconds", type=float, default=0.0, help="default 10 (quick 5)")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "tasks.md")
    ap.add_argument("--max-seconds", type=float, default=1200.0, help="watchdog: give up after this long")
    args = ap.parse_args()
    rows = args.tasks or (100_000 if args.quick else 1_000_000)
    create_s = args.create_seconds or (5.0 if args.quick else 10.0)
    configs = [(1, 1), (1, 4), (100, 4)] if args.quick else [(1, 1), (1, 4), (1, 16), (100, 1), (100, 4)]
    no_proxy()
    load_start = load()
    began = time.monotonic()
    node: NodeProcess | None = None

    def watchdog() -> None:
        print(f"watchdog: over {args.max_seconds:.0f} s, stopping", file=sys.stderr, flush=True)
        if node is not None:
            node.stop()
        os._exit(3)

    timer = threading.Timer(args.max_seconds, watchdog)
    timer.daemon = True
    timer.start()
    md: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgecache-tasks-") as tmp_s:
        tmp = Path(tmp_s)
        data = tmp / "data"
        print(f"fill: {rows:,} tasks into {data} (load {load_start})", flush=True)
        engine, fr, db_bytes, wal_peak = fill_database(data, rows, args.hosts)
        print(f"  {fr.seconds:.1f} s, {db_bytes / 1e6:.0f} MB", flush=True)
        hk_before = housekeeping(engine)
        commits = commit_latency(tmp / "commit", 100 if args.quick else 200)
        try:
            node = NodeProcess(data, args.hosts, tmp / "node.log")
            info = node.info
            info["pid"] = node.proc.pid
            print(f"node: control 127.0.0.1:{info['control_port']}, pid {node.proc.pid}", flush=True)
            params = describe_params(fr, info["eo_zone_id"], args.calls)
            plans: dict[str, list[str]] = {}
            db_before = db_queries(engine, params, max(20, args.calls // 5), plans)
            api_before = run_describes(info, params, ("raw", "sdk"))
            # The first create of the day also loads today's quota usage (count_since).
            first_ms = one_create(info)
            runs: list[CreateRun] = []
            for urls, threads in configs:
                r = run_creates(info, urls, threads, create_s, args.hosts, f"{urls}x{threads}")
                r.label = "baseline"
                runs.append(r)
                print(
                    f"  create {urls} URL x {threads} threads: {len(r.lat) / r.seconds:.0f} req/s", flush=True
                )
            # -- fixes -------------------------------------------------------------------------
            index_s: list[tuple[str, float]] = []
            for ddl in FIX_INDEXES:
                t = time.perf_counter()
                with write_transaction(engine) as conn:
                    conn.exec_driver_sql(ddl)
                index_s.append((ddl, time.perf_counter() - t))
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            wal_file = data / "edgecache.db-wal"
            db_size_after = (data / "edgecache.db").stat().st_size
            wal_after = wal_file.stat().st_size if wal_file.exists() else 0
            plans_after: dict[str, list[str]] = {}
            db_after = db_queries(engine, params, max(20, args.calls // 5), plans_after)
            api_after = run_describes(info, params, ("sdk",))
            hk_after = housekeeping(engine)
            for urls in (1, 100):
                per_purge, batched = ab_creates(info, urls, 4, create_s, args.hosts)
                per_purge.label = "+ 4 indexes (A)"
                batched.label = "+ 4 indexes, B: batched acks, forget per (zone, kind)"
                runs += [per_purge, batched]
                print(f"  A/B {urls} URL x 4: {len(per_purge.lat)} vs {len(batched.lat)} creates", flush=True)
            # The indexes' write cost, measured right after: the same A runs without them.
            with write_transaction(engine) as conn:
                for ddl in FIX_INDEXES:
                    conn.exec_driver_sql("DROP INDEX IF EXISTS " + ddl.split()[5])
            for urls in (1, 100):
                r = run_creates(info, urls, 4, create_s, args.hosts, "noidx")
                r.label = "indexes dropped again (A)"
                runs.append(r)
            n_proto = max(20, args.calls // 5)
            fuzzy_now, fuzzy_one, fuzzy_ok = compare(
                [task_query(p) for p in params["c"][:n_proto]],
                lambda q: TaskStore(engine).query(q)[0],
                lambda q: one_scan_query(engine, q)[0],
            )
            rollup_s = build_rollup(engine)
            count_now, count_rollup, rollup_ok = compare(
                [task_query(p) for p in params["d"][:n_proto]],
                lambda q: exact_count(engine, q),
                lambda q: rollup_count(engine, q),
            )
            with write_transaction(engine) as conn:
                conn.exec_driver_sql("DROP TABLE bench_task_hours")
        finally:
            if node is not None:
                node.stop()
        log_text = (tmp / "node.log").read_text(errors="replace")
        node_errors = log_text.count("Traceback")
        engine.dispose()
        # -- report ------------------------------------------------------------------------------
        elapsed = time.monotonic() - began
        md.append(f"# EdgeOne task API at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n")
        md.append(
            f"Command: `.venv/bin/python bench/tasks_api.py{' --quick' if args.quick else ''}`; "
            f"{os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}; load average (1/5/15 min) "
            f"at start {load_start}, at end {load()}; {elapsed:.0f} s in all. Node: one process "
            "(uvloop), EdgeOne action limit lifted, zone quotas 10^9/day.\n"
        )
        md.append("## Fill\n")
        md.append(
            "| tasks | jobs | transactions | wall s | of which generating s | rows/s | DB file | WAL peak |"
        )
        md.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        md.append(
            f"| {fr.rows:,} | {fr.jobs:,} | {fr.transactions} | {fr.seconds:.1f} | {fr.generate_seconds:.1f} "
            f"| {fr.rows / fr.seconds:,.0f} | {db_bytes / 1e6:.0f} MB | {wal_peak / 1e6:.0f} MB |"
        )
        share = ", ".join(f"{k} {v / fr.rows:.1%}" for k, v in fr.by_type.most_common())
        stat = ", ".join(f"{k} {v / fr.rows:.2%}" for k, v in fr.by_status.most_common())
        md.append(f"\nTypes: {share}. Statuses: {stat}. {args.hosts} hostnames, 7 days.\n")
        md.append(f"## DescribePurgeTasks ({args.calls} calls each; p50 / p99 ms)\n")
        md.append(
            "| query | TotalCount (median) | DB only | raw HTTP | SDK | SDK - raw p50 | after fix: DB"
            " | after: SDK |"
        )
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for q, title in QUERIES.items():
            raw, sdk = api_before[q]["raw"], api_before[q]["sdk"]
            tot = statistics.median(sdk.totals) if sdk.totals else math.nan
            errs = sum(c.errors.total() for c in (*api_before[q].values(), *api_after[q].values()))
            n_note = "" if len(sdk.lat) >= args.calls else f" (n={len(sdk.lat)})"
            md.append(
                f"| ({q}) {title}{n_note}{f' ({errs} errors)' if errs else ''} | {tot:,.0f} | "
                f"{db_before[q].summary()} | {raw.summary()} | {sdk.summary()} | "
                f"{ms(pct(sdk.lat, 50) - pct(raw.lat, 50))} | {db_after[q].summary()} | "
                f"{api_after[q]['sdk'].summary()} |"
            )
        md.append("\nQuery plans (count; page), before -> after the indexes:\n")
        for q in QUERIES:
            md.append(f"- ({q}) `{' | '.join(plans[q])}` -> `{' | '.join(plans_after[q])}`")
        md.append("\n## Node housekeeping and quota statements (ms, median of 3)\n")
        md.append("| statement | plan before | ms | plan after | ms |")
        md.append("|---|---|---:|---|---:|")
        for b, a in zip(hk_before, hk_after, strict=True):
            md.append(
                f"| {b.name} | {b.plan} | {ms(statistics.median(b.times_ms))} | {a.plan} | "
                f"{ms(statistics.median(a.times_ms))} |"
            )
        md.append("\n## Proposed changes, prototyped on the bench database\n")
        md.append("| change | cost | effect |")
        md.append("|---|---|---|")
        for ddl, secs in index_s:
            md.append(f"| `{ddl}` | {secs:.1f} s to build | see the tables above |")
        md.append(
            "| fuzzy listing in one scan (ids in order, count = len, page by id) | - | (c) "
            f"`TaskStore.query` {ms(pct(fuzzy_now, 50))} / {ms(pct(fuzzy_now, 99))} -> "
            f"{ms(pct(fuzzy_one, 50))} / {ms(pct(fuzzy_one, 99))} ms, counts agree: {fuzzy_ok} |"
        )
        md.append(
            "| hourly count rollup (zone, kind, hour) -> n, edges from the index | "
            f"{rollup_s:.1f} s to build | "
            f"(d) count {ms(pct(count_now, 50))} / {ms(pct(count_now, 99))} -> "
            f"{ms(pct(count_rollup, 50))} / {ms(pct(count_rollup, 99))} ms (count only), exact: {rollup_ok} |"
        )
        md.append(
            f"\nDB file after the indexes: {db_size_after / 1e6:.0f} MB (was {db_bytes / 1e6:.0f} MB; WAL "
            f"{wal_after / 1e6:.0f} MB after a checkpoint).\n"
        )
        md.append(
            f"## CreatePurgeTask ({create_s:.0f} s per run, SDK clients, one keep-alive connection each)\n"
        )
        md += create_rows(runs)
        md.append(
            f"\nOne durable commit (1 task row, WAL, synchronous=FULL) on this disk: p50 "
            f"{ms(pct(commits, 50))} ms, p99 {ms(pct(commits, 99))} ms ({len(commits)} serial commits). "
            "Each purge is two commits on the node's single writer thread (ledger + tasks; then "
            f"`finish_purge`). First create of the run (loads today's quota usage): {ms(first_ms)} ms. "
            f"Node log: {node_errors} tracebacks.\n"
        )
        tuple_us, set_us = host_check_us(args.hosts)
        md.append(
            f"Target host check `host in zone.config.hostnames` ({args.hosts} hostnames, a tuple): "
            f"{tuple_us:.1f} µs per lookup (frozenset: {set_us:.2f} µs); twice per URL target, i.e. "
            f"~{tuple_us * 200 / 1000:.1f} ms of a 100-URL request.\n"
        )
    text = "\n".join(md) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    timer.cancel()


if __name__ == "__main__":
    main()
