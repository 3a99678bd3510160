"""The reclaimer: frees what purges matched, in the background, then compacts the epoch index.

Theory of operation:
- A purge is in effect the moment the epoch index has it (every lookup checks it). The reclaimer
  makes that cheap to keep true: it finds the matched entries through the tier's indexes (tag →
  keys, ordered keys for hosts, prefixes and URL variants, zone → keys), deletes them (hard) or
  marks them stale from the purge's time (soft), so memory is really released.
- It never holds the event loop for long (target: no stall over 10 ms, measured by
  ``edgecache.looplag`` in ``bench/purge_api.py``): candidates are read from the tier a page of
  ``PAGE`` keys at a time (a purge of everything at a million entries never builds the zone's whole
  key list; a tag on more than ``TAG_SNAPSHOT_MAX`` entries pages through its zone rather than
  copying its key set at once), and it yields to the loop whenever ``SLICE`` seconds of work have
  passed.
- Compaction: the rows of purges up to S can be forgotten once every purge up to S has been
  reclaimed and no origin fetch with ``stored_seq < S`` is still in flight (such a fetch's entry is
  checked against the index when it is stored, so the rows must still be there). It forgets
  ``COMPACT_PURGES`` purges at a time, yielding between them.
- Whenever reclaims have freed ``TRIM_AFTER_BYTES`` of the tier, ``release_memory`` (when given)
  runs, and the reclaimer waits for it before going on: glibc keeps freed memory in its arenas until
  ``malloc_trim``, and a trim holds the allocator's lock for as long as it has memory to return, so
  a mass purge is trimmed in steps as it goes, and once more for its rest when the queue drains.
- ``on_reclaimed(purge, matched)`` reports, per purge and selector, how many entries were removed
  or marked stale: this node's acknowledgement, which completes the purge's tasks. Entries a lookup
  removed or marked before the reclaimer got there are counted too (``lookup_credits.py``), so the
  counts do not depend on which of the two came first. An entry that several selectors of one
  purge cover counts once, under the first of them (a soft purge leaves it in place, where the
  later ones would find it again).
- With a persistent tier, each purge is then a job on the disk writer (:class:`DiskReclaim`): the
  same selectors over the disk's indexes, a few thousand records per transaction, and the disk's
  ``reclaimed_upto`` moved to the purge in the transaction that finishes it (the purges reclaimed
  in one pass, see ``gather``, are one job, each purge's part run to its end in turn). The memory
  part of the next purge does not wait for it (the writer runs the jobs in purge order); a purge is
  acknowledged, and its epoch rows may be compacted, only once its job has finished, in purge
  order: until then a disk copy is still hidden by the index, and after a crash the purge is
  replayed from the ledger.
- ``gather`` (a worker process sets it, decision 0014): once a purge arrives, the reclaimer waits
  that long for more before it reclaims, so a burst of purges pays one wake-up of the reclaimer, of
  the disk writer and of the acknowledgement path instead of one each. The epoch index has every
  purge already (it is in effect); only freeing memory and the tasks' success wait.
- ``spacing`` (a single-process node sets it): a reclaiming pass starts at least that long after
  the previous one started. A lone purge is reclaimed at once; a stream of purges is reclaimed a
  few at a time, with the wake-ups, the disk job and the acknowledgements of one pass shared, as
  ``gather`` does for a worker (decision 0015, third addendum).
- A pass ends once it has reclaimed for ``PASS_MAX``, with purges still queued: under a stream faster
  than the reclaimer, those reclaimed so far get their disk job and acknowledgements at once.
- ``hold()`` / ``release()`` keep purges queued without reclaiming them. Nothing in the node holds
  it; tests do, to prove that the lookup-time check alone puts a purge in effect (the reclaimer
  usually wins the race with the next request, which would hide that check's loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from functools import partial

from edgecache.edge.lookup_credits import LookupCredits
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url, matches
from edgecache.store.base import Tier
from edgecache.store.disk import JOB_STEP, DiskStore, WriteView
from edgecache.store.entry import VARIANT_SEP

log = logging.getLogger(__name__)

SLICE = 0.001
"""Seconds of reclaiming between yields to the event loop (checked every ``CLOCK_EVERY`` entries, at
4 to 10 µs an entry)."""
CLOCK_EVERY = 64
"""Entries between two reads of the clock (a read costs about as much as examining one entry)."""
PAGE = 1024
"""Keys read from the tier at a time for host, prefix and zone selectors (O(log n + PAGE) a read)."""
TAG_SNAPSHOT_MAX = 65536
"""A tag on more entries than this is reclaimed by paging through its zone's keys (see ``_candidates``)."""
SPACING = 0.05
"""The ``spacing`` a single-process node gives its reclaimer: at 50 purges a second, about three
purges a pass."""
PASS_MAX = 0.1
"""Seconds of reclaiming after which a pass ends, and the next begins: under a stream of purges
faster than the reclaimer (or arriving during a mass purge), the purges reclaimed so far get their
disk job and their acknowledgements, instead of waiting for the stream to pause."""
COMPACT_EVERY = 1.0
COMPACT_PURGES = 256
"""Purges forgotten by the epoch index between yields (O(their selectors) each)."""
TRIM_AFTER_BYTES = 16 << 20
"""Tier bytes freed by reclaims before ``release_memory`` runs. A trim walks the whole heap, so it is
not worth running for a few entries; and glibc holds an arena's lock while it returns that arena's
free pages, so every allocation of the event loop waits for it: trimmed in steps of this size, a
mass purge of a million entries costs trims of 2-10 ms of CPU each (``bench/reclaim_stalls.py``, the
higher figure on a loaded machine), where one trim at its end took 85-112 ms."""


