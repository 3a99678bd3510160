"""Event subscriptions: edgecache publishes its own events into queues the operator names.

Rules of this module:
- Cloudflare's event-subscriptions shape (source, events, destination queue), with edgecache's own
  sources: ``edgecache.purge`` (a purge job's tasks all finished: ``purge.completed``, or some
  timed out: ``purge.timedOut``), ``edgecache.prefetch`` (``prefetch.completed``),
  ``edgecache.reserve`` (a Cache Reserve clear finished: ``reserve.clearCompleted``) and
  ``edgecache.queues`` (``queue.purgeCompleted``). A source may name one ``zone_id`` (purge,
  prefetch, reserve) or ``queue_id`` (queues) to narrow it.
- Each event reaches each matching subscription once: the message is pushed in the same transaction
  that records ``<subscription>:<event key>`` in the event log, so nodes noticing the same job race
  on that key and one wins. Jobs are noticed by polling the tasks of the last few minutes (a job
  ends within the task timeout), which also catches jobs that ended on other nodes; Cache Reserve
  clears are noticed the same way, by their end time in the ``cache_reserve`` table.
- The message body is JSON: ``{"type", "source", "payload", "metadata"}`` like Cloudflare's events,
  with ``type`` ``edgecache.<event>`` (e.g. ``edgecache.purge.completed``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from edgecache.control.queue_rules import QueueNotFound, QueueRejected
from edgecache.control.queues import QueueService
from edgecache.db import queues as qdb
from edgecache.db import subscriptions as db
from edgecache.db.cache_reserve import CacheReserveStore
from edgecache.db.engine import read_transaction
from edgecache.db.queues import NewMessage, QueueRow
from edgecache.db.subscriptions import SubscriptionRow
from edgecache.db.tasks import FinishedJob, TaskStore
from edgecache.edge.zones import ZoneTable

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCES: dict[str, tuple[str, ...]] = {
    "edgecache.purge": ("purge.completed", "purge.timedOut"),
    "edgecache.prefetch": ("prefetch.completed",),
    "edgecache.reserve": ("reserve.clearCompleted",),
    "edgecache.queues": ("queue.purgeCompleted",),
}
"""Each source and the events it emits."""
SOURCE_FILTERS = {
    "edgecache.purge": "zone_id",
    "edgecache.prefetch": "zone_id",
    "edgecache.reserve": "zone_id",
    "edgecache.queues": "queue_id",
}
POLL_EVERY = 2.0
"""Seconds between looks for finished jobs."""
WINDOW_MARGIN = 120.0
"""Seconds beyond the task timeout that a job is looked for after its creation."""
LOG_KEEP = timedelta(days=1)
"""How long the event log remembers a published event (far beyond the polling window)."""


class SubscriptionRejected(QueueRejected):
    """A subscription request that cannot be accepted."""


class SubscriptionNotFound(QueueRejected):
    """No such subscription in this account."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What a create or update asks for (None: unchanged on update)."""

    name: str | None = None
    source: dict[str, Any] | None = None
    events: tuple[str, ...] | None = None
    queue_id: str | None = None
    enabled: bool | None = None


