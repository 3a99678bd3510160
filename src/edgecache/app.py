"""The composition root: builds one node from a configuration and starts its listeners.

Nothing else in the code base wires components together; tests start nodes through here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from aiohttp import web
from prometheus_client.registry import Collector, CollectorRegistry

from edgecache.api.console.app import build_console_app
from edgecache.api.context import ControlContext
from edgecache.api.control_app import build_control_app
from edgecache.api.edgeone import actions as _edgeone_actions  # noqa: F401  (registers the actions)
from edgecache.api.edgeone.dispatch import EdgeOneServices, Quota
from edgecache.config import TASK_TYPES, Account, Config, Limits
from edgecache.control.cache_reserve import CacheReserveService
from edgecache.control.credentials import CredentialService
from edgecache.control.livestats import LiveStats
from edgecache.control.prefetch import PrefetchService
from edgecache.control.purges import PurgeService
from edgecache.control.push_delivery import PushDelivery
from edgecache.control.queues import QueueService
from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import PLAN_LIMITS, PlanLimits, Rate, RateLimiter
from edgecache.control.secrets import MasterKey, SecretService
from edgecache.control.sessions import SessionService
from edgecache.control.subscriptions import SubscriptionService
from edgecache.db.cache_reserve import CacheReserveStore
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.ledger import LedgerStore
from edgecache.db.tasks import TaskStore
from edgecache.demo import origin as demo_origin
from edgecache.edge.accesslog import FormatterProcess, close_ring, connection_factory
from edgecache.edge.http1 import Connection, Handler, HttpServer, start_server
from edgecache.edge.logring import (
    RingWriter,
    read_counts,
    remove_if_empty,
    ring_directory,
    ring_files,
    ring_path,
)
from edgecache.edge.logtail import write_zones
from edgecache.edge.origin import OriginClient
from edgecache.edge.proxy import Proxy
from edgecache.edge.reclaimer import Reclaimer
from edgecache.edge.stats import EdgeStats
from edgecache.edge.zones import ZoneTable
from edgecache.gcpolicy import keep_gc
from edgecache.looplag import LoopLag
from edgecache.memtrim import release_freed_memory
from edgecache.metrics import AccessLogCollector, EdgeCollector, QueueCollector
from edgecache.metrics_disk import DiskCollector
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Purge, Selector
from edgecache.store.base import Tier
from edgecache.store.chain import TierChain
from edgecache.store.disk import DiskStore, JobProgress, clear_reserve_job
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

log = logging.getLogger(__name__)

TARGET_SAFE = "/?[]@!$&'()*+,;=:%~-._"
"""Characters a prefetch target keeps as they are; others (spaces, non-ASCII) are percent-encoded."""

RETENTION_EVERY = 3600.0
"""Seconds between retention passes over the task table (each deletes a range per zone)."""


def account_limits(account: Account) -> PlanLimits:
    """An account's purge limits: its plan's published numbers, with its configured overrides."""
    limits = PLAN_LIMITS[account.plan]
    changes: dict[str, object] = {}
    if account.flex_purge is not None:
        changes["flex_purge"] = Rate(account.flex_purge.per_second, account.flex_purge.burst)
    if account.single_file_purge is not None:
        changes["single_file_purge"] = Rate(
            account.single_file_purge.per_second, account.single_file_purge.burst
        )
    if account.files_per_request is not None:
        changes["files_per_request"] = account.files_per_request
    if account.flex_items_per_request is not None:
        changes["flex_items_per_request"] = account.flex_items_per_request
    return limits.with_overrides(**changes) if changes else limits


def seed_identity(credentials: CredentialService, config: Config) -> None:
    """Create the configured accounts and zones in the control database, or bring them in line
    (idempotent): what tokens and secrets are granted on. ``serve`` and the CLI both call it."""
    for account in config.accounts:
        credentials.ensure_account(account.id, account.name, account.plan)
    for zone in config.zones:
        credentials.ensure_zone(zone.id, zone.account_id, zone.name, zone.plan)


def origin_client(limits: Limits) -> OriginClient:
    """The origin client the limits describe (timeouts, pool bounds, the CAs trusted for https)."""
    context = None
    if limits.origin_ca_file is not None:
        context = ssl.create_default_context(cafile=str(limits.origin_ca_file))
    return OriginClient(
        limits.origin_connect_timeout,
        limits.origin_read_timeout,
        first_byte_timeout=limits.origin_first_byte_timeout,
        idle_timeout=limits.origin_keepalive_timeout,
        max_connections=limits.origin_max_connections,
        ssl_context=context,
    )


class Node:
    """One edgecache node: data listener, control listener, and (for the demo) the origin."""

    def __init__(
        self,
        config: Config,
        *,
        apply: Callable[[Purge], None] | None = None,
        acknowledge: Callable[[Purge, dict[Selector, int]], None] | None = None,
        collector: Collector | None = None,
    ) -> None:
        """``apply`` receives each accepted purge (default: this process's own index and reclaimer);
        ``acknowledge`` receives each reclaimed one (default: its tasks succeed); ``collector`` is
        what ``/metrics`` reports (default: this process's counters). A node of worker processes
        (``edgecache.cluster``) routes all three through its control plane."""
        self.config = config
        self.stats = EdgeStats()
        self.store = MemoryTier(config.storage.memory_bytes)
        self.zones = ZoneTable(config.zones)
        self.database = open_database(config.database_url or sqlite_url(config.data_dir))
        ledger = LedgerStore(self.database)
        position = ledger.position()
        self.disk: DiskStore | None = None
        self.tiers: Tier = self.store
        """What the data plane reads and writes: memory alone, or memory in front of disk."""
        self.cache_reserve = CacheReserveService(CacheReserveStore(self.database), self._run_reserve_clear)
        self.cache_reserve.load()
        if config.storage.disk.enabled:
            self.disk = self._open_disk(position)
            self.tiers = TierChain(
                self.store,
                self.disk,
                reserve_on=self.cache_reserve.is_on,
                reserve_eligible=self._reserve_eligible,
            )
        # Objects on disk may predate purges that were never applied to the disk (a crash between
        # a purge's commit and its reclaim): those purges are put in effect again, from the ledger.
        # Without a disk the memory tier starts empty, and the purges need only their numbering.
        floor = position if self.disk is None else min(position, self.disk.reclaimed_upto)
        self.index = EpochIndex(position=floor)
        self.origin = origin_client(config.limits)
        self.proxy = Proxy(
            self.zones,
            self.tiers,
            self.origin,
            self.stats,
            max_object_bytes=config.storage.max_object_bytes,
            index=self.index,
        )
        self.credentials = CredentialService(self.database)
        limits = {a.id: account_limits(a) for a in config.accounts}
        self.tasks = TaskStore(self.database)
        self.quotas = QuotaService(self.tasks.count_since)
        self.purges = PurgeService(
            ledger_store=ledger,
            task_store=self.tasks,
            quotas=self.quotas,
            limiter=RateLimiter(lambda account_id: limits[account_id]),
            limits_for=lambda account_id: limits[account_id],
            apply=apply or self.apply_purge,
        )
        self.prefetch = PrefetchService(
            task_store=self.tasks,
            quotas=self.quotas,
            warm=self._warm,
            concurrency=config.tasks.prefetch_concurrency,
            timeout=config.tasks.prefetch_timeout,
        )
        master_key = MasterKey(config.data_dir)
        self.queues = QueueService(self.database, master_key=master_key)
        self.push_delivery = PushDelivery(self.queues)
        self.subscriptions = SubscriptionService(
            self.database, self.queues, self.tasks, self.zones, config.tasks.timeout
        )
        self.secrets = SecretService(self.database, master_key)
        self.reclaimer = Reclaimer(
            self.store,
            self.index,
            self.proxy.oldest_fetch_seq,
            on_reclaimed=acknowledge or self.purges.reclaimed,
            release_memory=release_freed_memory,
            disk=self.disk,
            credits=self.proxy.credits,
        )
        self.looplag = LoopLag(config.runtime.loop_probe_every)
        self._replayed = [
            self.purges.replay(self.zones.by_id[row.zone_id], row)
            for row in (ledger.after(floor) if floor < position else ())
            # Zones no longer configured: nothing here serves their objects.
            if row.zone_id in self.zones.by_id
        ]
        for purge in self._replayed:
            self.index.apply(purge)
        log_cfg = config.logging
        self.access_ring_dir = ring_directory(config.data_dir)
        self.access_ring: RingWriter | None = None
        self.access_formatter = (
            FormatterProcess(self.access_ring_dir, log_cfg.access_log, log_cfg.access_log_format)
            if log_cfg.access_log is not None
            else None
        )
        self._data: HttpServer | None = None
        self._control: web.AppRunner | None = None
        self._demo: web.AppRunner | None = None
        self.registry = CollectorRegistry()
        self.registry.register(
            collector
            or EdgeCollector(
                self.stats,
                self.store,
                http=lambda: None if self._data is None else self._data.stats,
                index=lambda: self.index,
                reclaimer=self.reclaimer,
                looplag=self.looplag,
                origin=self.origin.stats,
            )
        )
        if self.disk is not None:
            self.registry.register(DiskCollector(self.disk, self.cache_reserve, list(self.zones.by_id)))
        self.sessions = SessionService(self.credentials, config.console.session_hours * 3600)
        self.live = LiveStats(self.registry)
        self.registry.register(QueueCollector(self.queues, time.time))
        self._housekeeping: asyncio.Task[None] | None = None
        self._gc: asyncio.Task[None] | None = None
        self._queue_sweeper: asyncio.Task[None] | None = None
        self._events: asyncio.Task[None] | None = None
        self._push: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.data_port = 0
        self.control_port = 0

    def _open_disk(self, position: int) -> DiskStore:
        cfg = self.config.storage.disk
        reserve = {z.id: z.cache_reserve for z in self.config.zones}
        return DiskStore(
            self.config.data_dir / cfg.path,
            budget=cfg.budget_bytes,
            position=position,
            reserve_budget=lambda zone: reserve[zone].budget_bytes if zone in reserve else 0,
            reserve_retention=lambda zone: reserve[zone].retention_days * 86400.0 if zone in reserve else 0.0,
        )

    def _reserve_eligible(self, entry: Entry) -> bool:
        """Cloudflare's eligibility: fresh for at least the zone's minimum TTL, the origin sent a
        Content-Length, and not too large."""
        zone = self.zones.by_id.get(entry.zone)
        if zone is None:
            return False
        rules = zone.config.cache_reserve
        return (
            entry.length_known
            and entry.freshness_lifetime >= rules.min_ttl
            and len(entry.body) <= rules.max_object_bytes
        )

    def _run_reserve_clear(self, zone_id: str, progress: JobProgress) -> Future[None]:
        if self.disk is None:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return self.disk.run_job(clear_reserve_job(zone_id, progress))

    def apply_purge(self, purge: Purge) -> None:
        """Put a durable purge in effect on this node: the index at once, the reclaimer after."""
        self.index.apply(purge)
        self.reclaimer.enqueue(purge)

    async def _warm(self, host: str, path: str, headers: Mapping[str, str]) -> int:
        """One request through this node's own data plane (prefetch), body read and dropped."""
        listen = self.config.data.host
        address = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
        fields = {name.lower(): value for name, value in headers.items()}
        fields["host"] = host
        target = quote(path, safe=TARGET_SAFE)
        resp = await self.origin.request("GET", f"http://{address}:{self.data_port}{target}", fields)
        async for _ in resp.chunks():
            pass
        return resp.status

    def quota_for(self, zone_id: str) -> list[Quota]:
        """Every task type's quota state for one zone (DescribeContentQuota)."""
        zone = self.zones.by_id[zone_id].config
        out: list[Quota] = []
        for task_type in TASK_TYPES:
            st = self.quotas.state(zone, task_type)
            out.append(Quota(Type=st.type, Batch=st.batch, Daily=st.daily, DailyAvailable=st.daily_available))
        return out

    async def _keep_tasks(self) -> None:
        """Tasks nobody acknowledged in time end ``timeout``; old tasks go after the retention."""
        cfg = self.config.tasks
        last_forget = 0.0
        while True:
            await asyncio.sleep(min(5.0, cfg.timeout / 4))
            now = datetime.now(UTC)
            try:
                expired = await asyncio.to_thread(
                    self.tasks.expire, now - timedelta(seconds=cfg.timeout), now
                )
                if expired:
                    log.warning(
                        "%d tasks timed out: not acknowledged within %g s",
                        expired,
                        cfg.timeout,
                        extra={"event": "tasks_timeout", "count": expired, "timeout_s": cfg.timeout},
                    )
                if time.monotonic() - last_forget >= RETENTION_EVERY:
                    await asyncio.to_thread(
                        self.tasks.forget, now - timedelta(days=cfg.retention_days), list(self.zones.by_id)
                    )
                    last_forget = time.monotonic()
            except Exception:
                log.exception("task housekeeping failed")

    def _seed(self) -> None:
        # Purges still processing when this node last stopped: the memory tier starts empty, and
        # those the disk may still hold objects for are replayed (see __init__); acknowledged here.
        self.tasks.finish_purges([(seq, {}) for seq in self.tasks.processing_purge_seqs()], datetime.now(UTC))
        seed_identity(self.credentials, self.config)

    async def start(self) -> None:
        """Bind every listener; ports given as 0 are chosen by the kernel (see ``*_port``)."""
        await self.start_control()
        await self.start_data()

    async def start_control(self, refresh_metrics: Callable[[], Awaitable[None]] | None = None) -> None:
        """The control plane: settle earlier tasks, the demo origin, task housekeeping, the API
        listener (``refresh_metrics`` runs before each scrape)."""
        cfg = self.config
        await asyncio.to_thread(self._seed)
        if cfg.demo_origin is not None:
            self._demo = await demo_origin.start(cfg.demo_origin.host, cfg.demo_origin.port)
        self.cache_reserve.resume()
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._keep_tasks())
        self._queue_sweeper = loop.create_task(self.queues.keep())
        self._events = loop.create_task(self.subscriptions.keep())
        self._push = loop.create_task(self.push_delivery.keep())
        self._keep_gc()
        if self.access_formatter is not None:
            # One formatter per node, in the control plane's process: it reads the ring of every
            # data-plane process, and /metrics counts the rings here once.
            await asyncio.to_thread(write_zones, self.access_ring_dir, cfg.zones)
            await self.access_formatter.start()
            rings = self.access_ring_dir
            self.registry.register(AccessLogCollector(lambda: [read_counts(p) for p in ring_files(rings)]))
        context = ControlContext(
            zones=self.zones,
            credentials=self.credentials,
            purges=self.purges,
            tasks=self.tasks,
            quotas=self.quotas,
            prefetch=self.prefetch,
            cache_reserve=self.cache_reserve,
            queues=self.queues,
            subscriptions=self.subscriptions,
        )
        edgeone = EdgeOneServices(
            secrets=self.secrets,
            quota_for=self.quota_for,
        )
        console = build_console_app(self.sessions, self.live) if cfg.console.enabled else None
        self._control = web.AppRunner(
            build_control_app(self.registry, context, edgeone, console, refresh_metrics),
            access_log=None,
            shutdown_timeout=5.0,
        )
        await self._control.setup()
        await web.TCPSite(self._control, cfg.control.host, cfg.control.port).start()
        self.control_port = int(self._control.addresses[0][1])

    async def start_data(self, sock: socket.socket | None = None, handler: Handler | None = None) -> None:
        """The data plane: the reclaimer and the data listener (on ``sock`` when given), serving
        through ``handler`` (default: the proxy itself)."""
        cfg = self.config
        self.reclaimer.start()
        for purge in self._replayed:
            self.reclaimer.enqueue(purge)
        self._keep_gc()
        serve: Handler = handler or self.proxy
        connection: Callable[[HttpServer], Connection] = Connection
        if self.access_formatter is not None:
            # One ring per data-plane process, named by its pid and a token (decision 0016).
            self.access_ring = RingWriter(
                ring_path(self.access_ring_dir), cfg.logging.access_log_ring_mib << 20
            )
            connection = connection_factory(self.access_ring)
        self._data = await start_server(
            serve, cfg.limits, cfg.data.host, cfg.data.port, sock=sock, connection=connection
        )
        self.data_port = self._data.port

    def _keep_gc(self) -> None:
        # Every process of a node runs these once, whichever planes it serves.
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self.looplag.run())
        if self._gc is None:
            rt = self.config.runtime
            self._gc = asyncio.get_running_loop().create_task(keep_gc(rt.gc_freeze_every, rt.gc_sweep_every))

    async def drain(self, grace: float) -> None:
        """Stop taking connections and let in-flight responses finish (at most ``grace`` seconds)."""
        if self._data is not None:
            await self._data.drain(grace)

    async def stop(self) -> None:
        """Close the listeners, then the background work and the origin pool."""
        if self._data is not None:
            await self._data.close()
        if self.access_ring is not None:
            self.access_ring.flush()  # the last requests' batch, before the formatter's last read
        if self.access_formatter is not None:
            await self.access_formatter.stop()
        if self.access_ring is not None:
            close_ring(self.access_ring)
        if self.access_formatter is not None:
            remove_if_empty(self.access_ring_dir)
        if self._control is not None:
            await self._control.cleanup()
        await self.reclaimer.stop()
        await self.cache_reserve.stop()
        for task in (
            self._housekeeping,
            self._gc,
            self._probe,
            self._queue_sweeper,
            self._events,
            self._push,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.prefetch.drain()
        await self.origin.close()
        if self._demo is not None:
            await self._demo.cleanup()
        self.purges.close()
        self.queues.close()
        if self.disk is not None:
            await asyncio.to_thread(self.disk.close)
        self.database.dispose()
