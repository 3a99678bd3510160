"""CPU per hit from the disk tier inside one edgecache process, without the kernel or a load generator.

Method: a node with the disk tier stores N objects (1 KiB and 64 KiB) on disk, is stopped, and
a second node opens the same data directory with a 1 MiB memory tier, so nearly every hit is read
from disk (LMDB, pages in the page cache) and promoted into memory, as ``bench/disk_hits.py``
measures over HTTP. The cache handler is then called with prebuilt requests for uniformly random
URLs, writing into a transport that only counts writes (as ``bench/hit_inprocess.py``), giving the
event loop a turn after every ``--per-turn`` requests (as a server under load answers a few
connections' requests per turn: the disk tier shares a read transaction within a turn). The figure
is the process's CPU time per request (every thread: the disk writer's renewals count), best of 5
runs of ``--requests``; a second column times memory hits (the same URLs with a 2 GiB memory tier)
for the ratio issue 7 asks about.

Run: ``.venv/bin/python bench/disk_hit_inprocess.py [--objects 10000] [--per-turn 16] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import socket
import tempfile
import time
from pathlib import Path

from hit_inprocess import CountingTransport

from edgecache.app import Node
from edgecache.config import DEMO_ZONE_ID, demo_config
from edgecache.edge.http1 import Connection, Request
from edgecache.httpcache.key import primary_key
from edgecache.store.entry import Entry

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_for(data_dir: Path, memory: int) -> Node:
    config = demo_config(free_port(), free_port(), free_port())
    storage = config.storage.model_copy(update={"memory_bytes": memory})
    return Node(config.model_copy(update={"data_dir": data_dir, "storage": storage}))


def stored(node: Node, paths: list[str], size: int) -> None:
    """Store one object per path through the node's tiers, as a fill does (written through to disk)."""
    now = time.time()
    head = b"Content-Type: application/octet-stream\r\nCache-Control: max-age=86400\r\n"
    for path in paths:
        node.tiers.put(
            Entry(
                zone=DEMO_ZONE_ID,
                key=primary_key("http", HOST, path, node.zones.by_id[DEMO_ZONE_ID].key_options),
                status=200,
                head=head,
                body=path.encode().ljust(size, b"."),
                tags=(),
                stored_seq=0,
                response_time=now,
                initial_age=0.0,
                freshness_lifetime=86400.0,
                length_known=True,
            )
        )
    assert node.disk is not None
    node.disk.flush()


async def per_hit(
    node: Node, requests: list[Request], per_turn: int, runs: int = 5, profile: str = ""
) -> float:
    """Process CPU µs per handled request, best of ``runs``, the loop given a turn every ``per_turn``."""
    server = node._data
    assert server is not None
    conn = Connection(server)
    transport = CountingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    proxy = node.proxy
    disk = node.disk
    assert disk is not None
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for i in range(0, len(requests), per_turn):
            for req in requests[i : i + per_turn]:
                proxy(req, conn)
            await asyncio.sleep(0)
        # The disk writer's share (renewing the places of what was read) is part of a hit's cost.
        disk.flush()
        best = min(best, (time.process_time() - started) / len(requests) * 1e6)
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(0, len(requests), per_turn):
            for req in requests[i : i + per_turn]:
                proxy(req, conn)
            await asyncio.sleep(0)
        prof.disable()
        print(f"\n-- profile: {profile}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    return best


async def measure(
    size: int, n: int, requests: int, per_turn: int, profile: bool
) -> tuple[float, float, int, int]:
    paths = [f"/b{size}/{i:06d}" for i in range(n)]
    rng = random.Random(7)
    order = [paths[rng.randrange(n)] for _ in range(requests)]
    reqs = [Request("GET", p, {"host": HOST}, b"", "1.1", True, "127.0.0.1") for p in order]
    with tempfile.TemporaryDirectory(prefix="edgecache-disk-hit-") as d:
        data_dir = Path(d)
        node = node_for(data_dir, 2 << 30)
        await node.start()
        try:
            stored(node, paths, size)
            memory = await per_hit(node, reqs, per_turn, profile=f"memory hits, {size} B" if profile else "")
        finally:
            await node.stop()
        node = node_for(data_dir, 1 << 20)
        await node.start()
        try:
            hits_before = node.stats.hits
            assert node.disk is not None
            disk_before = node.disk.stats.hits
            disk = await per_hit(node, reqs, per_turn, profile=f"disk hits, {size} B" if profile else "")
            hits = node.stats.hits - hits_before
            from_disk = node.disk.stats.hits - disk_before
        finally:
            await node.stop()
    return disk, memory, hits, from_disk


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--per-turn", type=int, default=16, help="requests per turn of the event loop")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one run of each kind")
    args = ap.parse_args()
    rows = []
    for size in (1024, 65536):
        rows.append((size, *await measure(size, args.objects, args.requests, args.per_turn, args.profile)))
    print("| size | disk hit µs CPU | memory hit µs CPU | disk / memory speed | hits | from disk |")
    print("|---|---:|---:|---:|---:|---:|")
    for size, disk, memory, hits, from_disk in rows:
        print(
            f"| {size // 1024} KiB | {disk:.1f} | {memory:.1f} | {memory / disk:.2f}x "
            f"| {hits:,} | {from_disk / max(hits, 1):.0%} |"
        )
    print(
        f"\n{args.objects:,} objects, {args.requests:,} random requests per run, "
        f"{args.per_turn} per loop turn, best of 5."
    )


if __name__ == "__main__":
    asyncio.run(main())
