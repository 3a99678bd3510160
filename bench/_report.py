"""Turn samples into markdown tables: medians with min-max, and edgecache against the best peer.

Rules: every metric is summarised on its own (median of the req/s runs, median of the p99s, ...), as in
the reference measurements; a server that could not run gets a row that says why instead of numbers.
Requests per server CPU-second are taken per run (req/s / server CPU share) and summarised the same way.
Each server's req/s is also given as a fraction of the bare ceiling's from the same run.
Each table names the load generator (its CPU column and its two latency figures: wrk's p50 and p99,
h2load's mean and maximum) and the servers' configuration (``run.py --client``, ``--workers``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

EDGECACHE = "edgecache"
PEERS = ("nginx", "varnish")
CEILING = "bare"
"""The bare Python server (``_bare.py``): a ceiling to compare with, never a peer."""
BASELINE = "edgecache-baseline"
"""Another build of edgecache measured in the same run (``run.py --baseline``)."""


@dataclass(frozen=True)
class Sample:
    rps: float
    latency_ms: tuple[float, float]
    """The client's two latency figures, named by ``Scenario.latency`` (wrk: p50, p99)."""
    errors: int
    server_cpu: float
    client_cpu: float
    origin_cpu: float
    other_cpu: float
    """CPU taken by processes outside the benchmark during the run (a noisy neighbour), % of one core."""

    @property
    def per_cpu_second(self) -> float:
        """Requests served per second of server CPU (utime + stime)."""
        return self.rps / (self.server_cpu / 100) if self.server_cpu > 0 else 0.0


@dataclass
class Scenario:
    name: str
    title: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    client: str = "wrk"
    latency: tuple[str, str] = ("p50", "p99")
    setup: str = ""
    """The servers' configuration, printed under the title (e.g. how many worker processes)."""

    def median_rps(self, server: str) -> float | None:
        runs = self.samples.get(server)
        return statistics.median(s.rps for s in runs) if runs else None


@dataclass(frozen=True)
class Memory:
    server: str
    objects: int
    empty_rss: int
    full_rss: int
    fill_seconds: float
    fill_errors: int
    sampled: int
    sampled_hits: int

    @property
    def growth(self) -> float:
        return (self.full_rss - self.empty_rss) / self.objects

    @property
    def overhead(self) -> float:
        return self.growth - 1024


def _spread(values: list[float], fmt: str) -> str:
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def best_peer(scn: Scenario) -> tuple[str, float] | None:
    peers = [(p, r) for p in PEERS if (r := scn.median_rps(p)) is not None]
    return max(peers, key=lambda pr: pr[1]) if peers else None


def scenario_table(scn: Scenario) -> str:
    first, second = scn.latency
    head = (
        f"| server | req/s median (min-max) | req per server CPU-s | {first} ms | {second} ms | errors "
        f"| server CPU % | {scn.client} CPU % | origin CPU % | other CPU % | vs best peer | of bare |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [f"### {scn.title}", ""]
    if scn.setup:
        rows += [scn.setup, ""]
    rows.append(head)
    best = best_peer(scn)
    ceiling = scn.median_rps(CEILING)
    for server, runs in scn.samples.items():
        rps = statistics.median(s.rps for s in runs)
        ratio = ""
        if best is not None and server in (EDGECACHE, BASELINE, best[0]):
            ratio = f"{rps / best[1]:.2f}x {best[0]}"
        of_bare = f"{rps / ceiling:.2f}" if ceiling else ""
        rows.append(
            f"| {server} | {_spread([s.rps for s in runs], ',.0f')}"
            f" | {_spread([s.per_cpu_second for s in runs], ',.0f')}"
            f" | {_spread([s.latency_ms[0] for s in runs], '.2f')}"
            f" | {_spread([s.latency_ms[1] for s in runs], '.2f')}"
            f" | {sum(s.errors for s in runs)}"
            f" | {statistics.median(s.server_cpu for s in runs):.0f}"
            f" | {statistics.median(s.client_cpu for s in runs):.0f}"
            f" | {statistics.median(s.origin_cpu for s in runs):.0f}"
            f" | {statistics.median(s.other_cpu for s in runs):.0f} | {ratio} | {of_bare} |"
        )
    rows += [f"| {name}: not available ({_cell(why)}) |" + " |" * 11 for name, why in scn.unavailable.items()]
    return "\n".join(rows) + "\n"


def memory_table(results: list[Memory], unavailable: dict[str, str]) -> str:
    rows = [
        f"### Memory: {results[0].objects if results else 100_000:,} distinct 1 KiB objects",
        "",
        "| server (process) | RSS empty MB | RSS full MB | growth B/object | overhead B/object "
        "| fill s (req/s) | fill errors | HIT in sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        rows.append(
            f"| {m.server} | {m.empty_rss / 1e6:.1f} | {m.full_rss / 1e6:.1f}"
            f" | {m.growth:,.0f} | {m.overhead:,.0f}"
            f" | {m.fill_seconds:.1f} ({m.objects / m.fill_seconds:,.0f}) | {m.fill_errors}"
            f" | {m.sampled_hits}/{m.sampled} |"
        )
    rows += [f"| {name}: not available ({_cell(why)}) |" + " |" * 7 for name, why in unavailable.items()]
    by_name = {m.server.split()[0]: m for m in results}
    if EDGECACHE in by_name and "varnish" in by_name:
        ec, vn = by_name[EDGECACHE], by_name["varnish"]
        rows += [
            "",
            f"edgecache / Varnish overhead per object: {ec.overhead / vn.overhead:.2f}x "
            f"({ec.overhead:,.0f} B vs {vn.overhead:,.0f} B; target ≤ 1,024 B)",
        ]
    return "\n".join(rows) + "\n"
