"""CPU per cache miss inside one edgecache process, and per request of the origin client alone.

Method: an nginx origin (the one `bench/run.py` uses: 1 KiB objects under /obj/NNNNNN) runs as its
own process; a node runs in this process. "miss path": request bytes for never-seen keys are fed
straight into data-plane connections whose transports only collect writes (no client, no kernel on
the client side), 50 connections at a time, each miss going through the cache handler, the fetch,
the origin client over real loopback to nginx, and the store. "origin client alone": the client
fetches the same objects itself, 50 at a time, reading each body. The figure is this process's CPU
time (user + system, `time.process_time`, so the disk tier's writer thread is in it), plus the CPU
of the disk tier's fill writer process when the node runs one (decision 0020; its own row too),
divided by the requests: nginx's CPU is not in it, and a busy neighbour slows the run without
changing it much.
The whole miss is measured twice, with the persistent (LMDB) tier on, as a node runs by default,
and memory only, which is the miss path's own cost. With the disk tier, a round ends when the
writer has committed its fills (``DiskStore.flush``), and the writer thread's own CPU clock gives
its part; the records written per commit are printed. Best of ``--rounds`` rounds of ``--requests``.
It also counts the asyncio tasks created per miss (a task factory that counts), since each one
costs a loop iteration or more. ``--profile`` prints cProfile's top functions for one memory-only
round, or of one round with the disk tier with ``--disk-only`` (deterministic profiling inflates
small functions: read it for where, not for how much); with ``--bytecodes`` it prints instead
the bytecodes and calls per miss of each Python function (``BytecodeCounter``), a count the
machine's load does not move;
for a sampling profile, run ``--memory-only`` (or ``--disk-only`` with ``--threads``) under
``py-spy record --native``.

Run it against another build to compare (the harness uses only APIs both sides have):
``PYTHONPATH=/path/to/other/src .venv/bin/python bench/miss_inprocess.py``. ``--second-fill`` adds
the whole miss with ``storage.disk.admission = "second_fill"`` (decision 0018: never-seen keys are
not written to disk); builds without that option do not have it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
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


BYTECODES = False
"""``--bytecodes``: count bytecodes per function instead of cProfile's times (see BytecodeCounter)."""


class BytecodeCounter:
    """Bytecodes executed and calls made per Python function, through ``sys.settrace``'s opcode
    events (the event loop's thread only): where a miss's Python goes, in units the machine's load
    does not move. A bytecode is ~25 instructions on average on this path (~100k instructions of
    the interpreter's loop per ~3.9k bytecodes, callgrind), a Python call a few hundred more."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        code = frame.f_code
        name = f"{code.co_filename.rsplit('/src/', 1)[-1]}:{code.co_firstlineno}({code.co_name})"
        if event == "call":
            self.calls[name] += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.codes[name] += 1
        return self.trace

    def print(self, requests: int) -> None:
        print("| bytecodes per miss | calls per miss | function |\n|---:|---:|---|")
        for name, n in self.codes.most_common(40):
            print(f"| {n / requests:.1f} | {self.calls[name] / requests:.2f} | `{name}` |")
        print(f"\n{sum(self.codes.values()) / requests:,.0f} bytecodes and "
              f"{sum(self.calls.values()) / requests:,.0f} Python calls per miss")  # fmt: skip


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


async def miss_path(node: Node, start: int) -> tuple[float, float, float]:
    """CPU µs per miss of the whole process with its fill writer process, of the disk tier's
    writer thread alone (0 without one), and of the fill writer process alone (0 without one),
    for one round of ``N`` never-seen keys."""
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

    writer = _writer_clock(node)
    child = _fill_writer_pid(node)
    cpu = time.process_time()
    wcpu = 0.0 if writer is None else time.clock_gettime(writer)
    ccpu = _process_cpu(child)
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    if node.disk is not None:
        # The writers' work for this round's fills belongs to this round.
        node.disk.flush()
    used = time.process_time() - cpu
    wused = 0.0 if writer is None else time.clock_gettime(writer) - wcpu
    cused = _process_cpu(child) - ccpu
    return (used + cused) / N * 1e6, wused / N * 1e6, cused / N * 1e6


def _fill_writer_pid(node: Node) -> int | None:
    """The pid of the node's fill writer process (None: none, or a build without one)."""
    fw = getattr(node, "fill_writer", None)
    return None if fw is None else fw.pid