class Reclaimer:
    """Background removal of purged entries and compaction of the epoch index."""

    def __init__(
        self,
        store: Tier,
        index: EpochIndex,
        oldest_fetch_seq: Callable[[], int | None],
        on_reclaimed: Callable[[Purge, dict[Selector, int]], None] | None = None,
        release_memory: Callable[[], Awaitable[object]] | None = None,
        disk: DiskStore | None = None,
        credits: LookupCredits | None = None,
        gather: float = 0.0,
        spacing: float = 0.0,
    ) -> None:
        """``gather``: seconds to let purges accumulate after the first one arrives before reclaiming
        them together (0: at once); ``spacing``: the least time between the starts of two passes
        (0: none); see the module rules."""
        self._store = store
        self._gather = gather
        self._spacing = spacing
        self._pass_at = -spacing
        """When the last pass started (monotonic)."""
        self._tick: asyncio.TimerHandle | None = None
        self._credits = LookupCredits() if credits is None else credits
        self._release_memory = release_memory
        self._disk = disk
        self._compact_limit: int | None = None
        self._index = index
        self._oldest_fetch_seq = oldest_fetch_seq
        self._on_reclaimed = on_reclaimed
        self._queue: deque[Purge] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reclaimed_upto = 0
        self.compacted_upto = 0
        self.removed = 0
        self.marked_stale = 0
        self._busy = False
        self._last_yield = 0.0
        self._freed = 0
        self._used = 0
        """The tier's ``bytes_used`` when the running reclaim last counted what it freed."""
        self._trimmed = False
        """A trim ran during the reclaims since the queue last drained."""
        self._trimming = False
        """A release of freed memory is running (``drain`` waits for it)."""
        self._released = asyncio.Event()
        self._released.set()
        self._disk_jobs: deque[tuple[Purge, dict[Selector, int], DiskReclaim, _Jobs]] = deque()
        self._disk_failed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop ``_run`` runs on, which a disk job's end wakes."""

    def hold(self) -> None:
        """Stop reclaiming after the purge in progress; purges queue up until ``release()``."""
        self._released.clear()

    def release(self) -> None:
        """Reclaim again, starting with what queued while held."""
        self._released.set()

    def enqueue(self, purge: Purge) -> None:
        """Schedule a purge that the epoch index already has."""
        self._queue.append(purge)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Purges not reclaimed yet."""
        return len(self._queue)

    def start(self) -> None:
        """Run in the background on the current loop."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._tick = loop.call_later(COMPACT_EVERY, self._compact_tick)

    def _compact_tick(self) -> None:
        # One timer a second rather than a timeout on every wait: a purge's wake-up then costs no
        # timer and no extra task (``asyncio.wait_for`` makes both).
        self._wake.set()
        self._tick = asyncio.get_running_loop().call_later(COMPACT_EVERY, self._compact_tick)

    async def stop(self) -> None:
        """Stop the background tasks."""
        if self._tick is not None:
            self._tick.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> None:
        """Wait until every enqueued purge has been reclaimed, and the memory it freed released (for
        tests and benchmarks: a trim that outlived its purge would be counted against the next)."""
        while self._queue or self._busy or self._disk_jobs or self._trimming:
            await asyncio.sleep(0.001)

    def _disk_job_ended(self, jobs: _Jobs, done: Future[None]) -> None:
        """On the disk writer's thread (or the loop's, for a job already ended): hand its outcome
        to the loop."""
        assert self._loop is not None  # a job is run only by ``_run``
        self._loop.call_soon_threadsafe(self._disk_job_settled, jobs, done)

    def _disk_job_settled(self, jobs: _Jobs, done: Future[None]) -> None:
        """On the loop: the purges of ``jobs`` may be acknowledged (their outcome read once for
        them all, not a locked read of the future per purge)."""
        jobs.error = done.exception()
        jobs.ended = True
        # Acknowledged here, in this callback: no task to wake for it.
        self._acknowledge()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            # No yield for an API request's answer before the pass: the callback that applies a
            # purge wakes its request before the reclaimer (``PurgeService._settle_on_loop``).
            await self._wake.wait()
            if self._gather and self._queue:
                await asyncio.sleep(self._gather)
            elif self._spacing and self._queue:
                early = self._pass_at + self._spacing - time.monotonic()
                if early > 0:
                    await asyncio.sleep(early)
            if self._queue:
                self._pass_at = time.monotonic()
            self._wake.clear()
            await self._released.wait()
            batch: list[tuple[Purge, dict[Selector, int], DiskReclaim]] = []
            started = time.monotonic()
            self._last_yield = time.perf_counter()
            while self._queue and self._released.is_set():
                purge = self._queue[0]
                self._busy = True
                try:
                    matched = await self.reclaim(purge)
                    if self._credits:
                        # Lookups removed or marked nothing since the last claim, usually: no pass
                        # over their records.
                        matched = _plus(matched, self._credits.claim_soft(purge, self._store.peek))
                except Exception:
                    log.exception("reclaiming purge %d failed; its epoch rows stay in force", purge.seq)
                    matched = {}
                    self._failed(purge)
                finally:
                    self._queue.popleft()
                    self._busy = False
                if self._disk is None:
                    self._finish(purge, matched)
                else:
                    batch.append((purge, matched, DiskReclaim(purge, self._disk_failed)))
                if self._queue and time.monotonic() - started >= PASS_MAX:
                    self._wake.set()  # the rest in the next pass
                    break
                # A backlog of purges that find nothing in memory (a replay at start-up, a follower
                # catching up) reaches no step: the slice is kept here, between purges.
                await self._pause()
            if batch and self._disk is not None:
                # The disk's part runs on its writer, in purge order, one job for the purges taken
                # together (one hand-over to the writer thread and back); the next purges' memory
                # part need not wait for it. Acknowledged in order by ``_acknowledge``.
                jobs = _Jobs([job for _, _, job in batch])
                for purge, matched, job in batch:
                    self._disk_jobs.append((purge, matched, job, jobs))
                # Its end acknowledges them in a callback on the loop (no asyncio future chained to
                # it, no task woken: one wake-up of the loop, without the chain's callbacks).
                self._disk.run_job(jobs).add_done_callback(partial(self._disk_job_ended, jobs))
            # The rest of a large reclaim (less than a step), now rather than after the next one.
            if self._trimmed or self._freed >= TRIM_AFTER_BYTES:
                await self._trim_if_due(self._freed if self._trimmed else None)
            self._trimmed = False
            if self.reclaimed_upto > self.compacted_upto:
                await self.compact()

    async def _trim_if_due(self, threshold: int | None = None) -> None:
        """Run ``release_memory`` once ``threshold`` bytes of the tier (default ``TRIM_AFTER_BYTES``;
        always more than none) have been freed since the last time, and wait for it: in the middle
        of a large reclaim too, so that each trim returns a bounded amount of memory."""
        limit = TRIM_AFTER_BYTES if threshold is None else threshold
        if self._release_memory is None or self._freed < max(1, limit):
            return
        self._freed = 0
        self._trimmed = self._trimming = True
        try:
            await self._release_memory()
        except Exception:
            log.exception("releasing freed memory failed")
        finally:
            self._trimming = False

    async def _pause(self) -> None:
        """Yield to the event loop if this slice of work has lasted ``SLICE`` seconds."""
        now = time.perf_counter()
        if now - self._last_yield >= SLICE:
            await asyncio.sleep(0)
            self._last_yield = time.perf_counter()

    def _acknowledge(self) -> None:
        """Acknowledge each purge whose disk job has finished too, in purge order; then forget the
        epoch rows that allows (a slice here, the rest by ``_run``)."""
        while self._disk_jobs:
            purge, matched, job, jobs = self._disk_jobs[0]
            if not jobs.ended:
                break  # its end calls this again
            try:
                if jobs.error is not None:
                    raise jobs.error
                # Most objects are in both tiers (fills are written through): the larger count is
                # the closer one to the number of distinct objects. What lookups removed counts
                # with the tier they found it in (see ``lookup_credits.py``).
                memory, disk = matched, job.counts
                if self._credits:
                    memory = _plus(memory, self._credits.claim_hard(purge, on_disk=False))
                    disk = _plus(disk, self._credits.claim_hard(purge, on_disk=True))
                matched = {s: max(memory.get(s, 0), disk.get(s, 0)) for s in purge.selectors}
            except Exception:
                log.exception("reclaiming purge %d on disk failed; replayed at the next start", purge.seq)
                matched = {}
                self._failed(purge)
            self._disk_jobs.popleft()
            self._finish(purge, matched)
        upto = self._compact_upto()
        if upto > self.compacted_upto:
            self._index.compact(upto, COMPACT_PURGES)
            if self._index.compactable(upto):
                self._wake.set()  # the rest a slice at a time, by ``_run``
            else:
                self.compacted_upto = upto

    def _failed(self, purge: Purge) -> None:
        """Keep the epoch rows of this purge and every later one (and the disk's reclaimed
        position before it, so that a restart replays it)."""
        self._disk_failed.set()
        if self._compact_limit is None:
            self._compact_limit = purge.seq - 1

    def _finish(self, purge: Purge, matched: dict[Selector, int]) -> None:
        if self._credits:
            if self._disk is None:
                matched = _plus(matched, self._credits.claim_hard(purge, on_disk=False))
            self._credits.forget(purge.seq)
        self.reclaimed_upto = purge.seq
        if self._on_reclaimed is not None:
            self._on_reclaimed(purge, matched)

    async def reclaim(self, purge: Purge) -> dict[Selector, int]:
        """Delete or mark stale every stored entry the purge covers; returns how many per selector."""
        counts: dict[Selector, int] = {}
        seen = 0
        hard = purge.mode is Mode.DELETE
        store = self._store
        self._used = store.bytes_used
        for i, selector in enumerate(purge.selectors):
            if type(selector) is Tag and not store.tag_size(purge.zone, selector.tag):
                # A tag nothing in memory carries (the usual tag purge): no pages to read.
                counts[selector] = 0
                continue
            done = 0
            for page in self._candidates(purge.zone, selector):
                for key in page:
                    seen += 1
                    if seen % CLOCK_EVERY == 0:
                        await self._step()
                    entry = store.peek(key)
                    if entry is None or entry.stored_seq >= purge.seq:
                        continue
                    if not matches(selector, purge.zone, entry.zone, entry.key, entry.tags):
                        continue
                    if not hard and _counted_before(purge, i, entry.zone, entry.key, entry.tags):
                        continue
                    if hard:
                        # Bounded by the purge, as the ``Tier`` contract asks of every purge's
                        # removal; it matters only to a ``TierChain`` (tests): a node gives the
                        # reclaimer its memory tier, and the peek above already skipped newer entries.
                        store.delete(key, purge.seq)
                        self.removed += 1
                    else:
                        store.mark_stale(key, purge.at)
                        self.marked_stale += 1
                    done += 1
                if page:
                    # An empty page freed nothing and took no time: no step to count.
                    await self._step()
            counts[selector] = done
        return counts

    async def _step(self) -> None:
        """Between entries of a reclaim: count what it freed, trim when a step's worth is, and
        yield to the loop when the slice is over."""
        used = self._store.bytes_used
        self._freed += max(0, self._used - used)
        self._used = used
        await self._trim_if_due()
        await self._pause()

    def _candidates(self, zone: str, selector: Selector) -> Iterator[list[str]]:
        """The keys a selector may cover, page by page (each page read after the previous one was
        dealt with, so deletes in between are seen)."""
        store = self._store
        match selector:
            case Url(key=key):
                if VARIANT_SEP in key:
                    yield [key, *store.keys_with_prefix(key + VARIANT_SEP)]
                else:
                    yield store.variants(key)
            case Tag(tag=tag):
                if store.tag_size(zone, tag) <= TAG_SNAPSHOT_MAX:
                    yield store.keys_for_tag(zone, tag)
                else:
                    # A tag set cannot be read in pages, and copying a million keys holds the loop
                    # for ~30 ms: page through the zone instead (``matches`` keeps the tagged ones).
                    yield from _pages(lambda after: store.keys_for_zone(zone, after, PAGE))
            case Host(host=host):
                yield from _pages(lambda after: store.keys_with_prefix(f"http://{host}/", after, PAGE))
            case Prefix(prefix=prefix):
                yield from _pages(lambda after: store.keys_with_prefix("http://" + prefix, after, PAGE))
            case Everything():
                yield from _pages(lambda after: store.keys_for_zone(zone, after, PAGE))

    def _compact_upto(self) -> int:
        """How far the epoch rows may be forgotten now (``compacted_upto`` or less: nothing to do)."""
        upto = self.reclaimed_upto
        if upto <= self.compacted_upto:
            return upto  # nothing reclaimed since: no in-flight fetch to ask about
        oldest = self._oldest_fetch_seq()
        if oldest is not None:
            upto = min(upto, oldest)
        if self._compact_limit is not None:
            upto = min(upto, self._compact_limit)
        return upto

    async def compact(self) -> int:
        """Forget the epoch rows that no stored entry or in-flight fetch can need any more."""
        upto = self._compact_upto()
        if upto <= self.compacted_upto:
            return 0
        removed = self._index.compact(upto, COMPACT_PURGES)
        while self._index.compactable(upto):
            await asyncio.sleep(0)
            removed += self._index.compact(upto, COMPACT_PURGES)
        self.compacted_upto = upto
        return removed


