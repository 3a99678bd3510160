"""What the fill locks of a node's worker processes (decisions 0021, 0028: claims by compare-and-swap
on the position board) cost a miss: CPU per miss in one process, with the proxy sharing fill locks
on a position board and without, rounds interleaved on one node.

Method: ``bench/miss_inprocess.py``'s miss path (request bytes for never-seen keys fed into
data-plane connections whose transports collect writes, 50 at a time, each miss fetched from an
nginx origin over loopback and stored, memory and disk tier on, as a worker runs), once with
``Proxy.share_fills`` on (every miss hashes its key, takes its lock, announces the outcome and
releases it: nobody else holds a lock, so nothing waits) and once with it off, alternating. The
figure is the CPU time per miss of this process and its disk fill writer child, and the same for
this process alone without the disk tier's writer thread (its own CPU clock; the writers' commits
are the noisiest part and the locks add nothing to them), best of the rounds of each; the
difference is the locks' cost. Also the lock calls alone (token + take + release, and a probe) in
a loop.

``--instructions``: instead, the lock calls of one fill (token, take, the stored-recently check a
miss makes, release) in CPU instructions counted by callgrind, per fill over ``--fills`` fills, for
this tree and each ``--src`` (main's, say): a figure the machine's load does not move. Counted in
user space only: the kernel's work of a tree that locks with ``fcntl`` (before decision 0028) is
not in it.

Usage: ``.venv/bin/python bench/fill_locks.py [--rounds N] [--requests N]``;
``.venv/bin/python bench/fill_locks.py --instructions [--fills N] [--src PATH ...]`` (needs valgrind).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import shutil
import tempfile
import time
from pathlib import Path

import _servers as srv
import miss_inprocess as mi
import uvloop
from _callgrind import instructions

from edgecache.app import Node
from edgecache.cluster.board import PositionBoard
from edgecache.cluster.fill_locks import FillLocks
from edgecache.config import Config, DiskStorage, Listener, Storage, Zone

REPO = Path(__file__).resolve().parent.parent


def locks_of(board: PositionBoard) -> FillLocks:
    """Slot 0's fill locks; a tree from before decision 0028 takes no slot."""
    if "slot" in inspect.signature(FillLocks).parameters:
        return FillLocks(board, 0)
    return FillLocks(board)  # type: ignore[call-arg]


def child(fills: int, calls: bool) -> None:
    """The keys of ``fills`` fills, and with ``calls`` their lock calls, as a miss that fetches
    makes them (what start-up and the keys made is out of the collector's way first: the two runs
    differ by the calls alone)."""
    board = PositionBoard.create(2)
    locks = locks_of(board)
    keys = [f"http://127.0.0.1/obj/{i:08d}" for i in range(fills)]
    gc.collect()
    gc.freeze()
    if calls:
        for key in keys:
            token = locks.token(key)
            if locks.take(token):
                locks.stored_recently(token)
                locks.release(token, stored=True)
    board.close()


def count_instructions(fills: int, trees: list[Path]) -> None:
    """Print the instructions per fill of the lock calls in each tree."""
    print("| tree | instructions per fill (token, take, check, release) |")
    print("|---|---:|")
    for src in trees:
        base = instructions(__file__, src, "--fills", str(fills))
        n = instructions(__file__, src, "--fills", str(fills), "--calls")
        print(f"| {src} | {(n - base) / fills:,.0f} |")


def locks_alone(locks: FillLocks, n: int = 100_000) -> tuple[float, float]:
    """CPU µs of one token + take + release, and of one probe of a free lock."""
    start = time.process_time()
    for i in range(n):
        token = locks.token(f"http://127.0.0.1/obj/{i:08d}")
        locks.take(token)
        locks.release(token, stored=True)
    fill = (time.process_time() - start) / n * 1e6
    start = time.process_time()
    for _ in range(n):
        locks.probe(token)
    return fill, (time.process_time() - start) / n * 1e6


async def main(origin_port: int, data_dir: Path, rounds: int) -> None:
    config = Config(
        data_dir=data_dir,
        data=Listener(port=srv.free_port()),
        control=Listener(port=srv.free_port()),
        storage=Storage(disk=DiskStorage(enabled=True)),
        zones=(
            Zone(
                id=srv.ZONE_ID,
                name="bench.test",
                hostnames=("127.0.0.1",),
                origin=f"http://127.0.0.1:{origin_port}",
            ),
        ),
    )
    board = PositionBoard.create(2)
    locks = locks_of(board)
    node = Node(config)
    await node.start()
    costs: dict[bool, list[float]] = {False: [], True: []}
    loop_costs: dict[bool, list[float]] = {False: [], True: []}
    try:
        await mi.miss_path(node, 10**7)  # origin connections open, caches warm
        for r in range(rounds):
            for shared in (False, True) if r % 2 == 0 else (True, False):
                node.proxy.fill_locks = None
                if shared:
                    node.proxy.share_fills(locks, 5.0)
                cpu, writer, child = await mi.miss_path(node, (2 + 2 * r + shared) * 10**7)
                costs[shared].append(cpu)
                loop_costs[shared].append(cpu - writer - child)
        fetches = node.stats.origin_fetches
    finally:
        await node.stop()
    fill, probe = locks_alone(locks)
    board.close()
    print("| measure | CPU µs |")
    print("|---|---:|")
    print(f"| whole miss, fill locks off (best of {rounds}) | {min(costs[False]):.1f} |")
    print(f"| whole miss, fill locks on (best of {rounds}) | {min(costs[True]):.1f} |")
    print(f"| the loop's process but its disk writer thread, fill locks off | {min(loop_costs[False]):.1f} |")
    print(f"| the loop's process but its disk writer thread, fill locks on | {min(loop_costs[True]):.1f} |")
    print(f"| lock calls of one fill alone (token, take, release) | {fill:.2f} |")
    print(f"| one probe of a free lock (a waiter's look) | {probe:.2f} |")
    print(f"\nrounds (off): {', '.join(f'{c:.1f}' for c in costs[False])}")
    print(f"rounds (on):  {', '.join(f'{c:.1f}' for c in costs[True])}")
    print(f"rounds without the writer (off): {', '.join(f'{c:.1f}' for c in loop_costs[False])}")
    print(f"rounds without the writer (on):  {', '.join(f'{c:.1f}' for c in loop_costs[True])}")
    print(f"{fetches:,} origin fetches; {mi.N:,} misses per round, {mi.CONCURRENCY} concurrent.")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=5000, help="per round")
    parser.add_argument("--instructions", action="store_true", help="count the lock calls' instructions")
    parser.add_argument("--fills", type=int, default=20_000, help="with --instructions")
    parser.add_argument("--src", type=Path, action="append", default=[], help="another tree's src")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.fills, args.calls)
        return
    if args.instructions:
        count_instructions(args.fills, [REPO / "src", *args.src])
        return
    mi.N = args.requests
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-fill-locks-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        uvloop.run(main(origin.port, tmp / "node", args.rounds))
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run()
