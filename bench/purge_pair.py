"""Purge cost against the number of stored objects, with two nodes side by side: 10k and 1M.

Run: ``.venv/bin/python bench/purge_pair.py [--rounds 30]`` (about 2 minutes; ~2.5 GB). Two nodes
(``bench/_purge_node.py``, as ``bench/purge_api.py`` starts them) run at once, one filled with 10k
synthetic entries and one with 1M, and every timed purge alternates between them (which goes first
alternates by round), so the machine's load, which on a shared box moves by the minute, falls on
both alike: ``purge_api.py`` runs the sizes one after the other, minutes apart.

The timed purge is a tag nobody carries (the whole API path and the durable commit, nothing to
reclaim), preceded by one of three sequences:

- ``plain``: nothing (the previous purge was drained just before);
- ``refill``: the harness puts N/100 entries back into the tier first, as ``purge_api.py`` does
  after every purge of 1% (10k entries at 1M, 100 at 10k);
- ``refill_settle``: the same, then one untimed purge of nothing, drained.

Printed per sequence and N: the API latency (wall clock: noisy on a shared machine), and the CPU the
node's event-loop thread and its ledger-writer thread spent from just before the purge to just
after its answer (the kernel's per-thread run time: what a loaded machine distorts least). The
ratio 1M/10k of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import _servers as srv
from _purge_client import EdgeNode
from purge_api import budget_for, n_label

SIZES = (10_000, 1_000_000)
SEQUENCES = ("plain", "refill", "refill_settle")


def thread_ms(node: EdgeNode) -> tuple[float, float]:
    """CPU ms so far of the node's event-loop thread and of its ledger writer."""
    threads = node.cmd("cpu")["threads"]
    return threads.get("MainThread", 0.0) * 1000, threads.get("edgecache-ledger", 0.0) * 1000


def timed_floor(node: EdgeNode, n: int, sequence: str, r: int) -> tuple[float, float, float]:
    """(latency ms, loop CPU ms, ledger CPU ms) of one purge of nothing after ``sequence``."""
    if sequence.startswith("refill"):
        node.cmd("refill", ranges=[[3, n, 100]])
    if sequence.endswith("settle"):
        node.purge({"tags": [f"settle-{r}"]})
        node.cmd("drain")
    loop0, ledger0 = thread_ms(node)
    ms, status, answer = node.purge({"tags": [f"nomatch-{sequence}-{r}"]})
    loop1, ledger1 = thread_ms(node)
    if status != 200 or not (answer or {}).get("success"):
        raise RuntimeError(f"purge failed: {status} {answer}")
    node.cmd("drain")
    return ms, loop1 - loop0, ledger1 - ledger0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-purge-pair-"))
    origin = srv.start_origin(tmp)
    nodes: dict[int, EdgeNode] = {}
    try:
        for n in SIZES:
            node = nodes[n] = EdgeNode(f"pair-{n_label(n)}", tmp, origin.port, budget_for(n))
            node.cmd("fill", n=n)
            node.purge({"tags": ["warm-up"]})  # the connection, the token cache: untimed
            node.cmd("drain")
        got: dict[tuple[int, str], list[tuple[float, float, float]]] = {
            (n, s): [] for n in SIZES for s in SEQUENCES
        }
        for r in range(args.rounds):
            for sequence in SEQUENCES:
                for n in SIZES if r % 2 == 0 else SIZES[::-1]:
                    got[(n, sequence)].append(timed_floor(nodes[n], n, sequence, r))
        print(
            "| sequence before the timed purge | N | latency p50 ms (noisy) | loop-thread CPU p50 ms"
            " | ledger-thread CPU p50 ms |"
        )
        print("|---|---|---:|---:|---:|")
        for sequence in SEQUENCES:
            medians = {
                n: [statistics.median(x[i] for x in got[(n, sequence)]) for i in range(3)] for n in SIZES
            }
            for n in SIZES:
                lat, loop, ledger = medians[n]
                print(f"| {sequence} | {n_label(n)} | {lat:.2f} | {loop:.2f} | {ledger:.2f} |")
            small, large = (medians[n] for n in SIZES)
            ratios = " | ".join(f"{b / a:.2f}x" for a, b in zip(small, large, strict=True))
            print(f"| {sequence} | 1M/10k | {ratios} |")
    finally:
        for node in nodes.values():
            node.stop()
        srv.stop(origin)


if __name__ == "__main__":
    main()
