"""How often a purged, refetched object is lost from the shared disk tier by a late purge removal.

Method (a node of two worker processes, ``edgecache serve`` as ``make run`` starts it, and the
versioned origin of ``tests/workers_node.py``): per trial, a fresh URL is fetched by worker B and
read from the disk tier by worker A, so both hold it in memory; it is purged by URL (hard) through
the API; A's next request is a MISS that refetches and stores it, numbered past the purge; 1.5 s
later B asks for it. A removal of the purged key by key (a request's, queued on a disk writer)
that commits after A's refill used to delete it: B's answer is then a MISS (another origin fetch)
instead of a hit from the disk tier. Prints the trials and how many of them lost the fill. A
correctness count, not a timing: the machine's load changes how often the race is met (the
deterministic reproduction is ``tests/test_purge_late_removal.py``), not what a lost fill is.

Run: ``.venv/bin/python bench/late_purge_removal.py [--trials 20]``; for the code before a change,
point ``PYTHONPATH`` at a copy of its ``src`` (the node's processes inherit it).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from workers_node import HOST, VersionedOrigin, WorkerNode  # noqa: E402

SETTLE = 1.5
"""Seconds between A's refetch and B's request (the reproduction of the defect)."""


def pair(node: WorkerNode) -> tuple[http.client.HTTPConnection, http.client.HTTPConnection]:
    """Two kept-alive connections held by different workers."""
    held: dict[int, http.client.HTTPConnection] = {}
    for _ in range(200):
        conn = node.connection()
        node.get(conn, "/warm")
        pid = node.owner(conn)
        if pid and pid not in held:
            held[pid] = conn
            if len(held) == 2:
                a, b = held.values()
                return a, b
        else:
            conn.close()
    raise SystemExit("connections did not reach two workers")


def trial(node: WorkerNode, a: http.client.HTTPConnection, b: http.client.HTTPConnection, path: str) -> str:
    assert node.get(b, path)[1] == "MISS"  # B's own fill: in B's memory
    deadline = time.monotonic() + 5
    while node.get(a, path)[1] != "HIT":  # from the disk tier
        assert time.monotonic() < deadline, "A never read B's fill"
        time.sleep(0.01)
    node.purge({"files": [f"http://{HOST}{path}"]})
    deadline = time.monotonic() + 5
    while node.get(a, path)[1] != "MISS":  # until A has the purge: its refetch
        assert time.monotonic() < deadline, "A never applied the purge"
        time.sleep(0.002)
    time.sleep(SETTLE)
    return node.get(b, path)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    origin = VersionedOrigin()
    with tempfile.TemporaryDirectory() as tmp:
        node = WorkerNode(Path(tmp), origin)
        try:
            a, b = pair(node)
            answers = [trial(node, a, b, f"/late-removal/{i}") for i in range(args.trials)]
        finally:
            node.stop()
            origin.close()
    lost = sum(1 for answer in answers if answer != "HIT")
    print("B's answers 1.5 s after A's refetch:", " ".join(answers))
    print(f"| trials | fill lost (B misses) |\n|---|---|\n| {args.trials} | {lost} |")


if __name__ == "__main__":
    main()
