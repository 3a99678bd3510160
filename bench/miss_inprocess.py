"""CPU per cache miss inside one edgecache process, and per request of the origin client alone.

Method: an nginx origin (the one `bench/run.py` uses: 1 KiB objects under /obj/NNNNNN) runs as its
own process; a node runs in this process. "miss path": request bytes for never-seen keys are fed
straight into data-plane connections whose transports only collect writes (no client, no kernel on
the client side), 50 connections at a time, each miss going through the cache handler, the fetch,
the origin client over real loopback to nginx, and the store. "origin client alone": the client
fetches the same objects itself, 50 at a time, reading each body. The figure is this process's CPU
time (user + system, `time.process_time`, so the disk tier's writer thread is in it) divided by the
requests: nginx's CPU is not in it, and a busy neighbour slows the run without changing it much.
The whole miss is measured twice, with the persistent (LMDB) tier on, as a node runs by default,
and memory only, which is the miss path's own cost. Best of ``--rounds`` rounds of ``--requests``.
It also counts the asyncio tasks created per miss (a task factory that counts), since each one
costs a loop iteration or more. ``--profile`` prints cProfile's top functions for one memory-only
round (deterministic profiling inflates small functions: read it for where, not for how much);
for a sampling profile, run ``--memory-only`` under ``py-spy record --native``.

Run it against another build to compare (the harness uses only APIs both sides have):
``PYTHONPATH=/path/to/other/src .venv/bin/python bench/miss_inprocess.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import _servers as srv
import uvloop

import edgecache
from edgecache.app import Node
from edgecache.config import Config, DiskStorage, Listener, Storage, Zone
from edgecache.edge.http1 import Connection
from edgecache.edge.origin import OriginClient

N = 20_000
CONCURRENCY = 50
ROUNDS = 5


class CollectingTransport:
    """Stands in for the client's socket: takes writes, never blocks."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def writelines(self, data: list[bytes]) -> None:
        self.bytes += sum(len(d) for d in data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class TimedConnection(Connection):
    """A data-plane connection that tells the harness when each response is finished."""

    done: asyncio.Future[None]

    def finish(self, keep_alive: bool) -> None:
        super().finish(keep_alive)
        if not self.done.done():
            self.done.set_result(None)


async def miss_path(node: Node, start: int) -> float:
    server = node._data
    assert server is not None
    loop = asyncio.get_running_loop()
    per_worker = N // CONCURRENCY

    async def worker(w: int) -> None:
        conn = TimedConnection(server)
        conn.connection_made(CollectingTransport())  # type: ignore[arg-type]
        for i in range(per_worker):
            key = start + w * per_worker + i
            conn.done = loop.create_future()
            conn.data_received(b"GET /obj/%08d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % key)
            await conn.done

    cpu = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return (time.process_time() - cpu) / N * 1e6


async def client_alone(origin_port: int, start: int) -> float:
    client = OriginClient(5.0, 30.0)
    per_worker = N // CONCURRENCY

    async def worker(w: int) -> None:
        for i in range(per_worker):
            key = start + w * per_worker + i
            resp = await client.request(
                "GET", f"http://127.0.0.1:{origin_port}/obj/{key:08d}", {"host": "127.0.0.1"}
            )
            async for _ in resp.chunks():
                pass

    try:
        cpu = time.process_time()
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return (time.process_time() - cpu) / N * 1e6
    finally:
        await client.close()


class TaskCounter:
    """A task factory that counts the tasks the loop creates."""

    def __init__(self) -> None:
        self.created = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        self.created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)


async def whole_miss(
    origin_port: int, data_dir: Path, *, disk: bool, first: int, profile: bool
) -> tuple[float, float, int]:
    """Best CPU µs per miss, tasks created per miss, origin fetches, for one node configuration."""
    config = Config(
        data_dir=data_dir,
        data=Listener(port=srv.free_port()),
        control=Listener(port=srv.free_port()),
        storage=Storage(disk=DiskStorage(enabled=disk)),
        zones=(
            Zone(
                id=srv.ZONE_ID,
                name="bench.test",
                hostnames=("127.0.0.1",),
                origin=f"http://127.0.0.1:{origin_port}",
            ),
        ),
    )
    node = Node(config)
    await node.start()
    loop = asyncio.get_running_loop()
    counter = TaskCounter()
    try:
        await miss_path(node, first)  # connections to the origin opened, caches warm
        loop.set_task_factory(counter)
        costs = [await miss_path(node, first + (r + 1) * 10**6) for r in range(ROUNDS)]
        tasks = counter.created / (ROUNDS * N)
        loop.set_task_factory(None)
        if profile:
            prof = cProfile.Profile(time.thread_time)  # CPU, not wall: neighbours do not count
            prof.enable()
            await miss_path(node, first + 9 * 10**6)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        fetches = node.stats.origin_fetches
    finally:
        loop.set_task_factory(None)
        await node.stop()
    return min(costs), tasks, fetches


async def main(origin_port: int, tmp: Path, profile: bool, memory_only: bool) -> None:
    memory, tasks, fetches = await whole_miss(
        origin_port, tmp / "memory", disk=False, first=10**7, profile=profile
    )
    print(f"edgecache from {Path(edgecache.__file__).parent}")
    print("| measure | CPU µs per request |")
    print("|---|---:|")
    print(f"| whole miss, memory tier only (parse, handler, fetch, origin client, store) | {memory:.1f} |")
    if not memory_only:
        disk, _, more = await whole_miss(origin_port, tmp / "disk", disk=True, first=2 * 10**7, profile=False)
        fetches += more
        alone = min([await client_alone(origin_port, (r + 5) * 10**7) for r in range(ROUNDS)])
        print(f"| whole miss, memory + disk tier (the default), writer thread included | {disk:.1f} |")
        print(f"| origin client alone (request, head, body) | {alone:.1f} |")
    print(
        f"\n{tasks:.2f} asyncio tasks created per miss; {fetches:,} origin fetches by the nodes; "
        f"best of {ROUNDS} x {N:,}, {CONCURRENCY} concurrent."
    )


def run() -> None:
    global N, ROUNDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=N, help="per round")
    parser.add_argument("--profile", action="store_true", help="cProfile one memory-only round")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory-tier miss (e.g. under py-spy)"
    )
    args = parser.parse_args()
    N, ROUNDS = args.requests, args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-miss-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        uvloop.run(main(origin.port, tmp, args.profile, args.memory_only))
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run()
