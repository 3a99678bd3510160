"""Cache Reserve as a domain service: each zone's setting and its clear, with Cloudflare's rules.

Rules of this module (reference ``cloudflare-api.md`` §3):
- A zone's reserve is off until set on. The setting is runtime state kept in the control database;
  ``is_on`` answers from memory (the data plane asks on every fill).
- Clearing removes every reserve object of the zone in the background. It is refused while the
  reserve is on (:class:`ClearWhileOn`, 1152); turning the reserve on is refused while a clear is in
  progress (:class:`EnableWhileClearing`, 1153); asking for the status of a clear that never ran is
  :class:`NeverCleared` (1142). A second clear while one runs answers the running one.
- A clear is durable: it is recorded In-progress before the caller hears back, its progress is
  saved as it goes, and ``resume`` (at start) continues every clear a stop interrupted. It is its
  own record, not a purge task.
- Checks and writes of one zone are serialised (one lock per service), so two callers cannot both
  pass a check that the other's write would have failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from edgecache.config import CacheReserve
from edgecache.db.cache_reserve import CacheReserveStore, ReserveRow
from edgecache.store.disk import JobProgress
from edgecache.store.entry import Entry

log = logging.getLogger(__name__)

IN_PROGRESS = "In-progress"
COMPLETED = "Completed"
SAVE_EVERY = 1.0
"""Seconds between saves of a running clear's progress."""


class ReserveRejected(Exception):
    """A Cache Reserve request that Cloudflare's rules refuse; nothing changed."""


class ClearWhileOn(ReserveRejected):
    """A clear asked for while the reserve is on."""


class EnableWhileClearing(ReserveRejected):
    """The reserve turned on while a clear is in progress."""


class NeverCleared(ReserveRejected):
    """The status of a clear that never ran."""


@dataclass(frozen=True, slots=True)
class ClearProgress:
    """A clear as operators see it."""

    state: str
    start: datetime
    end: datetime | None
    objects: int
    bytes: int


ClearRunner = Callable[[str, JobProgress], Future[None]]
"""Starts removing a zone's reserve objects, counting into the progress; done when the future is."""


