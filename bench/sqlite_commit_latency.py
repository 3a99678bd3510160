"""How long an accepted purge waits for SQLite to make it durable (docs/decisions/0003).

Appends one purge-ledger row per write transaction through ``open_database`` (WAL, BEGIN IMMEDIATE),
the way the purge API will, under ``synchronous=FULL`` (our setting) and, for comparison, NORMAL
and OFF. Reports commit latency percentiles and the resulting ceiling of serial commits per second.

Usage: ``.venv/bin/python bench/sqlite_commit_latency.py [--n 2000] [--dir PATH]``. ``--dir`` should
be on the disk that will hold ``data/`` (the default is a temporary directory under ./bench/out).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from edgecache.db.engine import open_database, sqlite_url, write_transaction
from edgecache.db.schema import accounts, purge_ledger, zones


def _measure(directory: Path, synchronous: str, n: int) -> list[float]:
    engine: Engine = open_database(sqlite_url(directory))
    if synchronous != "FULL":

        @event.listens_for(engine, "connect")
        def _override(dbapi_connection: object, _record: object) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")  # type: ignore[attr-defined]

        engine.dispose()  # reconnect so the override applies
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        conn.execute(insert(accounts).values(id="a" * 32, name="bench", plan="pro", created_at=now))
        zone = {"id": "b" * 32, "account_id": "a" * 32, "name": "z", "plan": "pro", "created_at": now}
        conn.execute(insert(zones).values(**zone))
    row = {
        "zone_id": "b" * 32,
        "mode": "delete",
        "selectors": '{"tags": ["product-123"]}',
        "principal": "token:" + "c" * 32,
        "dialect": "cloudflare",
        "created_at": now,
        "job_id": "d" * 32,
    }
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with write_transaction(engine) as conn:
            conn.execute(insert(purge_ledger).values(**row))
        out.append(time.perf_counter() - t0)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = args.dir or Path(__file__).parent / "out"
    root.mkdir(parents=True, exist_ok=True)
    print(f"{args.n} single-row write transactions per setting, in {root}")
    heads = ("p50 ms", "p90 ms", "p99 ms", "max ms")
    print(f"{'synchronous':>11}  " + "  ".join(f"{h:>7}" for h in heads) + f"  {'commits/s':>9}")
    for setting in ("FULL", "NORMAL", "OFF"):
        with tempfile.TemporaryDirectory(dir=root) as d:
            lat = sorted(_measure(Path(d), setting, args.n))
        q = statistics.quantiles(lat, n=100)
        print(
            f"{setting:>11}  {q[49] * 1e3:7.3f}  {q[89] * 1e3:7.3f}  {q[98] * 1e3:7.3f}  {lat[-1] * 1e3:7.2f}"
            f"  {len(lat) / sum(lat):9.0f}"
        )


if __name__ == "__main__":
    main()
