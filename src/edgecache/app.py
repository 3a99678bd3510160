"""The composition root: builds one node from a configuration and starts its listeners.

Nothing else in the code base wires components together; tests start nodes through here too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client.registry import Collector, CollectorRegistry

from edgecache.api.console.app import build_console_app
from edgecache.api.context import ControlContext
from edgecache.api.control_app import build_control_app
from edgecache.api.edgeone import actions as _edgeone_actions  # noqa: F401  (registers the actions)
from edgecache.api.edgeone.dispatch import EdgeOneServices, quota_source
from edgecache.background import Background
from edgecache.config import Config, Limits
from edgecache.control.cache_reserve import CacheReserveService, eligibility
from edgecache.control.credentials import CredentialService, seed_identity
from edgecache.control.livestats import LiveStats
from edgecache.control.prefetch import PrefetchService
from edgecache.control.purges import PurgeService
from edgecache.control.push_delivery import PushDelivery
from edgecache.control.queues import QueueService
from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import RateLimiter, account_limits
from edgecache.control.secrets import MasterKey, SecretService
from edgecache.control.sessions import SessionService
from edgecache.control.subscriptions import SubscriptionService
from edgecache.control.task_housekeeping import keep_tasks
from edgecache.db.cache_reserve import CacheReserveStore
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.ledger import LedgerStore
from edgecache.db.tasks import TaskStore
from edgecache.demo import origin as demo_origin
from edgecache.edge.accesslog import FormatterProcess, close_ring, connection_factory
from edgecache.edge.fillwriter import FillWriterProcess
from edgecache.edge.http1 import Connection, Handler, HttpServer, start_server
from edgecache.edge.logring import (
    RingWriter,
    read_counts,
    remove_if_empty,
    remove_stale,
    ring_directory,
    ring_files,
    ring_path,
)
from edgecache.edge.logtail import write_zones
from edgecache.edge.origin import OriginClient
from edgecache.edge.proxy import Proxy
from edgecache.edge.reclaimer import SPACING as RECLAIM_SPACING
from edgecache.edge.reclaimer import Reclaimer
from edgecache.edge.stats import EdgeStats
from edgecache.edge.warm import Warmer
from edgecache.edge.writeback import still_valid
from edgecache.edge.zones import ZoneTable
from edgecache.gcpolicy import keep_gc
from edgecache.looplag import LoopLag
from edgecache.memtrim import release_freed_memory
from edgecache.metrics import AccessLogCollector, EdgeCollector, QueueCollector
from edgecache.metrics_disk import DiskCollector, DiskUsageCollector
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Purge, Selector
from edgecache.store.base import Tier
from edgecache.store.chain import TierChain
from edgecache.store.disk import DiskStore, JobProgress, clear_reserve_job
from edgecache.store.keyfilter import KeyFilter, expected_keys
from edgecache.store.memory import MemoryTier

log = logging.getLogger(__name__)


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
        reclaim_gather: float = 0.0,
        key_filter: KeyFilter | None = None,
    ) -> None:
        """``apply`` receives each accepted purge (default: this process's own index and reclaimer);
        ``acknowledge`` receives each reclaimed one (default: its tasks succeed); ``collector`` is
        what ``/metrics`` reports (default: this process's counters); ``reclaim_gather`` lets purges
        accumulate that many seconds before the reclaimer takes them together; ``key_filter``: the
        disk's key filter a worker was passed by its control plane. A node of worker processes
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
        self.key_filter: KeyFilter | None = None
        """The node's filter of the keys on its disk (``store/keyfilter.py``), shared by its processes."""
        if config.storage.disk.enabled:
            self.disk = self._open_disk(position)
            self.key_filter = self._use_filter(self.disk, key_filter)
        # Objects on disk may predate purges that were never applied to the disk (a crash between
        # a purge's commit and its reclaim): those purges are put in effect again, from the ledger.
        # Without a disk the memory tier starts empty, and the purges need only their numbering.
        floor = position if self.disk is None else min(position, self.disk.reclaimed_upto)
        self.index = EpochIndex(position=floor)
        if self.disk is not None:
            self.tiers = TierChain(
                self.store,
                self.disk,
                reserve_on=self.cache_reserve.is_on,
                reserve_eligible=eligibility({z.id: z.cache_reserve for z in config.zones}),
                still_valid=still_valid(self.index),
                admit_second_fill=config.storage.disk.admission == "second_fill",
            )
        self.origin = origin_client(config.limits)
        self.proxy = Proxy(
            self.zones,
            self.tiers,
            self.origin,
            self.stats,
            max_object_bytes=config.storage.max_object_bytes,
            index=self.index,
            memory=self.store,
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
            warm=Warmer(self.origin, config.data.host, lambda: self.data_port),
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
            gather=reclaim_gather,
            spacing=0.0 if reclaim_gather else RECLAIM_SPACING,
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
        self.fill_writer: FillWriterProcess | None = None
        """The disk tier's fill writer (decision 0020): started with the data plane."""
        self._data: HttpServer | None = None
        self._control: web.AppRunner | None = None
        self._demo: web.AppRunner | None = None
        # /metrics: this process's data-plane figures, or (a control plane of worker processes) the
        # given collector's sums of its workers'; what the node holds as a whole is added by
        # start_control, once per node.
        self.registry = CollectorRegistry()
        if collector is not None:
            self.registry.register(collector)
        else:
            self.registry.register(
                EdgeCollector(
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
                self.registry.register(DiskCollector(self.disk))
        self.sessions = SessionService(self.credentials, config.console.session_hours * 3600)
        self.live = LiveStats(self.registry)
        self._background = Background()
        # The loop probe's figures reach /metrics through this process's own collector only: a
        # control plane that reports its workers' instead would wake 200 times a second for nothing.
        self._probe_loop = collector is None
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
            zones=list(reserve),
        )

    def _use_filter(self, disk: DiskStore, key_filter: KeyFilter | None) -> KeyFilter:
        """The filter ``key_filter`` (a worker's, created by its control plane), else a new one this
        process builds from the disk's keys: the node's first process to open the disk. Sized for
        the disk budget and the budgets of the reserves on now: a reserve turned on later only
        raises the false "maybe" rate (``store/keyfilter.py``)."""
        if key_filter is not None:
            disk.use_filter(key_filter, build=False)
            return key_filter
        budgets = self.config.storage.disk.budget_bytes + sum(
            z.cache_reserve.budget_bytes for z in self.config.zones if self.cache_reserve.is_on(z.id)
        )
        created = KeyFilter.create(expected_keys(budgets, disk.usage()[1]))
        disk.use_filter(created, build=True)
        return created

    def _run_reserve_clear(self, zone_id: str, progress: JobProgress) -> Future[None]:
        if self.disk is None:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return self.disk.run_job(clear_reserve_job(zone_id, progress))

    def apply_purge(self, purge: Purge) -> None:
        """Put a durable purge in effect on this node: the index at once, the reclaimer after."""
        self.index.apply(purge)
        self.proxy.purge_applied()
        self.reclaimer.enqueue(purge)

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
        zone_ids = list(self.zones.by_id)
        self._background.start("tasks", lambda: keep_tasks(self.tasks, cfg.tasks, zone_ids))
        self._background.start("queues", self.queues.keep)
        self._background.start("subscriptions", self.subscriptions.keep)
        self._background.start("push", self.push_delivery.keep)
        self._keep_gc()
        self.registry.register(QueueCollector(self.queues, time.time))
        if self.disk is not None:
            self.registry.register(DiskUsageCollector(self.disk, self.cache_reserve, list(self.zones.by_id)))
        if self.access_formatter is None:
            # Rings a crashed earlier run (log on) left hold tmpfs memory, and nothing reads them now.
            await asyncio.to_thread(remove_stale, self.access_ring_dir)
        else:
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
            quota_for=quota_source(self.quotas, self.zones),
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
        if self.disk is not None:
            # The hit path's disk reads share a read transaction per turn of this loop.
            self.disk.read_in_turns(asyncio.get_running_loop().call_soon)
            if cfg.storage.disk.fill_writer == "process":
                self.fill_writer = FillWriterProcess(cfg, self.disk)
                await self.fill_writer.start()
        # The bound method: calling the Proxy instance itself goes through its type's call slot first.
        serve: Handler = handler or self.proxy.__call__
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
        rt = self.config.runtime
        if self._probe_loop:
            self._background.start("looplag", self.looplag.run)
        self._background.start("gc", lambda: keep_gc(rt.gc_freeze_every, rt.gc_sweep_every))

    async def drain(self, grace: float) -> None:
        """Stop taking connections and let in-flight responses finish (at most ``grace`` seconds)."""
        if self._data is not None:
            await self._data.drain(grace)

    async def stop(self) -> None:
        """Close the listeners, then the background work and the origin pool."""
        if self._data is not None:
            await self._data.close()
        await self.proxy.stop_waiting()
        if self.access_ring is not None:
            self.access_ring.flush()  # the last requests' batch, before the formatter's last read
        if self.access_formatter is not None:
            await self.access_formatter.stop()
        if self.access_ring is not None:
            close_ring(self.access_ring)
        if self.access_formatter is not None and self.access_formatter.started:
            remove_if_empty(self.access_ring_dir)
        if self._control is not None:
            await self._control.cleanup()
        await self.reclaimer.stop()
        await self.cache_reserve.stop()
        await self._background.stop()
        await self.prefetch.drain()
        await self.origin.close()
        if self._demo is not None:
            await self._demo.cleanup()
        self.purges.close()
        self.queues.close()
        if self.fill_writer is not None:
            await self.fill_writer.stop()
        if self.disk is not None:
            await asyncio.to_thread(self.disk.close)
        if self.key_filter is not None:
            self.key_filter.close()
        self.database.dispose()