class CacheReserveService:
    """Each zone's Cache Reserve setting and clear."""

    def __init__(self, store: CacheReserveStore, run_clear: ClearRunner) -> None:
        self._store = store
        self._run_clear = run_clear
        self._rows: dict[str, ReserveRow] = {}
        self._on: set[str] = set()
        self._lock = asyncio.Lock()
        self._clears: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, JobProgress] = {}
        self._base: dict[str, tuple[int, int]] = {}

    def load(self) -> None:
        """Read every zone's state (blocking: call at start, off the event loop)."""
        self._rows = {r.zone_id: r for r in self._store.all()}
        self._on = {z for z, r in self._rows.items() if r.value == "on"}

    def is_on(self, zone_id: str) -> bool:
        """Whether the zone's reserve is on (cheap: the data plane calls it on fills and misses)."""
        return zone_id in self._on

    def setting(self, zone_id: str) -> tuple[str, datetime | None]:
        """The value and when it last changed (None: never)."""
        row = self._rows.get(zone_id)
        return ("off", None) if row is None else (row.value, row.modified_on)

    async def set(self, zone_id: str, value: str) -> tuple[str, datetime | None]:
        """Turn the reserve on or off (``value`` is "on" or "off")."""
        async with self._lock:
            row = self._row(zone_id)
            if value == "on" and row.clear_state == IN_PROGRESS:
                raise EnableWhileClearing(
                    "Cache Reserve cannot be enabled because a deletion is already in progress."
                )
            new = replace(row, value=value, modified_on=datetime.now(UTC))
            await asyncio.to_thread(self._store.save, new)
            self._rows[zone_id] = new
            if value == "on":
                self._on.add(zone_id)
            else:
                self._on.discard(zone_id)
            return new.value, new.modified_on

    async def clear(self, zone_id: str) -> ClearProgress:
        """Start clearing the zone's reserve (or answer the clear already running)."""
        async with self._lock:
            row = self._row(zone_id)
            if row.value == "on":
                raise ClearWhileOn("Turn off Cache Reserve sync to proceed with deletion.")
            if row.clear_state != IN_PROGRESS:
                row = replace(
                    row,
                    clear_state=IN_PROGRESS,
                    clear_start=datetime.now(UTC),
                    clear_end=None,
                    clear_objects=0,
                    clear_bytes=0,
                )
                await asyncio.to_thread(self._store.save, row)
                self._rows[zone_id] = row
                self._start(zone_id)
            return self._view(row)

    def status(self, zone_id: str) -> ClearProgress:
        """The zone's latest clear."""
        row = self._rows.get(zone_id)
        if row is None or row.clear_state is None:
            raise NeverCleared(
                "Unable to retrieve cache_reserve_clear setting value. The zone setting does not exist "
                "because you never performed a Cache Reserve Clear operation."
            )
        return self._view(row)

    def clears(self) -> dict[str, ClearProgress]:
        """Every zone's latest clear (for metrics)."""
        return {z: self._view(r) for z, r in self._rows.items() if r.clear_state is not None}

    def resume(self) -> None:
        """Continue every clear that a stop interrupted (call on the event loop, after ``load``)."""
        for zone_id, row in self._rows.items():
            if row.clear_state == IN_PROGRESS and zone_id not in self._clears:
                self._start(zone_id)

    async def stop(self) -> None:
        """Stop the running clears (they resume at the next start)."""
        for task in list(self._clears.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _row(self, zone_id: str) -> ReserveRow:
        return self._rows.get(zone_id) or ReserveRow(zone_id, "off", None, None, None, None, 0, 0)

    def _view(self, row: ReserveRow) -> ClearProgress:
        assert row.clear_state is not None and row.clear_start is not None
        live = self._progress.get(row.zone_id)
        objects, size = row.clear_objects, row.clear_bytes
        if live is not None and row.clear_state == IN_PROGRESS:
            base_objects, base_bytes = self._base[row.zone_id]
            objects, size = base_objects + live.objects, base_bytes + live.bytes
        return ClearProgress(row.clear_state, row.clear_start, row.clear_end, objects, size)

    def _start(self, zone_id: str) -> None:
        self._clears[zone_id] = asyncio.get_running_loop().create_task(self._clear(zone_id))

    async def _clear(self, zone_id: str) -> None:
        # The writer thread adds to ``progress``; this task only reads it, adding the counts saved
        # by earlier runs of this clear (before a restart).
        row = self._rows[zone_id]
        base = self._base[zone_id] = (row.clear_objects, row.clear_bytes)
        progress = self._progress[zone_id] = JobProgress()
        done = asyncio.wrap_future(self._run_clear(zone_id, progress))
        try:
            while True:
                finished, _ = await asyncio.wait({done}, timeout=SAVE_EVERY)
                async with self._lock:
                    row = replace(
                        self._rows[zone_id],
                        clear_objects=base[0] + progress.objects,
                        clear_bytes=base[1] + progress.bytes,
                    )
                    if finished:
                        done.result()
                        row = replace(row, clear_state=COMPLETED, clear_end=datetime.now(UTC))
                    await asyncio.to_thread(self._store.save, row)
                    self._rows[zone_id] = row
                if finished:
                    return
        except Exception:
            log.exception("Cache Reserve clear of zone %s failed; it resumes at the next start", zone_id)
        finally:
            self._clears.pop(zone_id, None)
            self._progress.pop(zone_id, None)


def eligible(rules: CacheReserve, entry: Entry) -> bool:
    """Cloudflare's eligibility for the reserve: fresh for at least the zone's minimum TTL, the
    origin sent a Content-Length, and not too large."""
    return (
        entry.length_known
        and entry.freshness_lifetime >= rules.min_ttl
        and len(entry.body) <= rules.max_object_bytes
    )


def eligibility(rules: Mapping[str, CacheReserve]) -> Callable[[Entry], bool]:
    """The data plane's eligibility test over every configured zone's rules (by zone id); objects
    of zones no longer configured are never eligible."""

    def test(entry: Entry) -> bool:
        zone_rules = rules.get(entry.zone)
        return zone_rules is not None and eligible(zone_rules, entry)

    return test
