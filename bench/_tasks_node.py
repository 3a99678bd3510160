"""Launcher: one edgecache node for ``bench/tasks_api.py``, run as a child process.

``python bench/_tasks_node.py --data-dir DIR [--hosts N] [--action-rate R] [--prototype]``
builds the node with ``edgecache.app.Node`` (the composition root the CLI and the tests use), on
uvloop as ``edgecache serve`` does, both listeners on 127.0.0.1 port 0, one zone (``_tasks_common``).
It creates one EdgeOne secret with ``cache_purge`` and prints one JSON line on stdout::

    {"control_port": ..., "data_port": ..., "secret_id": ..., "secret_key": ...,
     "zone_id": ..., "eo_zone_id": ..., "action_rate": ...}

then serves until SIGTERM/SIGINT or until its stdin closes (the parent went away), and stops the node.

The launcher always installs switchable prototypes of two changes (monkeypatched here, src/ untouched),
off unless ``--prototype``; SIGUSR1 turns them on, SIGUSR2 off, so one node can be measured A/B/A/B.
With them, acknowledgements are queued and the writer thread completes all queued purges in one
transaction with one ``executemany`` UPDATE, instead of one transaction (one durable commit) per
purge and one UPDATE statement per task; and the 5-second retention ``TaskStore.forget`` deletes per
(zone, kind) through the existing ``(zone_id, kind, created_at)`` index instead of scanning the
table under the write lock.

``--action-rate R`` replaces the EdgeOne per-(account, action) limit (20 requests/s, reference §1) by
R/s with a burst of R, so that a benchmark measures the server rather than the limiter. The node has no
setting for it, so the launcher reaches the limiter through the control app (``EDGEONE_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from _tasks_common import ACCOUNT_ID, make_config
from sqlalchemy import bindparam, delete, select, update

from edgecache.api.edgeone.dispatch import EDGEONE_KEY
from edgecache.app import Node
from edgecache.control.credentials import Permission
from edgecache.control.purges import PurgeService, matched_by_target
from edgecache.control.ratelimit import Rate
from edgecache.db.engine import write_transaction
from edgecache.db.schema import TASK_KINDS, tasks
from edgecache.db.tasks import PROCESSING
from edgecache.purge.selectors import Purge, Selector


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when the parent closes our stdin (or dies)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        loop.call_soon_threadsafe(stop.set)


def prototype(node: Node, enabled: list[bool]) -> None:
    """Route ``node.purges.reclaimed`` and ``node.tasks.forget`` through the prototypes while
    ``enabled[0]`` (see the docstring); the flag is set on the event loop."""
    purges: PurgeService = node.purges
    original = purges.reclaimed
    engine = node.database
    lock = threading.Lock()
    queued: list[tuple[int, dict[str, int]]] = []
    scheduled = [False]

    def drain() -> None:
        with lock:
            batch = queued[:]
            queued.clear()
            scheduled[0] = False
        now = datetime.now(UTC)
        with write_transaction(engine) as conn:
            rows: list[dict[str, Any]] = []
            for seq, by_target in batch:
                found = conn.execute(
                    select(tasks.c.id, tasks.c.target).where(tasks.c.seq == seq, tasks.c.status == PROCESSING)
                ).all()
                rows += [{"tid": r.id, "m": by_target.get(r.target, 0)} for r in found]
            if rows:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == bindparam("tid"), tasks.c.status == PROCESSING)
                    .values(status="success", matched=bindparam("m"), updated_at=now),
                    rows,
                )

    def reclaimed(purge: Purge, matched: dict[Selector, int]) -> None:
        if not enabled[0]:
            original(purge, matched)
            return
        items = purges._pending.pop(purge.seq, ())
        by_target = matched_by_target(items, matched)
        with lock:
            queued.append((purge.seq, by_target))
            if scheduled[0]:
                return
            scheduled[0] = True
        purges._writer.submit(lambda _conn: drain())

    # The reclaimer holds the bound method given at construction: replace it there.
    node.reclaimer._on_reclaimed = reclaimed

    original_forget = node.tasks.forget
    zone_ids = [z.id for z in node.config.zones]

    def forget(before: datetime) -> int:
        if not enabled[0]:
            return original_forget(before)
        n = 0
        with write_transaction(engine) as conn:
            for zone_id in zone_ids:
                for kind in TASK_KINDS:
                    n += conn.execute(
                        delete(tasks).where(
                            tasks.c.zone_id == zone_id, tasks.c.kind == kind, tasks.c.created_at < before
                        )
                    ).rowcount
        return n

    # ``Node._keep_tasks`` looks the method up on the instance at each run.
    node.tasks.forget = forget  # type: ignore[method-assign]


async def _serve(data_dir: Path, hosts: int, action_rate: float, fixes: bool) -> None:
    node = Node(make_config(data_dir, hosts))
    enabled = [fixes]
    prototype(node, enabled)
    await node.start()
    try:
        if action_rate > 0:
            runner = node._control
            assert runner is not None
            runner.app[EDGEONE_KEY].limiter.rate = Rate(action_rate, action_rate)
        secret_id, secret_key = await asyncio.to_thread(
            node.secrets.create, ACCOUNT_ID, "bench", [Permission.CACHE_PURGE]
        )
        zone = node.config.zones[0]
        info = {
            "control_port": node.control_port,
            "data_port": node.data_port,
            "secret_id": secret_id,
            "secret_key": secret_key,
            "zone_id": zone.id,
            "eo_zone_id": zone.eo_id,
            "action_rate": action_rate,
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, enabled.__setitem__, 0, True)
        loop.add_signal_handler(signal.SIGUSR2, enabled.__setitem__, 0, False)
        threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
        await stop.wait()
    finally:
        await node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--action-rate", type=float, default=0.0, help="0: the product default (20/s)")
    ap.add_argument(
        "--prototype", action="store_true", help="start with the prototypes on (SIGUSR1 on, SIGUSR2 off)"
    )
    args = ap.parse_args()
    uvloop.run(_serve(args.data_dir, args.hosts, args.action_rate, args.prototype))


if __name__ == "__main__":
    main()