def _plus(counts: dict[Selector, int], more: dict[Selector, int]) -> dict[Selector, int]:
    """Two per-selector counts added up."""
    if not more:
        return counts
    out = dict(counts)
    for selector, n in more.items():
        out[selector] = out.get(selector, 0) + n
    return out


def _counted_before(purge: Purge, i: int, zone: str, key: str, tags: tuple[str, ...]) -> bool:
    """Whether a selector before the ``i``-th of ``purge`` covers the entry: a soft purge leaves
    what it marks in place, where its later selectors find it again; it counts under the first one
    only, as a hard purge's deletion does (and as ``lookup_credits`` does)."""
    return any(matches(s, purge.zone, zone, key, tags) for s in purge.selectors[:i])


def _pages(read: Callable[[str | None], list[str]]) -> Iterator[list[str]]:
    """Every page of a paged tier selector: each starts after the last key of the one before."""
    after = None
    while True:
        page = read(after)
        if page:
            yield page
        if len(page) < PAGE:
            return
        after = page[-1]


class _Jobs:
    """Several removal jobs as one on the disk writer: each runs to its end in turn. Jobs that
    change nothing (the usual purge of what the disk does not hold) share one transaction; after one
    that changed something the rest go on in the next, so that its changes, and what runs once they
    are committed (a whole-zone removal's count), are settled before the next purge's part."""

    __slots__ = ("_jobs", "ended", "error")

    def __init__(self, jobs: list[DiskReclaim]) -> None:
        self._jobs = deque(jobs)
        self.ended = False
        """Set on the loop once the writer has run them all, or failed."""
        self.error: BaseException | None = None

    def __call__(self, view: WriteView) -> bool:
        while self._jobs:
            job = self._jobs[0]
            if not job(view):
                return False
            self._jobs.popleft()
            if job.changed and self._jobs:
                return False
        return True


