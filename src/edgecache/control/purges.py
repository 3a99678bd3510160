"""Purges as a domain service: validate, rate-limit, record durably, apply at once.

Rules of this module:
- Dialects (Cloudflare, EdgeOne, CLI) translate their wire format into a :class:`PurgeRequest` and
  map the :class:`PurgeRejected` errors raised here onto their own codes; no wire format lives here.
- Validation happens before anything is charged, in a fixed order: item counts per plan, then each
  item (URL inside the zone, host and tag lengths, prefix shape). Then
  :meth:`PurgeService.submit` charges, all or nothing: the account's rate limit (Cloudflare dialect),
  the zone's quotas and the ledger write. A request refused at any step, or whose write fails, has
  its rate-limit tokens and quota given back and leaves no row.
- Acceptance is durable before it is acknowledged: :meth:`PurgeService.submit` returns only after the
  ledger row is committed. Purges are written by one group writer (``edgecache.db.writer``):
  purges that arrive while a commit is under way share the next transaction and its one sync, each
  in a savepoint of its own, so one that fails (its quota, a row the database refuses) is undone
  alone and the others commit. The writer thread, as each commit completes, schedules the in-memory
  application on the event loop *before* the callers resume, in ledger order, so every purge is in
  effect on this node when the API answers, whether or not its caller is still waiting.
- Acknowledgements (this node reclaimed a purge: its tasks succeed) ride in the transaction of the
  first ledger write that comes once the oldest of them is ``ACK_FOLD_AGE`` old (the younger ones
  with it); when none comes within
  ``ACK_DELAY`` seconds they get a transaction of their own. A stream of purges so costs one commit
  per purge, not two, and updates the tasks of several acknowledged purges at a time.
- What a purge was charged (the account's rate-limit tokens, the zone's quotas) is given back when
  its write does not commit, by the writer thread as the outcome is known: a caller that went away
  meanwhile cannot leave a charge behind.
- URLs name what clients fetch through this node: the scheme and port of a purge URL are ignored
  (the data plane keys on ``http`` and the bare host, see ``edge/proxy.py``), the host must be one of
  the zone's hostnames, and ``files[].headers`` select one variant through the zone's cache-key
  options.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import Bucket, PlanLimits, RateLimiter
from edgecache.db.ledger import LedgerRow, LedgerStore, NewPurge, append_in
from edgecache.db.prepared import savepoint
from edgecache.db.tasks import NewTask, TaskStore, finish_purges_in
from edgecache.db.writer import GroupWriter
from edgecache.edge.zones import ZoneRuntime
from edgecache.httpcache.key import primary_key, variant_suffix
from edgecache.httpcache.tags import normalise_tag
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url

log = logging.getLogger(__name__)

ACK_DELAY = 0.1
"""Seconds an acknowledgement waits for the next ledger write before it is committed on its own."""

ACK_FOLD_AGE = 0.05
"""Seconds the oldest gathered acknowledgement waits before a ledger write takes it, with the
younger ones (at most ``ACK_DELAY / 2``): in
a stream of purges the acknowledgements of a few purges ride in one write together, one pass over
the tasks' indexes instead of one in every write (decision 0015, third addendum)."""

MAX_TAG_LENGTH = 1024
MAX_HOST_LENGTH = 200
MAX_PREFIX_SLASHES = 31


class PurgeRejected(Exception):
    """A purge request that cannot be accepted; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyItems(PurgeRejected):
    """More items of one kind than the plan allows in one request."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(f"Exceeded maximum amount of {limit} {kind} that can be purged on a single request")
        self.kind = kind
        self.limit = limit


class TagTooLong(PurgeRejected):
    """A tag over 1024 characters."""


class InvalidTag(PurgeRejected):
    """An empty tag or one with whitespace or control characters."""


class HostTooLong(PurgeRejected):
    """A host over 200 characters."""


class InvalidHost(PurgeRejected):
    """Not a hostname, or not one of the zone's."""


class InvalidPrefix(PurgeRejected):
    """A prefix with a scheme, query or fragment, too deep, or outside the zone."""


class InvalidUrl(PurgeRejected):
    """A URL that cannot be parsed, or whose host is not one of the zone's."""


