"""Prometheus exposition of every component's counters, read at scrape time.

Components keep plain counters (see ``edge/stats.py``); this collector turns them into metric
families when ``/metrics`` is scraped, so nothing on the hot path touches prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edgecache.allocator import running
from edgecache.control.queues import QueueService
from edgecache.edge.http1 import Http1Stats
from edgecache.edge.logring import RingCounts
from edgecache.edge.origin import OriginStats
from edgecache.edge.reclaimer import Reclaimer
from edgecache.edge.stats import ORIGIN_BUCKETS, EdgeStats
from edgecache.looplag import STALL, LoopLag
from edgecache.purge.index import EpochIndex
from edgecache.store.base import Tier


class EdgeCollector(Collector):
    """Data-plane, HTTP server, memory-tier and invalidation metrics of one node."""

    def __init__(
        self,
        stats: EdgeStats,
        store: Tier,
        *,
        http: Callable[[], Http1Stats | None],
        index: Callable[[], EpochIndex],
        reclaimer: Reclaimer,
        looplag: LoopLag,
        origin: OriginStats,
    ) -> None:
        self._stats = stats
        self._looplag = looplag
        self._origin = origin
        self._store = store
        self._http = http
        self._index = index
        self._reclaimer = reclaimer
        self._allocator = running()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        """Yield the current values (called by the registry on each scrape)."""
        s = self._stats
        responses = CounterMetricFamily(
            "edgecache_responses", "Answers by CF-Cache-Status", labels=["cache_status"]
        )
        for status, n in s.responses().items():
            responses.add_metric([status], n)
        yield responses
        yield CounterMetricFamily("edgecache_hits", "Fresh cache hits", value=s.hits)
        misses = sum(n for st, n in s.responses().items() if st in ("MISS", "EXPIRED", "REVALIDATED"))
        yield CounterMetricFamily("edgecache_misses", "Answers that needed the origin", value=misses)
        yield CounterMetricFamily(
            "edgecache_sent_bytes", "Response bytes written to clients", value=s.bytes_sent
        )
        yield CounterMetricFamily(
            "edgecache_origin_fetches", "Requests sent to origins", value=s.origin_fetches
        )
        yield CounterMetricFamily(
            "edgecache_unsafe_invalidations",
            "Entries removed by successful unsafe requests",
            value=s.invalidated_by_unsafe,
        )
        yield CounterMetricFamily(
            "edgecache_origin_connections",
            "Connections opened to origins (the rest of the requests reused one)",
            value=self._origin.connections_opened,
        )
        yield CounterMetricFamily(
            "edgecache_origin_requests",
            "Requests written to origins, retries included",
            value=self._origin.requests,
        )
        yield CounterMetricFamily(
            "edgecache_origin_retries",
            "Idempotent requests re-sent after a reused connection closed unanswered",
            value=self._origin.retries,
        )
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(ORIGIN_BUCKETS, s.origin_buckets, strict=True):
            total += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily(
            "edgecache_origin_latency_seconds",
            "Time to the origin's response head",
            buckets=cumulative,
            sum_value=s.origin_sum,
        )
        yield GaugeMetricFamily(
            "edgecache_stored_entries", "Entries in the memory tier", value=len(self._store)
        )
        yield GaugeMetricFamily(
            "edgecache_stored_bytes", "Bytes charged in the memory tier", value=self._store.bytes_used
        )
        yield GaugeMetricFamily(
            "edgecache_storage_budget_bytes", "Memory tier budget", value=self._store.budget
        )
        yield CounterMetricFamily(
            "edgecache_evictions", "Entries evicted for space", value=self._store.evictions
        )
        yield from self._http_metrics()
        yield from self._purge_metrics()
        yield GaugeMetricFamily(
            "edgecache_loop_stall_longest_seconds",
            "Longest time the event loop ran a probe late since the start (resolution: the probe period)",
            value=self._looplag.longest,
        )
        yield GaugeMetricFamily(
            "edgecache_loop_stall_longest_cpu_seconds",
            "Most CPU time the event loop's thread spent within one probe period since the start",
            value=self._looplag.longest_cpu,
        )
        allocator = GaugeMetricFamily(
            "edgecache_allocator_processes", "Processes running on this malloc", labels=["allocator"]
        )
        allocator.add_metric([self._allocator], 1)
        yield allocator
        yield CounterMetricFamily(
            "edgecache_loop_stalls",
            f"Probe wake-ups later than {STALL * 1000:.0f} ms",
            value=self._looplag.stalls,
        )

    def _http_metrics(self) -> Iterator[CounterMetricFamily]:
        http = self._http()
        if http is None:
            return
        yield CounterMetricFamily(
            "edgecache_http_connections", "Client connections accepted", value=http.connections_opened
        )
        yield CounterMetricFamily("edgecache_http_requests", "Complete requests parsed", value=http.requests)
        rejected = CounterMetricFamily(
            "edgecache_http_rejected", "Requests the server refused itself, by status", labels=["status"]
        )
        for status, n in sorted(http.rejected.items()):
            rejected.add_metric([str(status)], n)
        yield rejected
        yield CounterMetricFamily(
            "edgecache_http_timeouts",
            "Connections closed for a header, body or send timeout",
            value=http.timeouts,
        )

    def _purge_metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        index = self._index()
        r = self._reclaimer
        yield GaugeMetricFamily("edgecache_purge_ledger_position", "Last purge applied", value=index.position)
        yield GaugeMetricFamily("edgecache_purge_index_rows", "Outstanding epoch rows", value=index.rows)
        yield GaugeMetricFamily("edgecache_purge_pending", "Purges not reclaimed yet", value=r.pending)
        yield CounterMetricFamily(
            "edgecache_purge_removed", "Entries deleted by hard purges", value=r.removed
        )
        yield CounterMetricFamily(
            "edgecache_purge_marked_stale", "Entries marked stale by soft purges", value=r.marked_stale
        )
        yield CounterMetricFamily(
            "edgecache_purge_hits_refused",
            "Lookups that found their entry purged before the reclaimer reached it",
            value=self._stats.purged_on_lookup,
        )


class QueueCollector(Collector):
    """Per-queue figures: backlog from the service's last snapshot, activity since this node
    started (each node counts what it served; sum across nodes for a cluster)."""

    def __init__(self, queues: QueueService, clock: Callable[[], float]) -> None:
        self._queues = queues
        self._clock = clock

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield the current values (called by the registry on each scrape)."""
        labels = ["queue", "queue_id"]
        backlog = GaugeMetricFamily("edgecache_queue_backlog_messages", "Messages stored", labels=labels)
        size = GaugeMetricFamily("edgecache_queue_backlog_bytes", "Bytes of stored messages", labels=labels)
        oldest = GaugeMetricFamily(
            "edgecache_queue_oldest_message_age_seconds", "Age of the oldest stored message", labels=labels
        )
        names: dict[str, str] = {}
        now = self._clock()
        for q, b in self._queues.snapshot:
            names[q.id] = q.name
            backlog.add_metric([q.name, q.id], b.count)
            size.add_metric([q.name, q.id], b.bytes)
            oldest.add_metric([q.name, q.id], max(0.0, now - b.oldest_ms / 1000) if b.oldest_ms else 0.0)
        yield from (backlog, size, oldest)
        families = {
            "pushed": CounterMetricFamily("edgecache_queue_pushed", "Messages pushed", labels=labels),
            "delivered": CounterMetricFamily(
                "edgecache_queue_pulled", "Messages delivered by pulls", labels=labels
            ),
            "acked": CounterMetricFamily("edgecache_queue_acked", "Messages acknowledged", labels=labels),
            "retried": CounterMetricFamily("edgecache_queue_retried", "Messages retried", labels=labels),
            "dead_lettered": CounterMetricFamily(
                "edgecache_queue_dead_lettered",
                "Messages out of retries (moved to the dead-letter queue, or deleted)",
                labels=labels,
            ),
        }
        for queue_id, c in list(self._queues.counters.items()):
            for attr, family in families.items():
                family.add_metric([names.get(queue_id, ""), queue_id], getattr(c, attr))
        yield from families.values()
        yield CounterMetricFamily(
            "edgecache_queue_commits",
            "Transactions of the queue writer (group commits)",
            value=self._queues.commits,
        )


class AccessLogCollector(Collector):
    """The access log's rings: records captured, written out as lines, and lost to overrun."""

    def __init__(self, rings: Callable[[], list[RingCounts]]) -> None:
        self._rings = rings

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Sum the counters in every ring's header (one ring per data-plane process)."""
        rings = self._rings()
        yield CounterMetricFamily(
            "edgecache_access_log_records",
            "Requests recorded in the access log's rings",
            value=sum(r.written for r in rings),
        )
        yield CounterMetricFamily(
            "edgecache_access_log_lines",
            "Access-log lines the node's formatter wrote",
            value=sum(r.logged for r in rings),
        )
        yield CounterMetricFamily(
            "edgecache_access_log_lost",
            "Access-log records overwritten before the formatter read them",
            value=sum(r.lost for r in rings),
        )
