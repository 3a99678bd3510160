"""What the console's Live page plots: one sample per second of the node's metrics.

Rules:
- The figures come from the same Prometheus registry that ``/metrics`` exposes, so the console and
  a scraper never disagree; each tier's object and byte gauges are named in ``TIER_GAUGES``.
- Counters become per-second rates by differencing consecutive samples; gauges are shown as read.
- The sampler runs only while someone watches: it starts with the first subscriber and stops a
  minute after the last one leaves. It keeps the last ``HISTORY`` samples, so a page that opens
  starts with a chart that is already filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.registry import CollectorRegistry

HISTORY = 300
IDLE_STOP = 60.0
"""Seconds the sampler keeps running after the last subscriber left (a page reload is not a gap)."""
CACHE_STATUSES = ("HIT", "MISS", "EXPIRED", "REVALIDATED", "UPDATING", "STALE", "BYPASS", "DYNAMIC")

TIER_GAUGES = (
    ("edgecache_stored_entries", "memory", 0),
    ("edgecache_stored_bytes", "memory", 1),
    ("edgecache_disk_entries", "disk", 0),
    ("edgecache_disk_bytes", "disk", 1),
    ("edgecache_reserve_entries", "reserve", 0),
    ("edgecache_reserve_bytes", "reserve", 1),
)
"""The gauges behind the Live page's per-tier chart: (metric, tier, 0 = objects / 1 = bytes); the
reserve's are per zone and summed here."""


@dataclass(frozen=True, slots=True)
class Reading:
    """Raw counter and gauge values at one instant."""

    at: float
    responses: dict[str, float]
    sent_bytes: float
    origin_sum: float
    origin_count: float
    tiers: dict[str, tuple[float, float]]
    """Tier name → (stored objects, stored bytes)."""
    ledger_position: float
    reclaimer_backlog: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of the Live page: rates over the last interval and current gauges."""

    at: float
    requests_per_s: float
    by_status_per_s: dict[str, float]
    hit_ratio: float | None
    """Share of answers that were HIT in the interval, None when there were none."""
    sent_bytes_per_s: float
    origin_ms: float | None
    """Mean time to the origin's response head over the interval, None without origin fetches."""
    tiers: dict[str, tuple[float, float]]
    purges_per_s: float
    reclaimer_backlog: float

    def as_json(self) -> dict[str, Any]:
        """The sample as the Live page's script reads it."""
        return {
            "t": self.at,
            "rps": self.requests_per_s,
            "status": self.by_status_per_s,
            "hit_ratio": self.hit_ratio,
            "bytes": self.sent_bytes_per_s,
            "origin_ms": self.origin_ms,
            "tiers": {name: {"objects": o, "bytes": b} for name, (o, b) in self.tiers.items()},
            "purges": self.purges_per_s,
            "backlog": self.reclaimer_backlog,
        }


def read(registry: CollectorRegistry) -> Reading:
    """Collect the registry once and pick out what the Live page shows."""
    values: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            values.setdefault(s.name, []).append((s.labels, s.value))

    def one(name: str) -> float:
        return sum(v for _, v in values.get(name, ()))

    responses = {s: 0.0 for s in CACHE_STATUSES}
    for labels, v in values.get("edgecache_responses_total", ()):
        responses[labels.get("cache_status", "")] = v
    tiers: dict[str, list[float]] = {}
    for name, tier, slot in TIER_GAUGES:
        for _, v in values.get(name, ()):
            tiers.setdefault(tier, [0.0, 0.0])[slot] += v
    return Reading(
        at=time.time(),
        responses=responses,
        sent_bytes=one("edgecache_sent_bytes_total"),
        origin_sum=one("edgecache_origin_latency_seconds_sum"),
        origin_count=one("edgecache_origin_latency_seconds_count"),
        tiers={name: (o, b) for name, (o, b) in tiers.items()},
        ledger_position=one("edgecache_purge_ledger_position"),
        reclaimer_backlog=one("edgecache_purge_pending"),
    )


def difference(before: Reading, after: Reading) -> Sample:
    """The sample for the interval between two readings."""
    span = max(after.at - before.at, 1e-3)
    by_status = {
        s: max(0.0, after.responses.get(s, 0.0) - before.responses.get(s, 0.0)) / span
        for s in after.responses
    }
    total = sum(by_status.values())
    fetches = after.origin_count - before.origin_count
    return Sample(
        at=after.at,
        requests_per_s=total,
        by_status_per_s=by_status,
        hit_ratio=by_status.get("HIT", 0.0) / total if total else None,
        sent_bytes_per_s=max(0.0, after.sent_bytes - before.sent_bytes) / span,
        origin_ms=(after.origin_sum - before.origin_sum) / fetches * 1000 if fetches > 0 else None,
        tiers=after.tiers,
        purges_per_s=max(0.0, after.ledger_position - before.ledger_position) / span,
        reclaimer_backlog=after.reclaimer_backlog,
    )


@dataclass
class LiveStats:
    """Samples the registry every ``interval`` seconds while anyone subscribes."""

    registry: CollectorRegistry
    interval: float = 1.0
    history: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _subscribers: set[asyncio.Queue[Sample]] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _last_left: float = 0.0

    def subscribe(self) -> asyncio.Queue[Sample]:
        """A queue that receives every new sample; :meth:`unsubscribe` it when done."""
        queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=10)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Sample]) -> None:
        """Stop delivering samples to ``queue``."""
        self._subscribers.discard(queue)
        if not self._subscribers:
            self._last_left = time.monotonic()

    async def stop(self) -> None:
        """Stop sampling (at shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        before = read(self.registry)
        while self._subscribers or time.monotonic() - self._last_left < IDLE_STOP:
            await asyncio.sleep(self.interval)
            after = read(self.registry)
            sample = difference(before, after)
            before = after
            self.history.append(sample)
            for queue in self._subscribers:
                if queue.full():
                    # A reader that fell behind skips the oldest second rather than stall the others.
                    queue.get_nowait()
                queue.put_nowait(sample)
