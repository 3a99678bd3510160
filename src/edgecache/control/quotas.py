"""Content-management quotas per zone and task type: items per request (batch) and per day.

Rules:
- Every dialect is held to the same quotas (the EdgeOne dialect reports them through
  DescribeContentQuota; the Cloudflare dialect has its own per-plan item limits on top).
- A purge-all request counts 1; every other request counts one per target (reference
  ``edgeone-api.md`` §6, DERIVED).
- The day is the UTC day. Today's usage is read once from the task table (durable across restarts),
  then counted in memory; ``charge`` is atomic (a lock), so concurrent requests cannot overshoot.
- A rejected request is not charged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgecache.config import Zone


class QuotaExceeded(Exception):
    """A request over the batch or daily quota."""

    def __init__(self, task_type: str, kind: str, limit: int) -> None:
        which = "per request" if kind == "batch" else "per day"
        super().__init__(f"{task_type}: quota of {limit} {which} reached")
        self.task_type = task_type
        self.kind = kind
        self.limit = limit


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One type's quota as reported to users."""

    type: str
    batch: int
    daily: int
    daily_available: int


class QuotaService:
    """Counts task creation per (zone, type, UTC day)."""

    def __init__(
        self,
        count_since: Callable[[str, str, str, datetime], int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``count_since(zone_id, kind, type, since)`` reads durable usage (the task table)."""
        self._count_since = count_since
        self._clock = clock
        self._used: dict[tuple[str, str], tuple[datetime, int]] = {}
        self._lock = threading.Lock()

    def _today(self) -> datetime:
        now = self._clock()
        return now.replace(hour=0, minute=0, second=0, microsecond=0)

    def _usage(self, zone: Zone, task_type: str, day: datetime) -> int:
        known = self._used.get((zone.id, task_type))
        if known is not None and known[0] == day:
            return known[1]
        kind = "prefetch" if task_type.startswith("prefetch") else "purge"
        used = self._count_since(zone.id, kind, task_type, day)
        self._used[(zone.id, task_type)] = (day, used)
        return used

    def charge(self, zone: Zone, task_type: str, items: int) -> None:
        """Count ``items`` of ``task_type`` or raise :class:`QuotaExceeded` (nothing counted)."""
        quota = zone.quota(task_type)
        cost = 1 if task_type == "purge_all" else items
        if task_type != "purge_all" and items > quota.batch:
            raise QuotaExceeded(task_type, "batch", quota.batch)
        with self._lock:
            day = self._today()
            used = self._usage(zone, task_type, day)
            if used + cost > quota.daily:
                raise QuotaExceeded(task_type, "daily", quota.daily)
            self._used[(zone.id, task_type)] = (day, used + cost)

    def state(self, zone: Zone, task_type: str) -> QuotaState:
        """Batch, daily cap and what is left today."""
        quota = zone.quota(task_type)
        with self._lock:
            used = self._usage(zone, task_type, self._today())
        return QuotaState(task_type, quota.batch, quota.daily, max(0, quota.daily - used))