class RateLimited(PurgeRejected):
    """The account's purge bucket is empty; ``retry_after`` seconds until it is not."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "Unable to purge, rate limit reached. Please wait and consider throttling your request speed"
        )
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class FileTarget:
    """One URL to purge, optionally with the cache-key headers that select one variant."""

    url: str
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """What to purge, in the dialect-neutral form."""

    files: tuple[FileTarget, ...] = ()
    tags: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    everything: bool = False
    tag_hosts: tuple[str, ...] = ()
    """Limit the tag purges to these hostnames of the zone (EdgeOne's ``CacheTag.Domains``); empty:
    every hostname."""


@dataclass(frozen=True, slots=True)
class PurgeItem:
    """One target of a purge: what the user named, its task type, and the selectors it means (one,
    or one per hostname for a tag limited to some hostnames)."""

    target: str
    type: str
    selectors: tuple[Selector, ...]
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedPurge:
    """A purge that is durable and in effect."""

    job_id: str
    purge: Purge
    items: tuple[PurgeItem, ...] = field(compare=False)


_CLAIM = threading.Lock()
"""Decides, for a purge's write, between its caller giving up and the writer taking it."""


class _Write:
    """One purge's ledger write and what takes its outcome on the writer thread (a
    :class:`edgecache.db.writer.Taker`: no future of its own, see there)."""

    __slots__ = (
        "answer",
        "applied",
        "cancelled",
        "counts",
        "give_back",
        "items",
        "loop",
        "purge",
        "refund",
        "row",
        "service",
        "started",
        "taken",
        "zone",
    )

    def __init__(
        self,
        service: PurgeService,
        loop: asyncio.AbstractEventLoop,
        answer: asyncio.Future[Purge],
        zone: ZoneRuntime,
        counts: dict[str, int],
        row: NewPurge,
        purge: tuple[Mode, tuple[Selector, ...], float],
        items: tuple[PurgeItem, ...],
    ) -> None:
        self.service = service
        self.loop = loop
        self.answer = answer
        self.zone = zone
        self.counts = counts
        self.row = row
        self.purge = purge
        """The purge's mode, selectors and time, as it will be in effect once the write gives it a
        seq (a tuple: a frozen ``Purge`` is made once, by the write, not twice a purge)."""
        self.items = items
        self.refund: Callable[[], None] | None = None
        """What gives the account's rate-limit tokens back."""
        self.give_back: Callable[[], None] | None = None
        """What gives the zone's quota back (set on the writer thread)."""
        self.taken: list[tuple[int, dict[str, int]]] = []
        """Acknowledgements this write took, given back if it does not commit."""
        self.started = False
        self.cancelled = False
        self.applied = False
        """Set on the loop once the committed purge is in effect on this node."""

    def run(self, conn: Connection) -> Purge:
        """The write, on the writer thread, in its transaction."""
        service = self.service
        self.give_back = service._quotas.charge(self.zone.config, self.counts)
        acks = service._take_due_acks()
        self.taken = acks
        seq = append_in(conn, self.row)
        if acks:
            finish_purges_in(conn, acks, datetime.now(UTC))
        mode, selectors, at = self.purge
        return Purge(seq, self.zone.config.id, mode, selectors, at)

    def caller_gone(self, answer: asyncio.Future[Purge]) -> None:
        """On the event loop, as the caller goes away: its answer cancelled before the write ran
        takes the write with it (never run: nothing charged but the bucket, kept, see decision
        0015)."""
        if answer.cancelled():
            with _CLAIM:
                self.cancelled = not self.started

    def set_running_or_notify_cancel(self) -> bool:
        with _CLAIM:
            self.started = not self.cancelled
        return self.started

    def set_result(self, result: Purge) -> None:
        self._settled(result)

    def set_exception(self, exception: BaseException) -> None:
        # What was charged goes back, by the writer thread as the outcome is known: a caller that
        # went away meanwhile cannot leave a charge behind. The caller hears the outcome even when
        # a give-back fails.
        try:
            if self.give_back is not None:
                self.give_back()
            if self.taken:
                self.service._return_acks(self.taken)
            if self.refund is not None:
                self.refund()
        finally:
            self._settled(exception)

    def _settled(self, outcome: Purge | BaseException) -> None:
        # One wake-up of the loop both puts the purge in effect and resumes the caller (through
        # ``asyncio.wrap_future`` they were two, each a write to the loop's self-pipe).
        self.loop.call_soon_threadsafe(self.service._settle_on_loop, outcome, self)


class PurgeService:
    """Accepts purges for the zones this node serves."""

    def __init__(
        self,
        *,
        ledger_store: LedgerStore,
        task_store: TaskStore,
        quotas: QuotaService,
        limiter: RateLimiter,
        limits_for: Callable[[str], PlanLimits],
        apply: Callable[[Purge], None],
    ) -> None:
        self._tasks = task_store
        self._quotas = quotas
        self._pending: dict[int, tuple[PurgeItem, ...]] = {}
        """Items of purges not yet reclaimed, to attribute matched counts to their tasks."""
        self._acks: list[tuple[int, dict[str, int]]] = []
        self._acks_lock = threading.Lock()
        self._acks_since = 0.0
        """When the oldest acknowledgement in ``_acks`` came (monotonic)."""
        self._acks_timer = False
        """Whether a timer will look at ``_acks`` (one at a time)."""
        self._acks_queued = False
        """Whether a flush of ``_acks`` is queued on the writer and has not taken them yet: no timer
        is armed meanwhile, since that flush will take what comes in the meantime too."""
        self._limiter = limiter
        self._limits_for = limits_for
        self._apply = apply
        # One writer: ledger rows are committed, and applied, in sequence order.
        self._writer = GroupWriter(ledger_store.engine, name="edgecache-ledger")

    @property
    def commits(self) -> int:
        """Ledger transactions committed so far (purges per commit shows the grouping)."""
        return self._writer.commits

    def close(self) -> None:
        """Stop the writer thread (pending writes and acknowledgements are committed first)."""
        # Nothing is retried after this one: what it took is not given back.
        self._writer.submit(lambda conn: self._flush_acks(conn, []), atomic=True)
        self._writer.close()

    # -- validation -------------------------------------------------------------------------------

    def items(
        self, zone: ZoneRuntime, req: PurgeRequest, *, plan_limits: bool = True
    ) -> tuple[PurgeItem, ...]:
        """Validate a request against the zone (and, with ``plan_limits``, the Cloudflare plan's
        per-request item counts); return its targets as selectors."""
        if plan_limits:
            limits = self._limits_for(zone.config.account_id)
            if len(req.files) > limits.files_per_request:
                raise TooManyItems("files", limits.files_per_request)
            for kind, names in (("tags", req.tags), ("hosts", req.hosts), ("prefixes", req.prefixes)):
                if len(names) > limits.flex_items_per_request:
                    raise TooManyItems(kind, limits.flex_items_per_request)
        if req.everything:
            return (PurgeItem("", "purge_all", (Everything(),)),)
        out: list[PurgeItem] = []
        for f in req.files:
            url, host = self._url(zone, f)
            out.append(PurgeItem(f.url, "purge_url", (url,), host))
        tag_hosts = tuple(dict.fromkeys(self._host(zone, h).host for h in req.tag_hosts))
        # A task has one domain: a tag purge names one when it is limited to a single hostname.
        tag_domain = tag_hosts[0] if len(tag_hosts) == 1 else None
        for t in req.tags:
            tag = self._tag(t)
            selectors = tuple(Tag(tag.tag, h) for h in tag_hosts) if tag_hosts else (tag,)
            out.append(PurgeItem(t, "purge_cache_tag", selectors, tag_domain))
        for h in req.hosts:
            sel = self._host(zone, h)
            out.append(PurgeItem(h, "purge_host", (sel,), sel.host))
        for p in req.prefixes:
            prefix = self._prefix(zone, p)
            out.append(PurgeItem(p, "purge_prefix", (prefix,), prefix.host))
        return tuple(out)

    def _url(self, zone: ZoneRuntime, target: FileTarget) -> tuple[Url, str]:
        url = target.url.strip()
        if "://" not in url:
            url = "http://" + url
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
        except ValueError as exc:
            raise InvalidUrl(f"Unable to purge '{target.url}': {exc}") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidUrl(f"Unable to purge '{target.url}': not an http(s) URL")
        if host not in zone.hostnames:
            raise InvalidUrl(f"Unable to purge '{target.url}'. You can only purge files for this zone")
        path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = primary_key("http", host, path_qs, zone.key_options)
        if target.headers and zone.has_variants:
            # The purge names a variant: CF-Device-Type names the device type the data plane derives,
            # and a country counts only where the zone takes it from a trusted header.
            named = zone.trusted_fields | {"cf-device-type"}
            headers = {k.lower(): v for k, v in target.headers.items()}
            key += variant_suffix(headers, zone.key_options, named)
        return Url(key), host

    @staticmethod
    def _tag(tag: str) -> Tag:
        if len(tag) > MAX_TAG_LENGTH:
            raise TagTooLong(f"Tag exceeds maximum length of {MAX_TAG_LENGTH} characters")
        normal = normalise_tag(tag)
        # No whitespace and no control characters: the space is the one whitespace character
        # ``isprintable`` lets through, so this is one pass in C rather than two calls a character.
        if not normal or not normal.isprintable() or " " in normal:
            raise InvalidTag(f"Invalid tag '{tag}'")
        return Tag(normal)

    @staticmethod
    def _host(zone: ZoneRuntime, host: str) -> Host:
        if len(host) > MAX_HOST_LENGTH:
            raise HostTooLong(f"Host exceeds maximum length of {MAX_HOST_LENGTH} characters")
        h = host.strip().lower().rstrip(".")
        if h not in zone.hostnames:
            raise InvalidHost(f"Invalid host '{host}'")
        return Host(h)

    @staticmethod
    def _prefix(zone: ZoneRuntime, prefix: str) -> Prefix:
        p = prefix.strip()
        if "://" in p or "?" in p or "#" in p:
            raise InvalidPrefix(
                f"Invalid prefix '{prefix}': do not include a scheme, query string or fragment"
            )
        if p.count("/") > MAX_PREFIX_SLASHES:
            raise InvalidPrefix(f"Invalid prefix '{prefix}': more than {MAX_PREFIX_SLASHES} path separators")
        host, slash, path = p.partition("/")
        host = host.lower().rstrip(".")
        if host.rsplit(":", 1)[0] not in zone.hostnames:
            raise InvalidPrefix(f"Invalid prefix '{prefix}': host is not part of this zone")
        host = host.rsplit(":", 1)[0]
        return Prefix(host + "/" + path if slash else host)

    def _take_rate(self, zone: ZoneRuntime, req: PurgeRequest) -> Callable[[], None]:
        """Charge the account's bucket for this request, or raise :class:`RateLimited`; returns what
        gives the tokens back."""
        account = zone.config.account_id
        if req.files and not (req.tags or req.hosts or req.prefixes or req.everything):
            bucket, cost = Bucket.SINGLE_FILE_PURGE, len(req.files)
        else:
            bucket, cost = Bucket.FLEX_PURGE, 1
        wait = self._limiter.take(account, bucket, cost)
        if wait is not None:
            raise RateLimited(wait)
        return lambda: self._limiter.refund(account, bucket, cost)

    # -- acceptance -------------------------------------------------------------------------------

    async def submit(
        self,
        zone: ZoneRuntime,
        mode: Mode,
        items: tuple[PurgeItem, ...],
        request: PurgeRequest,
        *,
        principal: str,
        dialect: str,
        rate_limited: bool = False,
    ) -> AcceptedPurge:
        """Charge the account's purge rate (``rate_limited``: the Cloudflare dialect's token
        buckets) and the zone's quotas, record the purge and its tasks durably, put it in effect on
        this node, and return its job.

        Raises :class:`RateLimited` or :class:`QuotaExceeded`, or the database's error, with nothing
        recorded and nothing charged.
        """
        loop = asyncio.get_running_loop()
        job_id = new_job_id()
        now = time.time()
        created_at = datetime.fromtimestamp(now, UTC)
        record = _describe(request)
        selectors = _selectors(items)
        counts: dict[str, int] = {}
        for item in items:
            counts[item.type] = counts.get(item.type, 0) + 1
        # Read once: an enum's ``value`` is a Python property.
        mode_value = mode.value
        row = NewPurge(
            zone_id=zone.config.id,
            mode=mode_value,
            selectors=record,
            principal=principal,
            dialect=dialect,
            job_id=job_id,
            created_at=created_at,
            tasks=[NewTask(i.target, i.type, i.domain, mode_value) for i in items],
        )
        answer: asyncio.Future[Purge] = loop.create_future()
        write = _Write(self, loop, answer, zone, counts, row, (mode, selectors, now), items)
        write.refund = self._take_rate(zone, request) if rate_limited else None
        # Not atomic: when ``write`` raises, the writer undoes what it wrote (its savepoint, or the
        # whole transaction when it is alone in it).
        self._writer.hand(write.run, write)
        try:
            purge = await answer
        except asyncio.CancelledError:
            # A caller that goes away before its write runs takes the write with it (here rather
            # than in a done callback: that would be a call_soon of its own for every purge).
            write.caller_gone(answer)
            raise
        if not write.applied:
            # Its callback resumed this caller but failed to put the purge in effect here (logged by
            # the loop): committed, so a restart applies it, but not answered as accepted.
            raise RuntimeError(f"purge {purge.seq} was committed but not applied on this node")
        if log.isEnabledFor(logging.INFO):
            self._log_accepted(purge, job_id, mode, record, zone, principal, dialect)
        return AcceptedPurge(job_id, purge, items)

    @staticmethod
    def _log_accepted(
        purge: Purge,
        job_id: str,
        mode: Mode,
        record: dict[str, Any],
        zone: ZoneRuntime,
        principal: str,
        dialect: str,
    ) -> None:
        # Its fields are built only when the line is written (a node that logs at WARNING pays
        # for neither).
        log.info(
            "purge accepted: %s %s on zone %s by %s via %s",
            mode.value,
            record,
            zone.config.id,
            principal,
            dialect,
            extra={
                "event": "purge_accepted",
                "job_id": job_id,
                "seq": purge.seq,
                "zone_id": zone.config.id,
                "mode": mode.value,
                "selectors": record,
                "principal": principal,
                "dialect": dialect,
            },
        )

    def _settle_on_loop(self, outcome: Purge | BaseException, write: _Write) -> None:
        """On the event loop, in ledger order: a committed purge is applied on this node, whether or
        not its caller still waits, and the caller hears the outcome."""
        answer = write.answer
        if isinstance(outcome, Purge):
            self._pending[outcome.seq] = write.items
            # The caller is woken first, but resumes only after this callback: the purge is in
            # effect before its answer is made (and the caller checks ``applied``). Woken before the
            # reclaimer (which the apply wakes), the answer goes out before the reclaimer's pass
            # without a yield of the reclaimer's for it.
            if not answer.done():
                answer.set_result(outcome)
            self._apply(outcome)
            write.applied = True
            return
        self._arm_acks()  # the failed write's acknowledgements are back in line
        if not answer.done():
            answer.set_exception(outcome)

    def replay(self, zone: ZoneRuntime, row: LedgerRow) -> Purge:
        """A purge read back from the ledger, with the selectors its submission put in effect: how a
        restart applies again what the persistent tier may hold objects for, and how another process
        (or node) follows the ledger. A row that no longer validates against its zone's configuration
        becomes a purge of the whole zone: over-invalidating is safe, serving a purged object is not."""
        try:
            selectors = _selectors(self.items(zone, _request_from_record(row.selectors), plan_limits=False))
        except PurgeRejected:
            selectors = ()
        # SQLite gives back naive datetimes; every time in the ledger is UTC.
        at = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC).timestamp()
        return Purge(row.seq, row.zone_id, Mode(row.mode), selectors or (Everything(),), at)

    def reclaimed(self, purge: Purge, matched: dict[Selector, int]) -> None:
        """This node has applied and reclaimed a purge: its tasks succeed, with the counts."""
        by_target = matched_by_target(self._pending.pop(purge.seq, ()), matched)
        with self._acks_lock:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append((purge.seq, by_target))
            # Usually a timer or a queued flush will take it already: no second round of the lock.
            armed = self._acks_timer or self._acks_queued
        if not armed:
            self._arm_acks()

    def _take_acks(self) -> list[tuple[int, dict[str, int]]]:
        """Every acknowledgement gathered so far, for the transaction that will record them."""
        with self._acks_lock:
            acks, self._acks = self._acks, []
            self._acks_queued = False
        return acks

    def _take_due_acks(self) -> list[tuple[int, dict[str, int]]]:
        """For a ledger write: the gathered acknowledgements once the oldest is ``ACK_FOLD_AGE`` old,
        else none (they wait for a later write, or for their timer)."""
        with self._acks_lock:
            if not self._acks or time.monotonic() - self._acks_since < min(ACK_FOLD_AGE, ACK_DELAY / 2):
                return []
            acks, self._acks = self._acks, []
            self._acks_queued = False
        return acks

    def _return_acks(self, acks: list[tuple[int, dict[str, int]]]) -> None:
        """Acknowledgements whose transaction did not commit: first in line again."""
        with self._acks_lock:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks[:0] = acks

    def _arm_acks(self) -> None:
        """On the event loop: make sure a timer will record the gathered acknowledgements."""
        with self._acks_lock:
            if self._acks_timer or self._acks_queued or not self._acks:
                return
            self._acks_timer = True
            wait = self._acks_since + ACK_DELAY - time.monotonic()
        asyncio.get_running_loop().call_later(max(0.0, wait), self._acks_due)

    def _acks_due(self) -> None:
        # A ledger write takes the acknowledgements as well: when one did, this timer has nothing to
        # do, or only younger ones to wait for (their own ACK_DELAY), and no transaction is spent.
        with self._acks_lock:
            self._acks_timer = False
            due = bool(self._acks) and self._acks_since + ACK_DELAY <= time.monotonic()
            self._acks_queued = due
        if due:
            loop = asyncio.get_running_loop()
            taken: list[tuple[int, dict[str, int]]] = []

            def done(flush: Future[None]) -> None:
                # On the writer thread, as the commit's outcome is known.
                if flush.exception() is not None:
                    if taken:
                        self._return_acks(taken)
                    loop.call_soon_threadsafe(self._flush_failed)

            # Atomic: the operation keeps its own savepoint and never raises.
            flush = self._writer.submit(lambda conn: self._flush_acks(conn, taken), atomic=True)
            flush.add_done_callback(done)
        else:
            self._arm_acks()

    def _flush_failed(self) -> None:
        """On the event loop: the flush's transaction did not commit (a lost connection, or another
        operation of its group lost the transaction), and the acknowledgements it took, if it ran,
        are back in line: a timer looks at them again."""
        with self._acks_lock:
            self._acks_queued = False
        self._arm_acks()

    def _flush_acks(self, conn: Connection, taken: list[tuple[int, dict[str, int]]]) -> None:
        """On the writer thread: record every acknowledgement gathered so far, in the group's
        transaction; ``taken`` gets them, to be given back if that transaction does not commit."""
        acks = self._take_acks()
        taken.extend(acks)
        if not acks:
            return  # a ledger write took them
        try:
            with savepoint(conn, "acks"):
                finish_purges_in(conn, acks, datetime.now(UTC))
        except Exception:
            # The tasks stay processing and end as timeout: visible, not silent.
            log.exception("recording %d purge acknowledgements failed", len(acks))


