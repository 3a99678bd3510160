"""Queues benchmark: push, pull+ack and purge through the HTTP API, on SQLite and on PostgreSQL, next
to a hand-written ``SELECT ... FOR UPDATE SKIP LOCKED`` queue table as the baseline.

Method:
- The node is ``edgecache serve`` in its own process (SQLite under a temporary data directory, or a
  PostgreSQL server started here with its default durability: fsync and synchronous commit on).
  Every accepted push is committed durably before its answer, as in production.
- Pushes come from wrk (50 keep-alive connections sending one 100-byte message per request, or 10
  sending batches of 100), pull+ack from ``bench/_queues_client.py`` in another process (aiohttp,
  10 consumers each pulling up to 100 and acking them in one call, on the queue the batch run
  filled): pull answers must be parsed, which wrk cannot do.
- Purge: a queue is filled with ``--purge-messages`` rows written straight into the database, then a
  push1 run on another queue is measured twice, alone and while that queue's purge runs (started
  0.5 s in); the purge time is from the POST to the first status that reads ``completed``.
- Baseline (PostgreSQL only): a plain table with ``FOR UPDATE SKIP LOCKED`` driven in this process
  with psycopg, one connection per thread, no HTTP: push1 (autocommit insert), push100 (one
  transaction of 100 inserts), pull 100 + ack (claim transaction, then delete transaction).
- The same loads on the queue service in the benchmark's own process, without HTTP, show what the
  HTTP layer (aiohttp, JSON, auth) costs on top of the database.
- Client, node and database share this 2-core machine, which other work also uses: every rate is
  noisy and a lower bound of what the server does alone. The CPU column is the steadier figure:
  CPU microseconds per message of the node process (HTTP rows; PostgreSQL's own processes not
  included) or of this whole process (in-process rows: event loop and writer threads).

Usage: ``.venv/bin/python bench/queues.py [--duration 8] [--purge-messages 1000000]
[--only sqlite|postgresql]``. Prints a markdown table and writes it to ``bench/out/queues.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from edgecache.config import DEFAULT_ACCOUNT_ID  # noqa: E402
from edgecache.control.credentials import CredentialService, Permission  # noqa: E402
from edgecache.control.queue_rules import ConsumerSpec, Message  # noqa: E402
from edgecache.control.queues import QueueService  # noqa: E402
from edgecache.db.engine import open_database, sqlite_url, write_transaction  # noqa: E402
from edgecache.db.queues import NewMessage, insert_messages  # noqa: E402
from pg import PostgresServer, start_postgres  # noqa: E402

OUT = REPO / "bench" / "out" / "queues.md"
BANNER = re.compile(r"control plane on (http://[^ )]+)/client/v4")
FILL_CHUNK = 20_000


class Node:
    """``edgecache serve`` on a fresh data directory and the given database."""

    def __init__(self, database_url: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgecache-qbench-"))
        self.url = database_url or sqlite_url(self.dir)
        cfg = self.dir / "edgecache.toml"
        text = f'data_dir = "{self.dir}"\n'
        if database_url:
            text += f'database_url = "{database_url}"\n'
        text += '[data]\nhost = "127.0.0.1"\nport = 0\n[control]\nhost = "127.0.0.1"\nport = 0\n'
        cfg.write_text(text)
        exe = REPO / ".venv" / "bin" / "edgecache"
        self.proc = subprocess.Popen(
            [str(exe), "serve", "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = BANNER.search(line)
            if found:
                self.base = found.group(1)
                break
        else:
            raise RuntimeError("node did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()], daemon=True).start()
        engine = open_database(self.url)
        _, self.token = CredentialService(engine).create_token(
            DEFAULT_ACCOUNT_ID, "bench", [Permission.QUEUES_WRITE], None
        )
        engine.dispose()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"{self.base}/client/v4/accounts/{DEFAULT_ACCOUNT_ID}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["result"]

    def queue(self, name: str, consumer: bool = False) -> str:
        qid = str(self.api("POST", "/queues", {"queue_name": name})["queue_id"])
        if consumer:
            self.api("POST", f"/queues/{qid}/consumers", {"type": "http_pull"})
        return qid

    def commits(self) -> float:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        # Every process of the node reports its own series (worker processes theirs, zero here).
        return sum(float(v) for v in re.findall(r"^edgecache_queue_commits_total (\S+)$", text, re.M))

    def cpu(self) -> float:
        """CPU seconds the node process has used so far (all its threads, user and system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(node: Node, mode: str, queue_id: str, concurrency: int, duration: float) -> dict[str, float]:
    """Run the client process once; its JSON result, with the node's CPU seconds meanwhile."""
    cpu = node.cpu()
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "_queues_client.py"),
            mode,
            # "=" form: a token may start with "-".
            *("--base", node.base, f"--token={node.token}", "--account", DEFAULT_ACCOUNT_ID),
            *("--queue", queue_id, "--concurrency", str(concurrency), "--duration", str(duration)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["cpu"] = node.cpu() - cpu
    return result


WRK_LUA = """\
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def wrk_push(node: Node, queue_id: str, batch: int, connections: int, duration: float) -> dict[str, float]:
    """Pushes with wrk (C, so the client does not take the node's CPU as a Python client would):
    the same message (or batch of ``batch``) on every request, ``connections`` keep-alive clients."""
    message = {"body": "x" * 100, "content_type": "text"}
    body = json.dumps(message if batch == 1 else {"messages": [message] * batch})
    path = f"/client/v4/accounts/{DEFAULT_ACCOUNT_ID}/queues/{queue_id}/messages"
    path += "" if batch == 1 else "/batch"
    script = node.dir / f"push{batch}.lua"
    script.write_text(WRK_LUA % (body, node.token))
    threads = "2" if connections >= 2 else "1"
    cpu = node.cpu()
    out = subprocess.run(
        [
            "wrk",
            "-t",
            threads,
            "-c",
            str(connections),
            "-d",
            f"{duration:.0f}s",
            "-s",
            str(script),
            node.base + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    rps = float(found.group(1)) if found else 0.0
    errors = float(bad.group(1)) if bad else 0.0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    messages = rps * batch * duration
    return {"rate": rps * batch, "errors": errors, "messages": messages, "cpu": node.cpu() - cpu}


def fill(url: str, queue_id: str, n: int) -> float:
    """Write ``n`` messages for a queue straight into the database; returns seconds taken."""
    engine = open_database(url)
    start = time.monotonic()
    now = int(time.time() * 1000)
    rows = [NewMessage(b"x" * 100, "text", now)] * FILL_CHUNK
    for done in range(0, n, FILL_CHUNK):
        with write_transaction(engine) as conn:
            insert_messages(conn, queue_id, rows[: min(FILL_CHUNK, n - done)], now)
    engine.dispose()
    return time.monotonic() - start


def per_message(cpu: float, messages: float) -> str:
    """CPU microseconds per message, the figure this shared machine does not distort much."""
    return f"{cpu / messages * 1e6:,.0f}" if messages else "-"


def row(backend: str, scenario: str, r: dict[str, float], note: str) -> list[str]:
    """One edgecache table row from a client result (CPU: the node process's)."""
    cpu = per_message(r["cpu"], r["messages"])
    return [backend, "edgecache", scenario, f"{r['rate']:,.0f}", cpu, f"{r['errors']:.0f}", note]


def edgecache_rows(backend: str, database_url: str | None, args: argparse.Namespace) -> list[list[str]]:
    node = Node(database_url)
    rows: list[list[str]] = []
    try:
        q1 = node.queue("push-one", consumer=True)
        q2 = node.queue("push-batch", consumer=True)
        c0 = node.commits()
        r = wrk_push(node, q1, 1, 50, args.duration)
        per_commit = r["messages"] / max(1.0, node.commits() - c0)
        rows.append(
            row(backend, "push, 1 msg/request, 50 producers", r, f"{per_commit:.1f} pushes per commit")
        )
        r = wrk_push(node, q2, 100, 10, args.duration)
        rows.append(row(backend, "push, batches of 100, 10 producers", r, ""))
        r = load(node, "pullack", q2, 10, args.duration)
        rows.append(row(backend, "pull 100 + ack, 10 consumers", r, "queue pre-filled by the batch run"))
        big = node.queue("purge-me")
        other = node.queue("other", consumer=True)
        filled = fill(node.url, big, args.purge_messages)
        alone = wrk_push(node, other, 1, 50, args.duration)
        result: dict[str, Any] = {}

        def during() -> None:
            result.update(wrk_push(node, other, 1, 50, args.duration))

        t = threading.Thread(target=during)
        t.start()
        time.sleep(0.5)
        start = time.monotonic()
        node.api("POST", f"/queues/{big}/purge", {"delete_messages_permanently": True})
        while node.api("GET", f"/queues/{big}/purge").get("completed") != "true":
            time.sleep(0.05)
        purge_s = time.monotonic() - start
        t.join()
        change = (result["rate"] - alone["rate"]) / alone["rate"] * 100
        purged = f"purge {args.purge_messages:,} messages"
        rows.append([backend, "edgecache", purged, f"{purge_s:.2f} s", "-", "0", f"filled in {filled:.0f} s"])
        note = f"{change:+.0f}% vs {alone['rate']:,.0f} alone"
        rows.append(row(backend, "push1 on another queue during that purge", result, note))
    finally:
        node.stop()
    try:
        return rows + service_rows(backend, node.url, args.duration)
    finally:
        # The data directory holds the SQLite database: over a million rows after the purge run.
        shutil.rmtree(node.dir, ignore_errors=True)


def service_rows(backend: str, url: str, duration: float) -> list[list[str]]:
    """The same three loads on ``QueueService`` in this process, without HTTP: what the HTTP layer
    costs is the difference to the edgecache rows."""
    engine = open_database(url)
    service = QueueService(engine)
    message = Message(b"x" * 100, "text")

    async def run() -> list[list[str]]:
        one = await service.create_queue(DEFAULT_ACCOUNT_ID, "in-process-one")
        batch = await service.create_queue(DEFAULT_ACCOUNT_ID, "in-process-batch")
        await service.create_consumer(DEFAULT_ACCOUNT_ID, batch.row.id, ConsumerSpec("http_pull"))

        async def loop(workers: int, step: Any) -> tuple[str, str]:
            """Messages per second, and CPU microseconds per message of this whole process (event
            loop and writer threads)."""
            done = 0
            stop = time.monotonic() + duration

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    # Awaited first: "done += await step()" reads done before the await and loses
                    # the other workers' updates.
                    n = await step()
                    done += n

            start, cpu = time.monotonic(), time.process_time()
            await asyncio.gather(*(worker() for _ in range(workers)))
            took, cpu = time.monotonic() - start, time.process_time() - cpu
            return f"{done / took:,.0f}", per_message(cpu, done)

        async def push1() -> int:
            await service.push(DEFAULT_ACCOUNT_ID, one.row.id, [message])
            return 1

        async def push100() -> int:
            await service.push(DEFAULT_ACCOUNT_ID, batch.row.id, [message] * 100)
            return 100

        async def pullack() -> int:
            got, _ = await service.pull(DEFAULT_ACCOUNT_ID, batch.row.id, 100, 30_000)
            if got:
                await service.ack(DEFAULT_ACCOUNT_ID, batch.row.id, [d.lease_id for d in got], [])
            return len(got)

        system = "service in process (no HTTP)"
        loads = [
            ("push, 1 msg/call, 50 tasks", 50, push1),
            ("push, batches of 100, 10 tasks", 10, push100),
            ("pull 100 + ack, 10 tasks", 10, pullack),
        ]
        return [[backend, system, name, *await loop(n, step), "0", ""] for name, n, step in loads]

    try:
        return asyncio.run(run())
    finally:
        service.close()
        engine.dispose()


def baseline_rows(server: PostgresServer, duration: float) -> list[list[str]]:
    """The hand-written SKIP LOCKED queue on the same PostgreSQL server."""
    url = server.create_database().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE q (id bigserial PRIMARY KEY, queue text NOT NULL, body bytea NOT NULL,"
            " visible_at timestamptz NOT NULL DEFAULT now(), attempts int NOT NULL DEFAULT 0)"
        )
        conn.execute("CREATE INDEX q_ready ON q (queue, visible_at, id)")

    def run(threads: int, step: Any) -> float:
        counts = [0] * threads
        stop = time.monotonic() + duration

        def worker(i: int) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                while time.monotonic() < stop:
                    counts[i] += step(conn)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        start = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.monotonic() - start)

    body = b"x" * 100

    def push1(conn: psycopg.Connection[Any]) -> int:
        conn.execute("INSERT INTO q (queue, body) VALUES ('a', %s)", (body,))
        return 1

    def push100(conn: psycopg.Connection[Any]) -> int:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO q (queue, body) VALUES ('b', %s)", [(body,)] * 100)
        return 100

    def pullack(conn: psycopg.Connection[Any]) -> int:
        with conn.transaction():
            ids = [
                r[0]
                for r in conn.execute(
                    "UPDATE q SET visible_at = now() + interval '30 seconds', attempts = attempts + 1"
                    " WHERE id IN (SELECT id FROM q WHERE queue = 'b' AND visible_at <= now()"
                    " ORDER BY visible_at, id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, body"
                ).fetchall()
            ]
        if ids:
            conn.execute("DELETE FROM q WHERE id = ANY(%s)", (ids,))
        return len(ids)

    system = "SKIP LOCKED baseline"
    return [
        [
            "postgresql",
            system,
            "push, 1 msg/transaction, 50 threads",
            f"{run(50, push1):,.0f}",
            "-",
            "0",
            "no HTTP",
        ],
        [
            "postgresql",
            system,
            "push, 100 msg/transaction, 10 threads",
            f"{run(10, push100):,.0f}",
            "-",
            "0",
            "no HTTP",
        ],
        ["postgresql", system, "pull 100 + ack, 10 threads", f"{run(10, pullack):,.0f}", "-", "0", "no HTTP"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--purge-messages", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("sqlite", "postgresql"))
    args = ap.parse_args()
    rows: list[list[str]] = []
    if args.only in (None, "sqlite"):
        rows += edgecache_rows("sqlite", None, args)
    if args.only in (None, "postgresql"):
        server = start_postgres(durable=True)
        try:
            rows += edgecache_rows("postgresql", server.create_database(), args)
            rows += baseline_rows(server, args.duration)
        finally:
            server.stop()
    head = ["database", "system", "scenario", "messages/s (or time)", "CPU µs/msg", "errors", "notes"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    load_avg = os.getloadavg()
    text = "\n".join(table) + f"\n\nload average at the end: {load_avg[0]:.2f} (2 cores, shared)\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
