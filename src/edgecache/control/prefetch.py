"""Prefetch (cache warm-up) jobs: fetch each target through this node's data plane, so it is cached.

Rules:
- A prefetch request goes through the same path as a client's (the data listener on loopback),
  with the headers the user gave, so it selects and stores the same variant a client would get.
- Targets are fetched with bounded concurrency and a per-target time limit; each task ends
  ``success`` (2xx), ``invalid`` (the origin answered with another status: FailType
  ``originPullFailed``, the status in FailMessage), ``failed`` (the origin could not be reached:
  our 502/504, or a connection error) or ``timeout``.
- Every target and header is validated before anything is charged; the quota is charged with the
  write of the tasks (given back if it fails); a rejected request changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from edgecache.control.quotas import QuotaService
from edgecache.db.tasks import NewTask, TaskRow, TaskStore
from edgecache.edge.zones import ZoneRuntime

log = logging.getLogger(__name__)

Warm = Callable[[str, str, Mapping[str, str]], Awaitable[int]]
"""``warm(host, path_and_query, headers) -> status``: one request through the data plane."""


@dataclass(frozen=True, slots=True)
class PrefetchJob:
    """An accepted prefetch: its job id, and the targets refused because of their host."""

    job_id: str
    refused: tuple[str, ...]


def split_target(url: str) -> tuple[str, str] | None:
    """``(host, path?query)`` of an http(s) URL, or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class PrefetchService:
    """Creates prefetch jobs and runs them in the background."""

    def __init__(
        self,
        *,
        task_store: TaskStore,
        quotas: QuotaService,
        warm: Warm,
        concurrency: int,
        timeout: float,
    ) -> None:
        self._tasks = task_store
        self._quotas = quotas
        self._warm = warm
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        zone: ZoneRuntime,
        targets: Sequence[str],
        headers: Mapping[str, str],
        *,
        principal: str,
        dialect: str,
    ) -> PrefetchJob:
        """Record the job and start warming; targets outside the zone are refused, not fetched.

        Raises :class:`~edgecache.control.quotas.QuotaExceeded`, ``ValueError`` for a target that is
        not an http(s) URL.
        """
        accepted: list[tuple[str, str, str]] = []
        refused: list[str] = []
        for target in targets:
            parsed = split_target(target)
            if parsed is None:
                raise ValueError(f"not an http(s) URL: {target}")
            if parsed[0] not in zone.hostnames:
                refused.append(target)
            else:
                accepted.append((target, *parsed))
        job_id = uuid.uuid4().hex
        if not accepted:
            return PrefetchJob(job_id, tuple(refused))
        now = datetime.now(UTC)

        def record() -> list[TaskRow]:
            with self._quotas.reserve(zone.config, {"prefetch_url": len(accepted)}):
                self._tasks.create_job(
                    job_id=job_id,
                    kind="prefetch",
                    zone_id=zone.config.id,
                    items=[NewTask(t, "prefetch_url", host) for t, host, _ in accepted],
                    principal=principal,
                    dialect=dialect,
                    created_at=now,
                )
            return self._tasks.by_job(job_id)

        rows = await asyncio.to_thread(record)
        for row, (_, host, path) in zip(rows, accepted, strict=True):
            task = asyncio.get_running_loop().create_task(self._run(row.id, host, path, dict(headers)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return PrefetchJob(job_id, tuple(refused))

    async def _run(self, task_id: int, host: str, path: str, headers: dict[str, str]) -> None:
        async with self._slots:
            fail_type: str | None = None
            message: str | None = None
            try:
                status = await asyncio.wait_for(self._warm(host, path, headers), self._timeout)
            except TimeoutError:
                outcome, fail_type = "timeout", "taskFailed"
                message = f"not fetched within {self._timeout:g} s"
            except OSError as exc:
                outcome, fail_type, message = "failed", "taskFailed", f"data plane unreachable: {exc}"
            else:
                if 200 <= status < 300:
                    outcome = "success"
                elif status in (502, 504):
                    outcome, fail_type = "failed", "originPullFailed"
                    message = f"Origin-pull failure: the origin could not be reached (status {status})"
                else:
                    outcome, fail_type = "invalid", "originPullFailed"
                    message = f"The origin responded with status {status}"
        try:
            await asyncio.to_thread(
                self._tasks.finish_task,
                task_id,
                outcome,
                datetime.now(UTC),
                fail_type=fail_type,
                fail_message=message,
            )
        except Exception:
            log.exception("recording the end of prefetch task %d failed", task_id)

    async def drain(self) -> None:
        """Wait for every running prefetch (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
