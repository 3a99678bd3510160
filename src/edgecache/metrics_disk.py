"""Prometheus exposition of the persistent tier and the Cache Reserve clears, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgecache.control.cache_reserve import IN_PROGRESS, CacheReserveService
from edgecache.store.disk import DiskStore


class DiskCollector(Collector):
    """What one process did with the disk tier (its reads, its writer thread's and its fill writer
    process's work): a node of worker processes sums these over its workers."""

    def __init__(self, disk: DiskStore) -> None:
        self._disk = disk

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield the current values (called by the registry on each scrape)."""
        d = self._disk
        s = d.counters()  # the fill writer process's work included (decision 0020)
        yield CounterMetricFamily(
            "edgecache_disk_hits", "Memory misses answered by the disk cache", value=s.hits
        )
        yield CounterMetricFamily(
            "edgecache_disk_misses", "Memory misses the disk could not answer", value=s.misses
        )
        yield CounterMetricFamily(
            "edgecache_disk_filtered",
            "Memory misses the disk's key filter answered without reading the disk",
            value=s.filtered,
        )
        yield CounterMetricFamily(
            "edgecache_disk_writes", "Records written to the disk cache", value=s.writes
        )
        yield CounterMetricFamily("edgecache_disk_evictions", "Disk cache records evicted", value=s.evictions)
        yield CounterMetricFamily(
            "edgecache_disk_commits", "Disk write transactions committed", value=s.commits
        )
        yield CounterMetricFamily(
            "edgecache_disk_write_errors",
            "Disk write batches that failed, and fill-ring records that could not be read",
            value=s.write_errors,
        )
        yield CounterMetricFamily(
            "edgecache_disk_dropped_writes",
            "Fills not written: the writer behind, a purge covering them, or their write failed",
            value=s.dropped,
        )
        yield GaugeMetricFamily(
            "edgecache_disk_write_queue", "Changes waiting for the disk writer", value=d.queue_depth
        )
        yield CounterMetricFamily(
            "edgecache_reserve_hits", "Memory misses answered by the Cache Reserve", value=s.reserve_hits
        )
        yield CounterMetricFamily(
            "edgecache_reserve_evictions", "Reserve records removed over budget", value=s.reserve_evictions
        )
        yield CounterMetricFamily(
            "edgecache_reserve_expired",
            "Reserve records removed after their retention",
            value=s.reserve_expired,
        )


class DiskUsageCollector(Collector):
    """What the node's one shared disk tier holds, and the Cache Reserve clears: reported once per
    node, by its control plane (every process sees the same store; a sum would count it N times)."""

    def __init__(self, disk: DiskStore, reserve: CacheReserveService, zones: list[str]) -> None:
        self._disk = disk
        self._reserve = reserve
        self._zones = zones

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the current values (called by the registry on each scrape)."""
        d = self._disk
        used, count = d.usage()
        yield GaugeMetricFamily("edgecache_disk_entries", "Records in the disk cache", value=count)
        yield GaugeMetricFamily("edgecache_disk_bytes", "Bytes of records in the disk cache", value=used)
        entries = GaugeMetricFamily(
            "edgecache_reserve_entries", "Records in a zone's reserve", labels=["zone"]
        )
        size = GaugeMetricFamily("edgecache_reserve_bytes", "Bytes in a zone's reserve", labels=["zone"])
        for zone in self._zones:
            b, n = d.reserve_usage(zone)
            entries.add_metric([zone], n)
            size.add_metric([zone], b)
        yield entries
        yield size
        running = GaugeMetricFamily(
            "edgecache_reserve_clear_running",
            "1 while a zone's reserve clear is in progress",
            labels=["zone"],
        )
        objects = GaugeMetricFamily(
            "edgecache_reserve_clear_objects", "Objects removed by a zone's latest clear", labels=["zone"]
        )
        removed = GaugeMetricFamily(
            "edgecache_reserve_clear_bytes", "Bytes removed by a zone's latest clear", labels=["zone"]
        )
        for zone, clear in self._reserve.clears().items():
            running.add_metric([zone], 1 if clear.state == IN_PROGRESS else 0)
            objects.add_metric([zone], clear.objects)
            removed.add_metric([zone], clear.bytes)
        yield running
        yield objects
        yield removed
