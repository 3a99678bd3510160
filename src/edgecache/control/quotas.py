"""Content-management quotas per zone and task type: items per request (batch) and per day.

Rules:
- Every dialect is held to the same quotas (the EdgeOne dialect reports them through
  DescribeContentQuota; the Cloudflare dialect has its own per-plan item limits on top).
- A purge-all request counts 1; every other request counts one per target (reference
  ``edgeone-api.md`` §6, DERIVED).
- The day is the UTC day. Today's usage is read once from the task table (durable across restarts),
  then counted in memory; a charge is atomic (a lock), so concurrent requests cannot overshoot.
- A charge goes with the write it pays for: :meth:`QuotaService.reserve` wraps the transaction that
  writes the tasks (or :meth:`QuotaService.charge` is made inside it, where several writes share one
  commit), and the items are given back when that transaction fails, so the count in memory
  always equals the tasks committed (which are what a restart counts). A request is charged for all
  its task types or for none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
        self._day: tuple[datetime, datetime] | None = None
        """The current UTC day's start and the next one's, as :meth:`_today` last found them."""

    def _today(self) -> datetime:
        # Under the lock. The day is kept with its end: a ``replace`` with keywords on every
        # charge was most of the quota's work in a purge (decision 0025's addendum).
        now = self._clock()
        if self._day is not None and self._day[0] <= now < self._day[1]:
            return self._day[0]
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self._day = (day, day + timedelta(days=1))
        return day

    def _usage(self, zone: Zone, task_type: str, day: datetime) -> int:
        known = self._used.get((zone.id, task_type))
        if known is not None and known[0] == day:
            return known[1]
        kind = "prefetch" if task_type.startswith("prefetch") else "purge"
        used = self._count_since(zone.id, kind, task_type, day)
        self._used[(zone.id, task_type)] = (day, used)
        return used

    def charge(self, zone: Zone, items: Mapping[str, int]) -> Callable[[], None]:
        """Count ``items`` (task type → number of targets) now; returns what gives them back.

        Raises :class:`QuotaExceeded` when any type is over its batch or daily quota, with nothing
        counted. The caller gives the items back when the write they pay for does not commit.
        """
        costs = {t: 1 if t == "purge_all" else n for t, n in items.items()}
        for task_type, n in items.items():
            batch = zone.quota(task_type).batch
            if task_type != "purge_all" and n > batch:
                raise QuotaExceeded(task_type, "batch", batch)
        with self._lock:
            day = self._today()
            used = {t: self._usage(zone, t, day) for t in costs}
            for task_type, cost in costs.items():
                daily = zone.quota(task_type).daily
                if used[task_type] + cost > daily:
                    raise QuotaExceeded(task_type, "daily", daily)
            for task_type, cost in costs.items():
                self._used[(zone.id, task_type)] = (day, used[task_type] + cost)

        def give_back() -> None:
            with self._lock:
                for task_type, cost in costs.items():
                    known = self._used.get((zone.id, task_type))
                    # A new UTC day since the charge re-reads usage from the tasks table instead.
                    if known is not None and known[0] == day:
                        self._used[(zone.id, task_type)] = (day, known[1] - cost)

        return give_back

    @contextmanager
    def reserve(self, zone: Zone, items: Mapping[str, int]) -> Iterator[None]:
        """:meth:`charge` for the block that writes them, given back when the block raises."""
        give_back = self.charge(zone, items)
        try:
            yield
        except BaseException:
            give_back()
            raise

    def state(self, zone: Zone, task_type: str) -> QuotaState:
        """Batch, daily cap and what is left today."""
        quota = zone.quota(task_type)
        with self._lock:
            used = self._usage(zone, task_type, self._today())
        return QuotaState(task_type, quota.batch, quota.daily, max(0, quota.daily - used))