class SubscriptionService:
    """Subscriptions of every account, and the publisher that feeds them."""

    def __init__(
        self, engine: Engine, queues: QueueService, tasks: TaskStore, zones: ZoneTable, task_timeout: float
    ) -> None:
        self._engine = engine
        self._queues = queues
        self._writer = queues.writer
        self._tasks = tasks
        self._zones = zones
        self._window = timedelta(seconds=task_timeout + WINDOW_MARGIN)
        self._forgot_at = 0.0
        queues.on_purged(self._queue_purged)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with read_transaction(self._engine) as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    # -- validation -------------------------------------------------------------------------------

    @staticmethod
    def _check(spec: SubscriptionSpec, current: SubscriptionRow | None) -> SubscriptionSpec:
        name = spec.name if spec.name is not None else (current.name if current else None)
        if not name or len(name) > 255:
            raise SubscriptionRejected("name is required (1 to 255 characters)")
        source = spec.source if spec.source is not None else (current.source if current else None)
        if not isinstance(source, dict) or source.get("type") not in SOURCES:
            raise SubscriptionRejected(f"source.type must be one of {', '.join(SOURCES)}")
        allowed = {"type", SOURCE_FILTERS[source["type"]]}
        if set(source) - allowed or not all(isinstance(v, str) for v in source.values()):
            raise SubscriptionRejected(f"source of type {source['type']} takes only {sorted(allowed)}")
        events = spec.events if spec.events is not None else (current.events if current else None)
        if not events or any(e not in SOURCES[source["type"]] for e in events):
            raise SubscriptionRejected(
                f"events must be a non-empty list of: {', '.join(SOURCES[source['type']])}"
            )
        queue_id = spec.queue_id if spec.queue_id is not None else (current.queue_id if current else None)
        if not queue_id:
            raise SubscriptionRejected('destination must be {"type": "queues.queue", "queue_id": ...}')
        enabled = spec.enabled if spec.enabled is not None else (current.enabled if current else True)
        return SubscriptionSpec(name, dict(source), tuple(dict.fromkeys(events)), queue_id, enabled)

    # -- CRUD -------------------------------------------------------------------------------------

    async def create(self, account_id: str, spec: SubscriptionSpec) -> SubscriptionRow:
        """Subscribe a queue of the account to a source's events."""
        full = self._check(spec, None)
        now = datetime.now(UTC)
        assert full.name is not None and full.source is not None and full.events is not None
        assert full.queue_id is not None and full.enabled is not None
        row = SubscriptionRow(
            uuid.uuid4().hex,
            account_id,
            full.name,
            full.source,
            full.events,
            full.queue_id,
            full.enabled,
            now,
            now,
        )

        def op(conn: Connection) -> SubscriptionRow:
            if qdb.get_queue(conn, account_id, row.queue_id) is None:
                raise QueueNotFound(f"Queue {row.queue_id} does not exist")
            db.insert_subscription(conn, row)
            return row

        return await self._writer.run(op)

    async def update(self, account_id: str, subscription_id: str, spec: SubscriptionSpec) -> SubscriptionRow:
        """Change a subscription's name, events, destination or enabled flag."""

        def op(conn: Connection) -> SubscriptionRow:
            current = self._get(conn, account_id, subscription_id)
            full = self._check(spec, current)
            assert full.name is not None and full.events is not None and full.queue_id is not None
            assert full.enabled is not None and full.source is not None
            if qdb.get_queue(conn, account_id, full.queue_id) is None:
                raise QueueNotFound(f"Queue {full.queue_id} does not exist")
            row = replace(
                current,
                name=full.name,
                source=full.source,
                events=full.events,
                queue_id=full.queue_id,
                enabled=full.enabled,
                modified_at=datetime.now(UTC),
            )
            db.replace_subscription(conn, row)
            return row

        return await self._writer.run(op)

    @staticmethod
    def _get(conn: Connection, account_id: str, subscription_id: str) -> SubscriptionRow:
        row = db.get_subscription(conn, account_id, subscription_id)
        if row is None:
            raise SubscriptionNotFound(f"Event subscription {subscription_id} does not exist")
        return row

    async def get(self, account_id: str, subscription_id: str) -> SubscriptionRow:
        """One subscription, or :class:`SubscriptionNotFound`."""
        return await self._read(lambda conn: self._get(conn, account_id, subscription_id))

    async def list(
        self, account_id: str, queue_id: str | None, page: int, per_page: int
    ) -> tuple[int, list[SubscriptionRow]]:
        """The account's subscriptions (into one queue, when given): total and one page."""
        return await self._read(
            lambda conn: db.list_subscriptions(conn, account_id, queue_id, (page - 1) * per_page, per_page)
        )

    async def delete(self, account_id: str, subscription_id: str) -> SubscriptionRow:
        """Remove a subscription; returns what it was."""

        def op(conn: Connection) -> SubscriptionRow:
            row = self._get(conn, account_id, subscription_id)
            db.delete_subscription(conn, subscription_id)
            return row

        return await self._writer.run(op)

    # -- publishing -------------------------------------------------------------------------------

    async def publish(
        self, account_id: str, source: dict[str, str], event: str, key: str, payload: dict[str, Any]
    ) -> int:
        """Push ``event`` into every enabled matching subscription's queue, once per subscription
        and ``key``; returns how many messages were pushed by this call."""
        subs = await self._read(db.enabled_subscriptions)
        field = SOURCE_FILTERS[source["type"]]
        pushed = 0
        for sub in subs:
            if sub.account_id != account_id or sub.source.get("type") != source["type"]:
                continue
            if event not in sub.events or sub.source.get(field, source.get(field)) != source.get(field):
                continue
            now = datetime.now(UTC)
            body = {
                "type": f"edgecache.{event}",
                "source": source,
                "payload": payload,
                "metadata": {
                    "accountId": account_id,
                    "eventSubscriptionId": sub.id,
                    "eventSchemaVersion": 1,
                    "eventTimestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                },
            }
            data = json.dumps(body, separators=(",", ":")).encode()

            def op(
                conn: Connection, sub: SubscriptionRow = sub, data: bytes = data, now: datetime = now
            ) -> bool:
                if qdb.get_queue(conn, account_id, sub.queue_id) is None:
                    return False
                if not db.claim_event(conn, f"{sub.id}:{key}", now):
                    return False
                ms = int(now.timestamp() * 1000)
                qdb.insert_messages(conn, sub.queue_id, [NewMessage(data, "json", ms)], ms)
                return True

            if await self._writer.run(op):
                pushed += 1
        return pushed

    async def _queue_purged(self, queue: QueueRow) -> None:
        started = queue.purge_started_at.isoformat() if queue.purge_started_at else ""
        await self.publish(
            queue.account_id,
            {"type": "edgecache.queues", "queue_id": queue.id},
            "queue.purgeCompleted",
            f"queue.purgeCompleted:{queue.id}:{queue.purge_through}",
            {"queue_id": queue.id, "queue_name": queue.name, "started_at": started},
        )

    async def _job_events(self, subs: Sequence[SubscriptionRow]) -> None:
        since = datetime.now(UTC) - self._window
        for kind in ("purge", "prefetch"):
            accounts = {s.account_id for s in subs if s.source.get("type") == f"edgecache.{kind}"}
            if not accounts:
                continue
            zone_ids = [z for z, rt in self._zones.by_id.items() if rt.config.account_id in accounts]
            jobs: list[FinishedJob] = await asyncio.to_thread(
                self._tasks.finished_jobs, zone_ids, kind, since
            )
            for job in jobs:
                if kind == "prefetch":
                    event = "prefetch.completed"
                elif job.statuses.get("timeout"):
                    event = "purge.timedOut"
                else:
                    event = "purge.completed"
                await self.publish(
                    self._zones.by_id[job.zone_id].config.account_id,
                    {"type": f"edgecache.{kind}", "zone_id": job.zone_id},
                    event,
                    f"{event}:{job.job_id}",
                    {
                        "job_id": job.job_id,
                        "zone_id": job.zone_id,
                        "tasks": job.statuses,
                        "ended_at": job.ended_at.isoformat(),
                    },
                )

    async def _reserve_events(self, subs: Sequence[SubscriptionRow]) -> None:
        accounts = {s.account_id for s in subs if s.source.get("type") == "edgecache.reserve"}
        if not accounts:
            return
        since = datetime.now(UTC) - self._window
        rows = await asyncio.to_thread(CacheReserveStore(self._engine).all)
        for row in rows:
            zone = self._zones.by_id.get(row.zone_id)
            if zone is None or zone.config.account_id not in accounts:
                continue
            if row.clear_state != "Completed" or row.clear_start is None or row.clear_end is None:
                continue
            end = row.clear_end.replace(tzinfo=row.clear_end.tzinfo or UTC)
            if end < since:
                continue
            start = row.clear_start.replace(tzinfo=row.clear_start.tzinfo or UTC)
            await self.publish(
                zone.config.account_id,
                {"type": "edgecache.reserve", "zone_id": row.zone_id},
                "reserve.clearCompleted",
                f"reserve.clearCompleted:{row.zone_id}:{start.isoformat()}",
                {
                    "zone_id": row.zone_id,
                    "start_ts": start.isoformat(),
                    "end_ts": end.isoformat(),
                    "objects_removed": row.clear_objects,
                    "bytes_removed": row.clear_bytes,
                },
            )

    async def poll(self) -> None:
        """One look for finished jobs and clears, and the event log's upkeep."""
        subs = await self._read(db.enabled_subscriptions)
        if subs:
            await self._job_events(subs)
            await self._reserve_events(subs)
        if time.monotonic() - self._forgot_at > 3600:
            cutoff = datetime.now(UTC) - LOG_KEEP
            await self._writer.run(lambda conn: db.forget_events(conn, cutoff))
            self._forgot_at = time.monotonic()

    async def keep(self) -> None:
        """Poll forever."""
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("event subscription poll failed")
            await asyncio.sleep(POLL_EVERY)
