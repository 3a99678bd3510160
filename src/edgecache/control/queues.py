"""Queues as a domain service: queues, consumers, push, pull with leases, ack and retry, dead
letters, pause, purge, retention.

Rules of this module:
- No wire format: dialects build the values of ``edgecache.control.queue_rules`` and map its
  :class:`QueueRejected` subclasses onto their own codes. Every check runs before anything is
  written: a rejected request changes nothing.
- Durable before the answer: every change is one operation on the group-commit writer
  (``edgecache.db.writer``) and a call returns once its transaction has committed (SQLite
  ``synchronous=FULL`` or PostgreSQL). Concurrent pushes share commits instead of queueing for them.
- Leases: a pull moves each message's ``visible_ms`` to the end of its visibility timeout and counts
  a delivery attempt; the lease id names the message and that delivery (``<seq hex>-<nonce>``). An
  ack deletes the message even when its lease has lapsed (Cloudflare's documented permissiveness);
  a retry applies only to the current lease, so it cannot reset a message another puller now holds.
- Retries: a message is delivered at most ``1 + max_retries`` times. The next time it would be
  delivered (or when it is retried) past that, it moves to the consumer's dead-letter queue (created
  on first use, as Cloudflare does) or is deleted.
- A whole-queue purge takes effect at once (the queue remembers the highest message number it
  covers; reads skip those), and the rows are deleted in the background in small batches, after
  which its status reads completed. Messages pushed after the purge started are above the bound and
  survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from edgecache.control.queue_pushes import PushCombiner
from edgecache.control.queue_rules import (
    CONSUMER_TYPES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PULL_BATCH,
    DEFAULT_PUSH_BATCH,
    DEFAULT_PUSH_CONCURRENCY,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_VISIBILITY_MS,
    MAX_DELAY_SECONDS,
    MAX_PULL_BATCH,
    MAX_PUSH_CONCURRENCY,
    MAX_RETRIES,
    MAX_VISIBILITY_MS,
    AckResult,
    ConsumerExists,
    ConsumerNotFound,
    ConsumerSpec,
    Delivered,
    DeliveryPaused,
    InvalidConsumerSettings,
    InvalidPull,
    Message,
    PullNotEnabled,
    PurgeStatus,
    Queue,
    QueueNameTaken,
    QueueNotFound,
    QueueSettings,
    Retry,
    check_endpoint,
    check_messages,
    check_name,
    check_range,
    check_settings,
    lease_id,
    parse_lease,
)
from edgecache.control.secrets import MasterKey
from edgecache.db import queues as db
from edgecache.db.engine import read_transaction
from edgecache.db.queues import MAX_SEQ, Backlog, ConsumerRow, QueueRow, StoredMessage
from edgecache.db.writer import WriterPool

log = logging.getLogger(__name__)

T = TypeVar("T")

DELETE_BATCH = 2_000
"""Rows one purge, retention or cleanup step deletes, one transaction each. On SQLite each step
shares the writer with pushes and pulls, which wait for it: at 10,000 rows a step took ~160 ms and
pushes to other queues fell by 89% during a purge (bench/queues.py); 2,000 keeps each wait to tens
of milliseconds. On PostgreSQL (its own connection) 2,000 deleted the most rows per second in
ad-hoc runs at 500, 2,000 and 10,000 (300,000 rows, loaded machine; bench/queues.py runs the
chosen size only)."""

LOCKED_RETRY = 0.05
"""Seconds a purge waits before looking again for rows its deletions skipped because another
transaction held them."""

SWEEP_EVERY = 1.0
"""Seconds between sweeps (pending purges, retention, deleted queues)."""

POSTGRES_WRITERS = 4
"""Group-commit writers (connections) per node on PostgreSQL; SQLite has one write lock, so one."""
SNAPSHOT_EVERY = 10.0
"""Seconds between refreshes of every queue's backlog for ``/metrics`` (one grouped read per queue,
done by the sweeper so a scrape never waits on the database)."""

CONFIG_TTL = 1.0
"""Seconds a pull or an ack may act on a queue's and consumer's settings as read before (each read
was two statements per call). A pause or a purge still applies at once (the claim reads the
queue's row itself); settings changed through this node apply at once (the cache is cleared); a
consumer changed or deleted through another node or the CLI applies within this time."""

BACKLOG_COST_SHARE = 0.1
"""At most this share of the time goes to counting one queue's backlog for pull answers: a count
that took 0.2 s is refreshed every 2 s at most."""

BACKLOG_TTL = 1.0
"""Seconds after which a queue's backlog figures embedded in pull answers are counted again, in the
background, while pulls answer with the last count (they are documented as approximate; counting
on every pull would cost a scan of the queue's index each time)."""


@dataclass
class _CachedBacklog:
    at: float
    value: Backlog
    took: float


@dataclass(frozen=True, slots=True)
class _Config:
    """A queue and the consumer a pull or an ack acts for, as read at ``at`` (monotonic)."""

    at: float
    queue: QueueRow
    consumer: ConsumerRow


@dataclass
class QueueCounters:
    """What this node did to one queue since it started (Prometheus counters)."""

    pushed: int = 0
    delivered: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0


class QueueService:
    """Queues of every account, stored in the control database."""

    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] = time.time, master_key: MasterKey | None = None
    ) -> None:
        self._engine = engine
        self._master_key = master_key
        # PostgreSQL: several connections overlap their round trips (bench/queues.py: one writer
        # connection was the limit, far below the hand-written SKIP LOCKED baseline); pulls on
        # them skip each other's rows as pulls on other nodes do.
        writers = POSTGRES_WRITERS if engine.dialect.name == "postgresql" else 1
        self._writer = WriterPool(engine, name="edgecache-queues", size=writers)
        self._pushes = PushCombiner(self._writer, self._now_ms)
        # Bulk deletions (purge, retention, deleted queues) get their own connection on PostgreSQL,
        # so pushes and pulls never queue behind a deletion step; SQLite's one write lock
        # serialises them anyway, so there they share the writer and interleave with its groups.
        self._sweeper = (
            WriterPool(engine, name="edgecache-queues-sweep", size=1) if writers > 1 else self._writer
        )
        self._clock = clock
        self._backlogs: dict[str, _CachedBacklog] = {}
        self._counting: dict[str, asyncio.Future[Backlog]] = {}
        self._configs: dict[tuple[str, str, str], _Config] = {}
        self._config_generation = 0
        self.counters: dict[str, QueueCounters] = {}
        self._wake = asyncio.Event()
        self._on_purged: list[Callable[[QueueRow], Awaitable[None]]] = []
        self.snapshot: list[tuple[QueueRow, Backlog]] = []
        """Every queue with its backlog, as of the last refresh (``SNAPSHOT_EVERY``)."""
        self._snapshot_at = -SNAPSHOT_EVERY

    def close(self) -> None:
        """Finish pending writes and stop the writer threads."""
        self._writer.close()
        if self._sweeper is not self._writer:
            self._sweeper.close()

    @property
    def commits(self) -> int:
        """Transactions committed by this node's queue writers."""
        if self._sweeper is self._writer:
            return self._writer.commits
        return self._writer.commits + self._sweeper.commits

    @property
    def writer(self) -> WriterPool:
        """The group-commit writer (shared with event subscriptions, which push into queues)."""
        return self._writer

    def on_purged(self, callback: Callable[[QueueRow], Awaitable[None]]) -> None:
        """Await ``callback`` whenever a whole-queue purge completes on this node."""
        self._on_purged.append(callback)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _count(self, queue_id: str) -> QueueCounters:
        c = self.counters.get(queue_id)
        if c is None:
            c = self.counters[queue_id] = QueueCounters()
        return c

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with read_transaction(self._engine) as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    # -- queues -----------------------------------------------------------------------------------

    def _new_queue(self, account_id: str, name: str, settings: QueueSettings) -> QueueRow:
        now = self._now()
        return QueueRow(
            id=uuid.uuid4().hex,
            account_id=account_id,
            name=name,
            created_at=now,
            modified_at=now,
            delivery_delay=settings.delivery_delay or 0,
            delivery_paused=bool(settings.delivery_paused),
            retention_seconds=settings.retention_seconds or DEFAULT_RETENTION_SECONDS,
            purge_started_at=None,
            purge_through=0,
            purge_completed_at=None,
        )

    def _insert_queue(self, conn: Connection, row: QueueRow) -> None:
        if db.queue_named(conn, row.account_id, row.name) is not None:
            raise QueueNameTaken(f"A queue named {row.name!r} already exists")
        try:
            with conn.begin_nested():
                db.insert_queue(conn, row)
        except IntegrityError as exc:
            # Another node created the same name between our check and our insert.
            raise QueueNameTaken(f"A queue named {row.name!r} already exists") from exc

    async def create_queue(self, account_id: str, name: str, settings: QueueSettings | None = None) -> Queue:
        """Create a queue; raises :class:`QueueNameTaken`, :class:`InvalidQueueName`,
        :class:`InvalidQueueSettings`."""
        settings = settings or QueueSettings()
        check_name(name)
        check_settings(settings)
        row = self._new_queue(account_id, name, settings)
        await self._writer.run(lambda conn: self._insert_queue(conn, row))
        return Queue(row, ())

    async def list_queues(
        self, account_id: str, names: Sequence[str] = (), page: int = 1, per_page: int = 100
    ) -> tuple[int, list[Queue]]:
        """The account's queues (only those named, when ``names``), one page: total and page."""

        def read(conn: Connection) -> tuple[int, list[Queue]]:
            total, rows = db.list_queues(conn, account_id, names, (page - 1) * per_page, per_page)
            by_queue: dict[str, list[ConsumerRow]] = {}
            for c in db.consumers_of(conn, [r.id for r in rows]):
                by_queue.setdefault(c.queue_id, []).append(c)
            return total, [Queue(r, tuple(by_queue.get(r.id, ()))) for r in rows]

        return await self._read(read)

    @staticmethod
    def _queue(conn: Connection, account_id: str, queue_id: str) -> QueueRow:
        row = db.get_queue(conn, account_id, queue_id)
        if row is None:
            raise QueueNotFound(f"Queue {queue_id} does not exist")
        return row

    @classmethod
    def _full(cls, conn: Connection, account_id: str, queue_id: str) -> Queue:
        row = cls._queue(conn, account_id, queue_id)
        return Queue(row, tuple(db.consumers_of(conn, [row.id])))

    async def find_queue(self, account_id: str, name_or_id: str) -> Queue:
        """A queue by name, or by id; raises :class:`QueueNotFound`."""

        def read(conn: Connection) -> Queue:
            row = db.queue_named(conn, account_id, name_or_id)
            return self._full(conn, account_id, name_or_id if row is None else row.id)

        return await self._read(read)

    async def get_queue(self, account_id: str, queue_id: str) -> Queue:
        """One queue with its consumers, or :class:`QueueNotFound`."""
        return await self._read(lambda conn: self._full(conn, account_id, queue_id))

    async def update_queue(
        self,
        account_id: str,
        queue_id: str,
        *,
        name: str | None,
        settings: QueueSettings,
        replace_all: bool,
    ) -> Queue:
        """Rename and change settings. ``replace_all`` (PUT) resets settings not given to their
        defaults; otherwise (PATCH) they stay."""
        if name is not None:
            check_name(name)
        check_settings(settings)
        if replace_all:
            settings = QueueSettings(
                delivery_delay=settings.delivery_delay or 0,
                delivery_paused=bool(settings.delivery_paused),
                retention_seconds=settings.retention_seconds or DEFAULT_RETENTION_SECONDS,
            )

        def op(conn: Connection) -> Queue:
            row = self._queue(conn, account_id, queue_id)
            values: dict[str, object] = {"modified_at": self._now()}
            if name is not None and name != row.name:
                if db.queue_named(conn, account_id, name) is not None:
                    raise QueueNameTaken(f"A queue named {name!r} already exists")
                values["name"] = name
            if settings.delivery_delay is not None:
                values["delivery_delay"] = settings.delivery_delay
            if settings.delivery_paused is not None:
                values["delivery_paused"] = settings.delivery_paused
            if settings.retention_seconds is not None:
                values["retention_seconds"] = settings.retention_seconds
            db.update_queue(conn, queue_id, **values)
            return self._full(conn, account_id, queue_id)

        result = await self._writer.run(op)
        self._forget_configs()
        return result

    async def delete_queue(self, account_id: str, queue_id: str) -> None:
        """Delete a queue and its consumer; its messages are removed in the background."""

        def op(conn: Connection) -> None:
            self._queue(conn, account_id, queue_id)
            db.delete_queue(conn, queue_id, self._now())

        await self._writer.run(op)
        self._forget_configs()
        self.counters.pop(queue_id, None)
        self._wake.set()

    # -- consumers --------------------------------------------------------------------------------

    def _consumer_row(
        self, spec: ConsumerSpec, queue_id: str, consumer_id: str, created: datetime, secret_enc: str | None
    ) -> ConsumerRow:
        if spec.type not in CONSUMER_TYPES:
            raise InvalidConsumerSettings(
                f"Consumer type {spec.type!r} is not supported here: edgecache has no Workers runtime; "
                "use 'http_pull', or 'http_push' to have batches POSTed to an endpoint"
            )
        if spec.dead_letter_queue:
            check_name(spec.dead_letter_queue)
        push = spec.type == "http_push"
        default_batch = DEFAULT_PUSH_BATCH if push else DEFAULT_PULL_BATCH
        batch = default_batch if spec.batch_size is None else spec.batch_size
        retries = DEFAULT_MAX_RETRIES if spec.max_retries is None else spec.max_retries
        delay = spec.retry_delay or 0
        vt = DEFAULT_VISIBILITY_MS if spec.visibility_timeout_ms is None else spec.visibility_timeout_ms
        check_range("batch_size", batch, 1, MAX_PULL_BATCH, InvalidConsumerSettings)
        check_range("max_retries", retries, 0, MAX_RETRIES, InvalidConsumerSettings)
        check_range("retry_delay", delay, 0, MAX_DELAY_SECONDS, InvalidConsumerSettings)
        check_range("visibility_timeout_ms", vt, 1, MAX_VISIBILITY_MS, InvalidConsumerSettings)
        endpoint: str | None = None
        concurrency: int | None = None
        if push:
            endpoint = check_endpoint(spec.endpoint)
            concurrency = DEFAULT_PUSH_CONCURRENCY if spec.max_concurrency is None else spec.max_concurrency
            check_range("max_concurrency", concurrency, 1, MAX_PUSH_CONCURRENCY, InvalidConsumerSettings)
            if secret_enc is None:
                if self._master_key is None:
                    raise InvalidConsumerSettings("http_push consumers need the node's master key")
                secret_enc = self._master_key.encrypt(secrets.token_urlsafe(32))
        return ConsumerRow(
            id=consumer_id,
            queue_id=queue_id,
            type=spec.type,
            created_at=created,
            dead_letter_queue=spec.dead_letter_queue,
            batch_size=batch,
            max_retries=retries,
            retry_delay=delay,
            visibility_timeout_ms=vt,
            endpoint=endpoint,
            max_concurrency=concurrency,
            secret_enc=secret_enc if push else None,
        )

    def secret_of(self, consumer: ConsumerRow) -> str | None:
        """The signing secret of an http_push consumer (shown once at creation, used to sign)."""
        if consumer.secret_enc is None or self._master_key is None:
            return None
        return self._master_key.decrypt(consumer.secret_enc)

    def _ensure_dlq(self, conn: Connection, queue: QueueRow, name: str) -> None:
        if not name:
            return
        if name == queue.name:
            raise InvalidConsumerSettings("A queue cannot be its own dead-letter queue")
        if db.queue_named(conn, queue.account_id, name) is None:
            self._insert_queue(conn, self._new_queue(queue.account_id, name, QueueSettings()))

    async def create_consumer(self, account_id: str, queue_id: str, spec: ConsumerSpec) -> ConsumerRow:
        """Attach a consumer; raises :class:`ConsumerExists` when the queue has one."""
        row = self._consumer_row(spec, queue_id, uuid.uuid4().hex, self._now(), None)

        def op(conn: Connection) -> ConsumerRow:
            queue = self._queue(conn, account_id, queue_id)
            if db.consumers_of(conn, [queue_id]):
                raise ConsumerExists(
                    f"Queue {queue.name!r} already has a consumer; remove it before adding another"
                )
            self._ensure_dlq(conn, queue, spec.dead_letter_queue)
            db.insert_consumer(conn, row)
            return row

        result = await self._writer.run(op)
        self._forget_configs()
        return result

    async def update_consumer(
        self, account_id: str, queue_id: str, consumer_id: str, spec: ConsumerSpec
    ) -> ConsumerRow:
        """Replace a consumer's settings (PUT); raises :class:`ConsumerNotFound`."""
        self._consumer_row(spec, queue_id, consumer_id, self._now(), "")  # validate before writing

        def op(conn: Connection) -> ConsumerRow:
            queue = self._queue(conn, account_id, queue_id)
            current = self._consumer(conn, queue_id, consumer_id)
            self._ensure_dlq(conn, queue, spec.dead_letter_queue)
            # A push consumer keeps its signing secret across updates.
            row = self._consumer_row(spec, queue_id, consumer_id, current.created_at, current.secret_enc)
            db.replace_consumer(conn, row)
            return row

        result = await self._writer.run(op)
        self._forget_configs()
        return result

    @staticmethod
    def _consumer(conn: Connection, queue_id: str, consumer_id: str) -> ConsumerRow:
        for c in db.consumers_of(conn, [queue_id]):
            if c.id == consumer_id:
                return c
        raise ConsumerNotFound(f"Consumer {consumer_id} does not exist on queue {queue_id}")

    async def get_consumer(self, account_id: str, queue_id: str, consumer_id: str) -> ConsumerRow:
        """One consumer of a queue."""

        def read(conn: Connection) -> ConsumerRow:
            self._queue(conn, account_id, queue_id)
            return self._consumer(conn, queue_id, consumer_id)

        return await self._read(read)

    async def delete_consumer(self, account_id: str, queue_id: str, consumer_id: str) -> None:
        """Detach a consumer; the messages stay in the queue."""

        def op(conn: Connection) -> None:
            self._queue(conn, account_id, queue_id)
            self._consumer(conn, queue_id, consumer_id)
            db.delete_consumer(conn, consumer_id)

        await self._writer.run(op)
        self._forget_configs()

    # -- messages ---------------------------------------------------------------------------------

    async def push(
        self, account_id: str, queue_id: str, messages: Sequence[Message], batch_delay: int | None = None
    ) -> None:
        """Store messages durably. Delay precedence: the message's own, the batch's, the queue's."""
        check_messages(messages, batch_delay)
        await self._pushes.push(account_id, queue_id, messages, batch_delay)
        self._count(queue_id).pushed += len(messages)

    def _dead_letter(
        self, conn: Connection, queue: QueueRow, consumer: ConsumerRow, seqs: Sequence[int], now_ms: int
    ) -> None:
        # Never raises: pull and ack call this after their first write, without a savepoint.
        dlq = None
        if consumer.dead_letter_queue:
            dlq = db.queue_named(conn, queue.account_id, consumer.dead_letter_queue)
            if dlq is None:
                created = self._new_queue(queue.account_id, consumer.dead_letter_queue, QueueSettings())
                try:
                    self._insert_queue(conn, created)
                    dlq = created
                except QueueNameTaken:
                    # Another node created it a moment ago.
                    dlq = db.queue_named(conn, queue.account_id, consumer.dead_letter_queue)
        if dlq is not None:
            db.move_messages(conn, seqs, dlq.id, now_ms)
        else:
            db.delete_messages(conn, queue.id, seqs)
        self._count(queue.id).dead_lettered += len(seqs)

    def _config(self, account_id: str, queue_id: str, consumer_type: str) -> _Config | None:
        cached = self._configs.get((account_id, queue_id, consumer_type))
        if cached is None or time.monotonic() - cached.at > CONFIG_TTL:
            return None
        return cached

    def _forget_configs(self) -> None:
        # Settings changed through this node: the next pull or ack reads them again, and one
        # that read them before the change does not store what it read.
        self._configs.clear()
        self._config_generation += 1

    def _remember(self, key: tuple[str, str, str], config: _Config, generation: int) -> None:
        if generation == self._config_generation:
            self._configs[key] = config

    @classmethod
    def _read_config(
        cls, conn: Connection, account_id: str, queue_id: str, kind: str, *, pulling: bool
    ) -> _Config:
        """The queue and its consumer of type ``kind``, or the refusal a pull (``pulling``) or an
        ack gets."""
        queue = cls._queue(conn, account_id, queue_id)
        for c in db.consumers_of(conn, [queue.id]):
            if c.type == kind:
                if pulling and queue.delivery_paused:
                    raise DeliveryPaused("queue_delivery_paused")
                return _Config(time.monotonic(), queue, c)
        raise PullNotEnabled(f"messages cannot be pulled unless {kind} mode is enabled")

    async def pull(
        self,
        account_id: str,
        queue_id: str,
        batch_size: int | None = None,
        visibility_timeout_ms: int | None = None,
        *,
        consumer_type: str = "http_pull",
    ) -> tuple[list[Delivered], Backlog]:
        """Lease up to ``batch_size`` messages (default: the consumer's) for the visibility timeout;
        also returns the queue's (approximate) backlog. The push delivery leases with
        ``consumer_type="http_push"``."""
        if batch_size is not None:
            check_range("batch_size", batch_size, 1, MAX_PULL_BATCH, InvalidPull)
        if visibility_timeout_ms is not None:
            check_range("visibility_timeout_ms", visibility_timeout_ms, 1, MAX_VISIBILITY_MS, InvalidPull)
        nonce = secrets.token_hex(8)
        generation = self._config_generation
        config = self._config(account_id, queue_id, consumer_type)

        def op(conn: Connection) -> tuple[_Config, list[StoredMessage]]:
            current = config or self._read_config(conn, account_id, queue_id, consumer_type, pulling=True)
            queue, consumer = current.queue, current.consumer
            want = batch_size or consumer.batch_size
            vt = visibility_timeout_ms or consumer.visibility_timeout_ms
            now = self._now_ms()
            out: list[StoredMessage] = []
            moved = False
            while len(out) < want:
                leased = db.claim_and_lease(conn, queue_id, now, want - len(out), now + vt, nonce)
                # attempts counts this delivery: past 1 + max_retries it goes to the dead letters.
                dead = [m.seq for m in leased if m.attempts > consumer.max_retries + 1]
                out += [m for m in leased if m.attempts <= consumer.max_retries + 1]
                if not dead:
                    break
                self._dead_letter(conn, queue, consumer, dead, now)
                moved = True
            if not out and not moved and config is not None:
                # Nothing deliverable, or the queue was paused, deleted or changed elsewhere since
                # its settings were cached: read them again (this raises when it must).
                current = self._read_config(conn, account_id, queue_id, consumer_type, pulling=True)
            return current, out

        # The operation raises (no queue, no consumer, paused) only before its first write, so it
        # needs no savepoint of its own: two round trips fewer per pull on PostgreSQL.
        current, leased = await self._writer.run(op, atomic=True)
        self._remember((account_id, queue_id, consumer_type), current, generation)
        self._count(queue_id).delivered += len(leased)
        backlog = await self.backlog(account_id, queue_id, max_age=BACKLOG_TTL)
        return [Delivered(m, lease_id(m.seq, nonce)) for m in leased], backlog

    async def ack(
        self,
        account_id: str,
        queue_id: str,
        acks: Sequence[str],
        retries: Sequence[Retry],
        *,
        consumer_type: str = "http_pull",
    ) -> AckResult:
        """Delete acknowledged messages and put retried ones back (dead-lettering those out of
        retries). Unknown lease ids are reported in ``warnings``, never as an error."""
        for r in retries:
            if r.delay_seconds is not None:
                check_range("retries[].delay_seconds", r.delay_seconds, 0, MAX_DELAY_SECONDS, InvalidPull)
        warnings: dict[str, str] = {}
        ack_seqs: dict[int, str] = {}
        for a in acks:
            parsed = parse_lease(a)
            if parsed is None:
                warnings[a] = "not a lease id"
            else:
                ack_seqs[parsed[0]] = a
        retry_parsed: list[tuple[int, str, Retry]] = []
        for r in retries:
            parsed = parse_lease(r.lease_id)
            if parsed is None:
                warnings[r.lease_id] = "not a lease id"
            elif parsed[0] not in ack_seqs:
                retry_parsed.append((parsed[0], parsed[1], r))

        generation = self._config_generation
        config = self._config(account_id, queue_id, consumer_type)

        def op(conn: Connection) -> tuple[_Config, int, int, dict[str, str]]:
            current = config or self._read_config(conn, account_id, queue_id, consumer_type, pulling=False)
            queue, consumer = current.queue, current.consumer
            now = self._now_ms()
            found: dict[str, str] = {}
            acked = db.ack_delivered(conn, queue_id, list(ack_seqs))
            for s, lid in ack_seqs.items():
                if s not in acked:
                    found[lid] = "message not found: already acknowledged, purged or expired"
            back: list[tuple[int, int]] = []
            dead: list[int] = []
            state = db.leased(conn, queue_id, [s for s, _, _ in retry_parsed])
            for seq, nonce, r in retry_parsed:
                st = state.get(seq)
                if st is None or st[1] != nonce:
                    found[r.lease_id] = "lease no longer held: the message was redelivered or is gone"
                elif st[0] > consumer.max_retries:
                    dead.append(seq)
                else:
                    delay = consumer.retry_delay if r.delay_seconds is None else r.delay_seconds
                    back.append((seq, now + 1000 * delay))
            db.release(conn, back)
            if dead:
                self._dead_letter(conn, queue, consumer, dead, now)
            return current, len(acked), len(back) + len(dead), found

        # As for pull: a refusal comes before the first write.
        current, acked, retried, more = await self._writer.run(op, atomic=True)
        self._remember((account_id, queue_id, consumer_type), current, generation)
        warnings.update(more)
        counters = self._count(queue_id)
        counters.acked += acked
        counters.retried += retried
        return AckResult(acked, retried, warnings)

    async def peek(self, account_id: str, queue_id: str, batch_size: int) -> list[StoredMessage]:
        """Deliverable messages without leasing them."""
        check_range("batch_size", batch_size, 1, MAX_PULL_BATCH, InvalidPull)

        def read(conn: Connection) -> list[StoredMessage]:
            queue = self._queue(conn, account_id, queue_id)
            return db.peek(conn, queue_id, queue.purge_through, self._now_ms(), batch_size)

        return await self._read(read)

    async def delete_refs(self, account_id: str, queue_id: str, refs: Sequence[str]) -> dict[str, str]:
        """Delete messages named by peek refs (message ids); returns warnings for refs not found."""
        seqs: dict[int, str] = {}
        warnings: dict[str, str] = {}
        for ref in refs:
            if re.fullmatch(r"[0-9a-f]{32}", ref) and int(ref, 16) <= MAX_SEQ:
                seqs[int(ref, 16)] = ref
            else:
                warnings[ref] = "not a message ref"

        def op(conn: Connection) -> set[int]:
            self._queue(conn, account_id, queue_id)
            return db.delete_messages(conn, queue_id, list(seqs))

        gone = await self._writer.run(op)
        warnings.update({ref: "message not found" for seq, ref in seqs.items() if seq not in gone})
        return warnings

    async def backlog(self, account_id: str, queue_id: str, *, max_age: float = 0.0) -> Backlog:
        """Messages stored for the queue (count, bytes, oldest push time). With ``max_age`` (the
        approximate figures of pull answers), a count at most that old, or else the last one while
        one background count refreshes it."""
        if max_age <= 0:
            return await self._read(lambda conn: self._count_backlog(conn, account_id, queue_id))
        # A count scans the queue's index, ~0.1 s of CPU at 200,000 messages: every pull counting
        # for itself when the figures expired took 300 µs of CPU per message pulled
        # (bench/queues.py). So one count per queue at a time, shared by the pulls that wait for
        # a first one, and at most BACKLOG_COST_SHARE of the time.
        cached = self._backlogs.get(queue_id)
        counting = self._counting.get(queue_id)
        if counting is None and (
            cached is None or time.monotonic() - cached.at > max(max_age, cached.took / BACKLOG_COST_SHARE)
        ):
            counting = self._counting[queue_id] = asyncio.ensure_future(self._recount(account_id, queue_id))
            # Nobody may wait for a background count; its failure (a deleted queue) is the next
            # pull's to report.
            counting.add_done_callback(lambda f: f.cancelled() or f.exception())
        if cached is not None:
            return cached.value
        if counting is None or counting.get_loop() is not asyncio.get_running_loop():
            # A count started from another event loop (the service is shared by threads in the
            # CLI and the tests) cannot be awaited from this one.
            return await self._read(lambda conn: self._count_backlog(conn, account_id, queue_id))
        return await asyncio.shield(counting)

    def _count_backlog(self, conn: Connection, account_id: str, queue_id: str) -> Backlog:
        queue = self._queue(conn, account_id, queue_id)
        return db.backlog(conn, queue_id, queue.purge_through)

    async def _recount(self, account_id: str, queue_id: str) -> Backlog:
        # Stores its count only while it is still the queue's registered count: a purge started
        # meanwhile forgets it, and the next pull counts again.
        me = asyncio.current_task()
        start = time.monotonic()
        try:
            value = await self._read(lambda conn: self._count_backlog(conn, account_id, queue_id))
        finally:
            current = self._counting.get(queue_id) is me
            if current:
                del self._counting[queue_id]
        if current:
            self._backlogs[queue_id] = _CachedBacklog(time.monotonic(), value, time.monotonic() - start)
        return value

    def _forget_backlog(self, queue_id: str) -> None:
        self._backlogs.pop(queue_id, None)
        self._counting.pop(queue_id, None)

    async def push_consumers(self) -> list[tuple[QueueRow, ConsumerRow]]:
        """Every http_push consumer with its queue (for the delivery loop)."""

        def read(conn: Connection) -> list[tuple[QueueRow, ConsumerRow]]:
            queues = {q.id: q for q in db.all_queues(conn)}
            return [
                (queues[c.queue_id], c) for c in db.consumers_of(conn, list(queues)) if c.type == "http_push"
            ]

        return await self._read(read)

    async def all_backlogs(self) -> list[tuple[QueueRow, Backlog]]:
        """Every queue with its backlog (for metrics)."""

        def read(conn: Connection) -> list[tuple[QueueRow, Backlog]]:
            return [(q, db.backlog(conn, q.id, q.purge_through)) for q in db.all_queues(conn)]

        return await self._read(read)

    # -- whole-queue purge ------------------------------------------------------------------------

    async def start_purge(self, account_id: str, queue_id: str) -> Queue:
        """Purge every message stored now (delayed and leased ones included); returns at once, the
        deletion runs in the background."""

        def op(conn: Connection) -> Queue:
            self._queue(conn, account_id, queue_id)
            db.update_queue(
                conn,
                queue_id,
                purge_started_at=self._now(),
                purge_through=db.last_seq(conn),
                purge_completed_at=None,
            )
            return self._full(conn, account_id, queue_id)

        queue = await self._writer.run(op)
        self._forget_configs()
        self._forget_backlog(queue_id)
        self._wake.set()
        return queue

    async def purge_status(self, account_id: str, queue_id: str, *, count: bool = True) -> PurgeStatus:
        """The last purge: when it started, whether it completed, and (``count``) messages it has
        left to delete; counting scans what is left, which callers polling the status every few
        milliseconds (the v4 API) need not pay for."""

        def read(conn: Connection) -> PurgeStatus:
            queue = self._queue(conn, account_id, queue_id)
            remaining = 0
            if count and queue.purge_started_at is not None and queue.purge_completed_at is None:
                remaining = db.count_upto(conn, queue_id, queue.purge_through)
            return PurgeStatus(queue.purge_started_at, queue.purge_completed_at is not None, remaining)

        return await self._read(read)

    async def finish_purge(self, queue: QueueRow, progress: Callable[[int], None] | None = None) -> None:
        """Delete what a started purge covers, a batch per transaction, then mark it completed."""

        def done(conn: Connection) -> str:
            current = db.get_queue(conn, queue.account_id, queue.id)
            # A newer purge (higher bound) started meanwhile: it completes on its own pass.
            if current is None or current.purge_through != queue.purge_through:
                return "superseded"
            if db.count_upto(conn, queue.id, queue.purge_through):
                return "remaining"
            if current.purge_completed_at is None:
                db.update_queue(conn, queue.id, purge_completed_at=self._now())
                return "completed"
            return "superseded"

        while True:
            n = await self._sweeper.run(
                lambda conn: db.delete_upto(conn, queue.id, queue.purge_through, DELETE_BATCH)
            )
            if progress is not None:
                progress(n)
            if n == DELETE_BATCH:
                continue
            state = await self._sweeper.run(done)
            if state != "remaining":
                break
            # Rows an ack or a dead-lettering held were skipped (PostgreSQL); they are about to go.
            await asyncio.sleep(LOCKED_RETRY)
        if state == "completed":
            for callback in self._on_purged:
                await callback(queue)

    # -- background -------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """One pass: finish pending purges, apply retention, clear the messages of deleted queues."""
        rows = await self._read(db.all_queues)
        for q in rows:
            if q.purge_started_at is not None and q.purge_completed_at is None:
                await self.finish_purge(q)
        now = self._now_ms()
        for q in rows:
            await self._expire(q.id, now - 1000 * q.retention_seconds)
        while await self._sweeper.run(lambda conn: db.sweep_deleted(conn, DELETE_BATCH)) == DELETE_BATCH:
            pass
        if time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY:
            await self.refresh_snapshot()

    async def refresh_snapshot(self) -> None:
        """Read every queue's backlog now (for ``/metrics``)."""
        self.snapshot = await self.all_backlogs()
        self._snapshot_at = time.monotonic()

    async def _expire(self, queue_id: str, cutoff_ms: int) -> None:
        while (
            await self._sweeper.run(lambda conn: db.delete_expired(conn, queue_id, cutoff_ms, DELETE_BATCH))
            == DELETE_BATCH
        ):
            pass

    async def keep(self) -> None:
        """Sweep forever, every ``SWEEP_EVERY`` seconds or as soon as a purge or a delete asks."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("queue sweep failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY)
