"""DescribePurgeTasks' database work on a large task table, this tree against another's ``src``.

Run: ``.venv/bin/python bench/tasks_listing.py [--tasks N] [--calls K] [--before SRC]`` (a few
minutes at a million tasks). For each tree, a child process (that tree's ``src`` first on the path)
fills a fresh database made by that tree's revisions with ``--tasks`` purge tasks over 7 days
(``bench/tasks_api.py``'s fill: ~1,000 hostnames, mostly ``purge_url`` and ``success``), then runs
``TaskStore.query`` in process for ``bench/tasks_api.py``'s five DescribePurgeTasks queries
((a) job id, (b) a day and ``statuses=[failed]``, (c) a day and a fuzzy target, (d) 7 days, no
filter, Limit 100, (e) a day and a type, rotating), ``--calls`` calls each, and the quota's
``count_since`` for a day; prints p50 / p99 ms and each query's plan. No server, no client: the
database's share of the answer, which the indexes decide (decision 0034). The trees run one after
the other, the machine's load between them: wall-clock, noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _tree_child import child_figures

HERE = Path(__file__).resolve().parent


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def child(tmp: Path, tasks: int, calls: int) -> None:
    """Fill, query, print the figures as JSON."""
    sys.path.insert(0, str(HERE))
    from _tasks_common import ZONE_ID
    from tasks_api import db_queries, describe_params, fill_database

    from edgecache.db.tasks import TaskStore

    engine, fr, _size, _wal = fill_database(tmp, tasks, 1000)
    params = describe_params(fr, ZONE_ID, calls)
    plans: dict[str, list[str]] = {}
    cells = db_queries(engine, params, calls, plans)
    store = TaskStore(engine)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    quota = []
    for _ in range(calls):
        t = time.perf_counter()
        store.count_since(ZONE_ID, "purge", "purge_url", day)
        quota.append((time.perf_counter() - t) * 1000)
    out = {
        q: {"p50": _pct(c.lat, 0.5), "p99": _pct(c.lat, 0.99), "total": sorted(c.totals)[len(c.totals) // 2]}
        for q, c in cells.items()
    }
    out["quota"] = {"p50": _pct(quota, 0.5), "p99": _pct(quota, 0.99), "total": 0}
    print(json.dumps({"cells": out, "plans": plans}))
    engine.dispose()


NAMES = {
    "a": "(a) job id",
    "b": "(b) 1 day, statuses=[failed]",
    "c": "(c) 1 day, fuzzy target",
    "d": "(d) 7 days, no filter, Limit 100",
    "e": "(e) 1 day, type (rotating)",
    "quota": "quota's `count_since` (a day, one type)",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--before", type=Path, help="another tree's src, run after this one")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.tasks, args.calls)
        return
    sides = [("this tree", HERE.parent / "src")] + ([("before", args.before)] if args.before else [])
    results = {
        name: child_figures(__file__, src, "--tasks", str(args.tasks), "--calls", str(args.calls))
        for name, src in sides
    }
    print(f"### `TaskStore.query` over {args.tasks:,} tasks, {args.calls} calls each: p50 / p99 ms\n")
    print("| query | TotalCount (median) | " + " | ".join(name for name, _ in sides) + " |")
    print("|---|---:|" + "---:|" * len(sides))
    first = results[sides[0][0]]["cells"]  # type: ignore[index]
    for q, label in NAMES.items():
        cells = [results[name]["cells"][q] for name, _ in sides]  # type: ignore[index]
        figures = " | ".join(f"{c['p50']:.1f} / {c['p99']:.1f}" for c in cells)
        print(f"| {label} | {first[q]['total']:,} | {figures} |")
    for name, _src in sides:
        print(f"\nPlans, {name}:\n")
        for q, plans in results[name]["plans"].items():  # type: ignore[attr-defined]
            print(f"- {NAMES[q]}: " + " / ".join(f"`{plan}`" for plan in plans))


if __name__ == "__main__":
    main()
