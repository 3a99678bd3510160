"""Task housekeeping for one control plane: tasks nobody acknowledged in time end ``timeout``, and
tasks older than the retention are deleted.

Runs as a background loop; a failed pass is logged and the next one tries again, because a
database that is briefly unavailable must not stop the housekeeping for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from edgecache.config import Tasks
from edgecache.db.tasks import TaskStore

log = logging.getLogger(__name__)

RETENTION_EVERY = 3600.0
"""Seconds between retention passes over the task table (each deletes a range per zone)."""


async def keep_tasks(tasks: TaskStore, cfg: Tasks, zone_ids: Sequence[str]) -> None:
    """Expire unacknowledged tasks every few seconds and forget old ones every hour, forever."""
    last_forget = 0.0
    while True:
        await asyncio.sleep(min(5.0, cfg.timeout / 4))
        now = datetime.now(UTC)
        try:
            expired = await asyncio.to_thread(tasks.expire, now - timedelta(seconds=cfg.timeout), now)
            if expired:
                log.warning(
                    "%d tasks timed out: not acknowledged within %g s",
                    expired,
                    cfg.timeout,
                    extra={"event": "tasks_timeout", "count": expired, "timeout_s": cfg.timeout},
                )
            if time.monotonic() - last_forget >= RETENTION_EVERY:
                cutoff = now - timedelta(days=cfg.retention_days)
                await asyncio.to_thread(tasks.forget, cutoff, list(zone_ids))
                last_forget = time.monotonic()
        except Exception:
            log.exception("task housekeeping failed")