def _process_cpu(pid: int | None) -> float:
    """Seconds of CPU a process has used (its threads' time on CPU, from /proc: nanoseconds)."""
    if pid is None:
        return 0.0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _writer_clock(node: Node) -> int | None:
    """The CPU clock of the disk tier's writer thread (None without a disk tier)."""
    if node.disk is None:
        return None
    ident = node.disk._thread.ident
    assert ident is not None
    return time.pthread_getcpuclockid(ident)


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
    origin_port: int, data_dir: Path, *, disk: bool, first: int, profile: bool, second_fill: bool = False
) -> tuple[tuple[float, float, float], float, int, float]:
    """Best CPU µs per miss (with the writer thread's and the fill writer process's parts of it),
    tasks created per miss, origin fetches, and the disk tier's records written per commit, for
    one node configuration."""
    admission = {"admission": "second_fill"} if second_fill else {}
    config = Config(
        data_dir=data_dir,
        data=Listener(port=srv.free_port()),
        control=Listener(port=srv.free_port()),
        storage=Storage(disk=DiskStorage(enabled=disk, **admission)),
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
        if profile and BYTECODES:
            counted_codes = BytecodeCounter()
            sys.settrace(counted_codes.trace)
            await miss_path(node, first + 9 * 10**6)
            sys.settrace(None)
            counted_codes.print(N)
        elif profile:
            prof = cProfile.Profile(time.thread_time)  # CPU, not wall: neighbours do not count
            prof.enable()
            await miss_path(node, first + 9 * 10**6)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        fetches = node.stats.origin_fetches
        counted = None if node.disk is None else getattr(node.disk, "counters", lambda: node.disk.stats)()
        per_commit = 0.0 if counted is None else counted.writes / max(counted.commits, 1)
    finally:
        loop.set_task_factory(None)
        await node.stop()
    return min(costs), tasks, fetches, per_commit


async def main(origin_port: int, tmp: Path, profile: bool, only: str | None, second_fill: bool) -> None:
    print(f"edgecache from {Path(edgecache.__file__).parent}")
    print("| measure | CPU µs per request |")
    print("|---|---:|")
    tasks, fetches = 0.0, 0
    if only != "disk":
        (memory, _, _), tasks, fetches, _ = await whole_miss(
            origin_port, tmp / "memory", disk=False, first=10**7, profile=profile
        )
        what = "whole miss, memory tier only (parse, handler, fetch, origin client, store)"
        print(f"| {what} | {memory:.1f} |")
    if only != "memory":
        (disk, writer, child), tasks, more, per_commit = await whole_miss(
            origin_port, tmp / "disk", disk=True, first=2 * 10**7, profile=profile and only == "disk"
        )
        fetches += more
        what = "whole miss, memory + disk tier (the default), writer thread and fill writer process included"
        print(f"| {what} | {disk:.1f} |")
        print(f"| of which the disk tier's writer thread (same round) | {writer:.1f} |")
        print(f"| of which the disk tier's fill writer process (same round) | {child:.1f} |")
        print(f"| the data-plane process alone (the event loop's bound), disk tier on | {disk - child:.1f} |")
        print(f"| (records written per disk commit, over the whole run) | {per_commit:.0f} |")
    if second_fill:
        (admitted, _, _), _, more, _ = await whole_miss(
            origin_port, tmp / "second", disk=True, first=3 * 10**7, profile=False, second_fill=True
        )
        fetches += more
        print(f"| whole miss, memory + disk tier, admission second_fill (nothing written) | {admitted:.1f} |")
    if only is None:
        alone = min([await client_alone(origin_port, (r + 5) * 10**7) for r in range(ROUNDS)])
        print(f"| origin client alone (request, head, body) | {alone:.1f} |")
    print(
        f"\n{tasks:.2f} asyncio tasks created per miss; {fetches:,} origin fetches by the nodes; "
        f"best of {ROUNDS} x {N:,}, {CONCURRENCY} concurrent."
    )


def run() -> None:
    global N, ROUNDS, BYTECODES
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=N, help="per round")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile one round (memory-only; with --disk-only, the disk tier's)",
    )
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="with --profile: bytecodes and calls per function per miss (sys.settrace), not cProfile",
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory-tier miss (e.g. under py-spy)"
    )
    parser.add_argument(
        "--disk-only", action="store_true", help="only the miss with the disk tier (py-spy --threads)"
    )
    parser.add_argument(
        "--second-fill", action="store_true", help="also with storage.disk.admission = second_fill"
    )
    args = parser.parse_args()
    N, ROUNDS = args.requests, args.rounds
    BYTECODES = args.bytecodes
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-miss-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    try:
        only = "memory" if args.memory_only else "disk" if args.disk_only else None
        uvloop.run(main(origin.port, tmp, args.profile, only, args.second_fill))
    finally:
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run()