class DiskReclaim:
    """A purge as a job on the disk writer: removes or marks stale what it covers on disk, a step of
    at most ``JOB_STEP`` records per transaction, then records the purge as reclaimed on disk,
    unless ``failed`` is set: an earlier purge failed (in memory or on disk) and must be replayed at
    the next start, so the disk's reclaimed position must stay before it."""

    def __init__(self, purge: Purge, failed: threading.Event | None = None) -> None:
        self.purge = purge
        self._failed = failed or threading.Event()
        self.counts: dict[Selector, int] = {}
        self._i = 0
        self._after: bytes | None = None
        self._changed = False

    @property
    def changed(self) -> bool:
        """Whether this job has changed anything on disk."""
        return self._changed

    def __call__(self, view: WriteView) -> bool:
        try:
            return self._step(view)
        except Exception:
            self._failed.set()
            raise

    def _step(self, view: WriteView) -> bool:
        purge = self.purge
        hard = purge.mode is Mode.DELETE
        while self._i < len(purge.selectors):
            selector = purge.selectors[self._i]
            if hard and isinstance(selector, Everything):
                # Counted once committed, less what lookups removed first (their credit counts it).
                finished = view.wipe_zone(purge.zone, None, purge.seq, self._wiped)
                self._changed = True
                if not finished:
                    return False
                self._i += 1
                continue
            handles = self._candidates(view, selector)
            done = self.counts.get(selector, 0)
            for handle in handles:
                entry = view.peek(handle)
                if entry is None or entry.stored_seq >= purge.seq:
                    continue
                if not matches(selector, purge.zone, entry.zone, entry.key, entry.tags):
                    continue
                if not hard and _counted_before(purge, self._i, entry.zone, entry.key, entry.tags):
                    continue
                # A lookup that found it first has queued its delete, and its credit counts it
                # (lookup_credits). Removed here all the same: that delete may commit after this job
                # has moved reclaimed_upto past the purge (decision 0009, addendum on the crash
                # test). A delete committed before this job does not hide a refill put after it.
                credited = view.removing(entry.key, entry.stored_seq)
                if hard:
                    # And from here on a lookup does not find it.
                    view.taking(entry.key)
                    view.delete(handle)
                else:
                    view.mark_stale(handle, purge.at)
                self._changed = True
                if handle[:1] == b"c" and not credited:
                    done += 1
            self.counts[selector] = done
            if len(handles) >= JOB_STEP:
                self._after = handles[-1]
                return False
            self._i += 1
            self._after = None
        if not self._failed.is_set():
            view.set_reclaimed(purge.seq, changed=self._changed)
        return True

    def _wiped(self, cache: int, reserve: int, freed: int) -> None:
        selector = Everything()
        self.counts[selector] = self.counts.get(selector, 0) + cache

    def _candidates(self, view: WriteView, selector: Selector) -> list[bytes]:
        after = self._after
        match selector:
            case Url(key=key):
                return view.scan_prefix(key, after, JOB_STEP, self.purge.zone)
            case Tag(tag=tag):
                return view.scan_tag(self.purge.zone, tag, after, JOB_STEP)
            case Host(host=host):
                return view.scan_prefix(f"http://{host}/", after, JOB_STEP, self.purge.zone)
            case Prefix(prefix=prefix):
                return view.scan_prefix("http://" + prefix, after, JOB_STEP, self.purge.zone)
            case Everything():
                return view.scan_zone(self.purge.zone, after, JOB_STEP)
        return []
