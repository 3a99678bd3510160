"""Fill a node's database with synthetic but realistic purge tasks, fast (SQLAlchemy Core executemany).

Shape of the data (seeded, so runs are comparable):
- Jobs arrive over ``days`` days ending at ``now``, with a day/night cycle (rate x1.6 at the peak hour,
  x0.4 at the trough); all tasks of a job share its job id and creation time, ids ascend with time.
- Job types (per job): purge_url 40 %, purge_cache_tag 30 %, purge_prefix 15 %, purge_host 10 %,
  purge_all 5 %. URL jobs are heavy-tailed (55 % one URL, 25 % 2-10, 15 % 11-50, 5 % 51-200), so by
  task URLs are ~84 %. Hosts are drawn Zipf-like from the zone's hostnames (a few busy sites).
- Status: tasks younger than 60 s are ``processing``; older ones ``success`` 97 %, ``failed`` 1.5 %,
  ``timeout`` 1.5 % (per job), with ``fail_type``/``fail_message`` and a plausible ``updated_at``.
- Method ``invalidate`` 80 % / ``delete`` 20 %; dialect edgeone 60 % (principal ``secret:AKID...``)
  / cloudflare 40 % (``token:<hex>``); ``matched`` set on success.
- ``seq`` is NULL: no ledger rows are written (the ledger is not what is measured, and real ``seq``
  values would collide with the node's own numbering).
Rows go in ``transactions`` write transactions (``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``, as
the node writes), each made of 50,000-row ``executemany`` calls.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from edgecache.db.engine import write_transaction
from edgecache.db.schema import tasks

JOB_TYPES = ("purge_url", "purge_cache_tag", "purge_prefix", "purge_host", "purge_all")
JOB_WEIGHTS = (40, 30, 15, 10, 5)
SECTIONS = (
    "products", "blog", "static/js", "static/css", "images/catalog", "api/v1/items", "category",
    "news", "assets/img", "media/video", "docs", "checkout",
)  # fmt: skip
SLUGS = (
    "red-shoe", "winter-jacket", "summer-sale", "home", "index", "banner", "app", "vendor", "logo",
    "hero", "gift-card", "laptop-stand", "coffee-mug", "desk-lamp", "yoga-mat", "backpack",
)  # fmt: skip
EXTS = ("html", "js", "css", "jpg", "png", "webp", "json", "mp4")
TAG_KINDS = ("product", "category", "page", "collection", "author", "release")
CHUNK = 50_000


@dataclass
class FillResult:
    """What was written, and samples for the queries."""

    rows: int = 0
    jobs: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    transactions: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)
    """A uniform sample of job ids (reservoir)."""
    fragments: list[str] = field(default_factory=list)
    """Substrings of stored URL targets, for the fuzzy target filter."""
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    end: datetime = field(default_factory=lambda: datetime.now(UTC))


def _arrivals(rng: random.Random, n: int, start: float, span: float) -> list[float]:
    """``n`` sorted Unix times in [start, start+span), with a daily cycle (thinning)."""
    out: list[float] = []
    while len(out) < n:
        t = start + rng.random() * span
        hour = (t % 86400) / 3600
        if rng.random() * 1.6 < 1.0 + 0.6 * math.sin((hour - 8) / 24 * 2 * math.pi):
            out.append(t)
    out.sort()
    return out


def _size(rng: random.Random, type_: str) -> int:
    if type_ == "purge_url":
        r = rng.random()
        if r < 0.55:
            return 1
        if r < 0.80:
            return rng.randint(2, 10)
        if r < 0.95:
            return rng.randint(11, 50)
        return rng.randint(51, 200)
    if type_ == "purge_cache_tag":
        return rng.choice((1, 1, 1, 2, 3, 5))
    if type_ == "purge_prefix":
        return rng.choice((1, 1, 2, 3))
    return 1


def _target(rng: random.Random, type_: str, host: str) -> tuple[str, str | None]:
    if type_ == "purge_url":
        section = rng.choice(SECTIONS)
        url = f"https://{host}/{section}/{rng.choice(SLUGS)}-{rng.randrange(1_000_000)}.{rng.choice(EXTS)}"
        if rng.random() < 0.2:
            url += f"?v={rng.randrange(100_000)}"
        return url, host
    if type_ == "purge_cache_tag":
        return f"{rng.choice(TAG_KINDS)}-{rng.randrange(200_000)}", None
    if type_ == "purge_prefix":
        path = rng.choice(SECTIONS)
        if rng.random() < 0.5:
            path += f"/{rng.randrange(1000)}"
        return f"https://{host}/{path}/", host
    if type_ == "purge_host":
        return host, host
    return "", None


def _keep(rng: random.Random, sample: list[str], item: str, seen: int, cap: int) -> None:
    """Reservoir sampling: ``sample`` stays a uniform sample of the ``seen`` items so far."""
    if len(sample) < cap:
        sample.append(item)
    else:
        j = rng.randrange(seen)
        if j < cap:
            sample[j] = item


def _jobs(
    rng: random.Random, n_rows: int, hosts: tuple[str, ...], now: datetime, days: float, result: FillResult
) -> Iterator[dict[str, Any]]:
    """Task rows, oldest first, ``n_rows`` of them (the last job is cut to fit)."""
    host_cum: list[float] = []
    acc = 0.0
    for i in range(len(hosts)):
        acc += 1.0 / (i + 1) ** 0.8
        host_cum.append(acc)
    specs: list[tuple[str, int]] = []
    total = 0
    while total < n_rows:
        type_ = rng.choices(JOB_TYPES, JOB_WEIGHTS)[0]
        size = min(_size(rng, type_), n_rows - total)
        specs.append((type_, size))
        total += size
    span = days * 86400
    times = _arrivals(rng, len(specs), now.timestamp() - span, span)
    secrets = [f"secret:AKID{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(5)]
    tokens = [f"token:{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(5)]
    recent = now.timestamp() - 60
    sample_cap = 2000
    urls = 0
    for t, (type_, size) in zip(times, specs, strict=True):
        job_id = uuid.UUID(int=rng.getrandbits(128)).hex
        result.jobs += 1
        _keep(rng, result.job_ids, job_id, result.jobs, sample_cap)
        created = datetime.fromtimestamp(t, UTC)
        fail: tuple[str | None, str | None]
        if t >= recent:
            status, updated, fail = "processing", created, (None, None)
        else:
            r = rng.random()
            if r < 0.97:
                status, updated, fail = (
                    "success",
                    created + timedelta(seconds=rng.uniform(0.01, 1.5)),
                    (None, None),
                )
            elif r < 0.985:
                status, updated = "failed", created + timedelta(seconds=rng.uniform(0.1, 3))
                fail = ("taskFailed", "purge rejected by a node")
            else:
                status, updated = "timeout", created + timedelta(seconds=60)
                fail = ("taskFailed", "not acknowledged by every node in time")
        edgeone = rng.random() < 0.6
        principal = rng.choice(secrets if edgeone else tokens)
        method = "invalidate" if rng.random() < 0.8 else "delete"
        host = rng.choices(hosts, cum_weights=host_cum)[0]
        for _ in range(size):
            if type_ != "purge_host" and size > 1 and rng.random() < 0.3:
                host = rng.choices(hosts, cum_weights=host_cum)[0]
            target, domain = _target(rng, type_, host)
            if type_ == "purge_url":
                urls += 1
                if urls <= sample_cap or rng.random() < sample_cap / urls:
                    # "red-shoe-12345" of ".../red-shoe-123456.jpg": a few matches in a million.
                    _keep(
                        rng, result.fragments, target.rsplit("/", 1)[1].split(".")[0][:-1], urls, sample_cap
                    )
            yield {
                "job_id": job_id,
                "kind": "purge",
                "zone_id": "",
                "seq": None,
                "target": target,
                "domain": domain,
                "type": type_,
                "method": method,
                "status": status,
                "created_at": created,
                "updated_at": updated,
                "fail_type": fail[0],
                "fail_message": fail[1],
                "principal": principal,
                "dialect": "edgeone" if edgeone else "cloudflare",
                "matched": rng.randrange(6) if status == "success" else None,
            }
            result.by_type[type_] += 1
            result.by_status[status] += 1


def fill(
    engine: Engine,
    *,
    zone_id: str,
    rows: int,
    hosts: tuple[str, ...],
    now: datetime,
    days: float = 7.0,
    transactions: int = 4,
    seed: int = 20260101,
) -> FillResult:
    """Insert ``rows`` purge tasks of ``zone_id`` created over ``days`` days ending at ``now``."""
    rng = random.Random(seed)
    result = FillResult(start=now - timedelta(days=days), end=now)
    per_txn = max(CHUNK, -(-rows // transactions))
    gen = _jobs(rng, rows, hosts, now, days, result)
    t0 = time.perf_counter()
    gen_time = 0.0
    done = False
    while not done:
        with write_transaction(engine) as conn:
            # A bigger page cache for the bulk insert only (the job_id index takes random inserts).
            conn.exec_driver_sql("PRAGMA cache_size=-262144")
            in_txn = 0
            while in_txn < per_txn:
                g0 = time.perf_counter()
                chunk: list[dict[str, Any]] = []
                for row in gen:
                    row["zone_id"] = zone_id
                    chunk.append(row)
                    if len(chunk) >= min(CHUNK, per_txn - in_txn):
                        break
                gen_time += time.perf_counter() - g0
                if not chunk:
                    done = True
                    break
                conn.execute(insert(tasks), chunk)
                in_txn += len(chunk)
                result.rows += len(chunk)
            conn.exec_driver_sql("PRAGMA cache_size=-2000")
        result.transactions += 1
        if result.rows >= rows:
            done = True
    result.seconds = time.perf_counter() - t0
    result.generate_seconds = gen_time
    return result
