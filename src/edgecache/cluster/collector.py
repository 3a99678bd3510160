"""``/metrics`` of a node of worker processes: the node as a whole, and each process where it matters.

Why an aggregation in the control plane rather than prometheus-client's multiprocess mode: our
counters are plain integers read at scrape time by a custom collector (``metrics.py``: nothing on
the hot path touches prometheus_client), and multiprocess mode only aggregates its own metric
objects, kept in per-process files that custom collectors cannot join. So each worker serialises
its own collector's samples when asked (``families``), and the control plane adds them up.

Rules:
- A sample of the same name and labels is summed across processes, except the positions in
  ``LOWEST``, where the node's value is the lowest process's (the node has applied a purge once
  every process has).
- Per process, labelled ``worker`` (the slot, stable across restarts): applied and reclaimed ledger
  positions, resident memory, restarts, and responses by cache status.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

Families = list[list[Any]]
"""Serialised metric families: ``[name, type, documentation, [[sample, labels, value], ...]]``."""

LOWEST = frozenset({"edgecache_purge_ledger_position"})
_PAGE = os.sysconf("SC_PAGE_SIZE")


def families(registry: CollectorRegistry) -> Families:
    """One process's current samples, serialisable as JSON."""
    return [
        [m.name, m.type, m.documentation, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in registry.collect()
    ]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the control plane knows of one worker slot at scrape time."""

    slot: int
    pid: int
    alive: bool
    restarts: int
    applied: int
    reclaimed: int
    families: Families


class NodeCollector(Collector):
    """The node's metrics, gathered from its worker processes."""

    def __init__(
        self,
        workers: Callable[[], Sequence[WorkerView]],
        published: Callable[[], int],
        on_collect: Callable[[], object] | None = None,
    ) -> None:
        """``workers`` gives each slot's latest samples; ``on_collect`` asks for newer ones."""
        self._workers = workers
        self._published = published
        self._on_collect = on_collect

    def collect(self) -> Iterator[Metric]:
        """Summed families, then the per-process ones (called by the registry on each scrape)."""
        views = self._workers()
        if self._on_collect is not None:
            self._on_collect()
        yield from _summed([v.families for v in views if v.alive])
        yield GaugeMetricFamily(
            "edgecache_ledger_published_position",
            "Newest committed purge announced to the worker processes",
            value=self._published(),
        )
        yield GaugeMetricFamily(
            "edgecache_workers", "Worker processes running", value=sum(v.alive for v in views)
        )
        applied = GaugeMetricFamily(
            "edgecache_worker_applied_position", "Last purge in the process's index", labels=["worker"]
        )
        reclaimed = GaugeMetricFamily(
            "edgecache_worker_reclaimed_position", "Last purge the process reclaimed", labels=["worker"]
        )
        rss = GaugeMetricFamily("edgecache_worker_rss_bytes", "Resident memory", labels=["worker"])
        restarts = CounterMetricFamily(
            "edgecache_worker_restarts", "Times the supervisor replaced the process", labels=["worker"]
        )
        responses = CounterMetricFamily(
            "edgecache_worker_responses", "Answers by CF-Cache-Status", labels=["worker", "cache_status"]
        )
        for v in views:
            slot = str(v.slot)
            applied.add_metric([slot], v.applied)
            reclaimed.add_metric([slot], v.reclaimed)
            rss.add_metric([slot], rss_bytes(v.pid) if v.alive else 0)
            restarts.add_metric([slot], v.restarts)
            for name, _, _, samples in v.families if v.alive else ():
                if name == "edgecache_responses":
                    for _, labels, value in samples:
                        responses.add_metric([slot, labels["cache_status"]], value)
        yield from (applied, reclaimed, rss, restarts, responses)


def _summed(per_process: Sequence[Families]) -> Iterator[Metric]:
    merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for fams in per_process:
        for name, typ, doc, samples in fams:
            _, _, values = merged.setdefault(name, (typ, doc, {}))
            for sample, labels, value in samples:
                key = (sample, tuple(sorted(labels.items())))
                if key not in values:
                    values[key] = value
                elif name in LOWEST:
                    values[key] = min(values[key], value)
                else:
                    values[key] += value
    for name, (typ, doc, values) in merged.items():
        metric = Metric(name, doc, typ)
        for (sample, labels), value in values.items():
            metric.add_sample(sample, dict(labels), value)
        yield metric