def new_job_id() -> str:
    """A new job id: a random (version 4) UUID's 32 hex digits, as ``uuid.uuid4().hex`` makes it,
    without the ``UUID`` object's Python: every purge makes one on the event loop (its share is in
    ``bench/purge_steps.py --instructions``'s loop count, not measured apart)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def _selectors(items: tuple[PurgeItem, ...]) -> tuple[Selector, ...]:
    """A purge's selectors, each once, in the order of its items (acknowledgements count per
    selector in this order, so every process must derive the same tuple)."""
    if len(items) == 1 and len(items[0].selectors) == 1:
        # The usual purge of one target: nothing to deduplicate (and no selector to hash).
        return items[0].selectors
    return tuple(dict.fromkeys(s for item in items for s in item.selectors))


def _request_from_record(record: dict[str, Any]) -> PurgeRequest:
    """The inverse of :func:`_describe`."""
    if record.get("everything"):
        return PurgeRequest(everything=True)
    files = tuple(
        FileTarget(f) if isinstance(f, str) else FileTarget(f["url"], f.get("headers"))
        for f in record.get("files", ())
    )
    return PurgeRequest(
        files=files,
        tags=tuple(record.get("tags", ())),
        hosts=tuple(record.get("hosts", ())),
        prefixes=tuple(record.get("prefixes", ())),
        tag_hosts=tuple(record.get("tag_hosts", ())),
    )


def matched_by_target(items: tuple[PurgeItem, ...], matched: Mapping[Selector, int]) -> dict[str, int]:
    """How many entries each target's selectors matched (the reclaimer counts per selector)."""
    out: dict[str, int] = {}
    for item in items:
        selectors = item.selectors
        # One selector (every target but a tag limited to hostnames): no generator to sum.
        out[item.target] = (
            matched.get(selectors[0], 0) if len(selectors) == 1 else sum(matched.get(s, 0) for s in selectors)
        )
    return out


def _describe(req: PurgeRequest) -> dict[str, Any]:
    """The request as stored in the ledger (for audit and for peers catching up)."""
    if req.everything:
        return {"everything": True}
    out: dict[str, Any] = {}
    if req.files:
        out["files"] = [
            f.url if not f.headers else {"url": f.url, "headers": dict(f.headers)} for f in req.files
        ]
    for name in ("tags", "hosts", "prefixes"):
        items = getattr(req, name)
        if items:
            out[name] = list(items)
    if req.tag_hosts:
        out["tag_hosts"] = list(req.tag_hosts)
    return out
