"""What the fill ring's ordering and wake-ups cost in latency (decision 0020 and its addenda).

Three measures, each printed as a table:

1. **A change after a fill** (in this process: a ``DiskStore`` with a fill ring and a real fill
   writer process, as ``bench/disk_visibility.py`` builds them). Each cycle puts one 1 KiB fill in
   the ring (the fill writer asleep: cycles are ``--gap`` apart) and at once queues a change behind
   it (or 1 ms later, when the fill writer has woken and waits for more fills to share the
   commit): a removal job that does nothing (what the purge reclaimer's disk job is when the
   purge covers nothing on disk), or a delete of another key, waited for with ``flush``. The writer
   thread applies it only once the fill writer has committed the fill (the fence). Wall-clock ms
   from the change's enqueue to its end; and, for comparison, the same change with no fill before it.
2. **Vary fills**: each cycle stores one fill with its base key's Vary names (``put(entry,
   vary=...)``, as the proxy does for a response with Vary), and waits until nothing is queued
   (``queue_depth``; not ``flush``, which commits on its own): the LMDB commits per cycle (the fill
   writer's and the writer thread's: each is an fsync) and the wall-clock ms of the cycle.
3. **A lone miss** (``--node``): an nginx origin and an ``edgecache serve`` node (disk tier on, its
   fill writer a process) are started; one client asks for never-seen 1 KiB objects one at a time,
   ``--gap`` apart, so the fill writer is asleep at each fill and each fill wakes it. Client-side
   latency (connect excluded: one keep-alive connection) and the node's CPU per miss (its process
   tree, the fill writer included). With ``--strace``, the node's event-loop thread runs under
   ``strace`` during the misses, and the table counts, for each answer, whether the eventfd write
   that wakes the fill writer came before the answer's write to the client socket or after it:
   the order, not the latency, is what a busy machine cannot blur (strace slows every syscall, so
   the latency of that run is not reported).

Every figure here but the commit counts is wall clock or CPU on a shared machine: noisy. Run it
against another build to compare (``PYTHONPATH=/path/to/other/src``; the node of section 3 is
started with the same environment).

Run: ``.venv/bin/python bench/fill_fence_latency.py [--cycles 200] [--gap 0.02] [--node]``
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _entries
import _servers as srv

import edgecache
from edgecache.edge.fillwriter import ring_file
from edgecache.store.disk import DiskStore, WriteView
from edgecache.store.entry import Entry
from edgecache.store.fillring import FillRing

ZONE = "z"

HEAD = b"Content-Type: text/plain\r\nCache-Control: max-age=3600\r\nVary: Accept-Encoding\r\n"


def entry(key: str) -> Entry:
    return _entries.entry(key, zone=ZONE, head=HEAD)


def nothing(view: WriteView) -> bool:
    return True


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / srv.CLK_TCK


class Ringed:
    """A disk store whose fills go through a ring to a fill writer process."""

    def __init__(self, path: Path) -> None:
        self.store = DiskStore(path, budget=1 << 30, position=0, map_size=1 << 31, zones=[ZONE])
        self.ring = ring = FillRing.create(ring_file(path))
        fds = [ring.wake_fd]
        done_fd: int | None = getattr(ring, "done_fd", None)  # None: a build from before it
        if done_fd is not None:
            fds.append(done_fd)
        self.child = subprocess.Popen(
            [
                *(sys.executable, "-m", "edgecache.edge.fillwriter", "--parent", str(os.getpid())),
                *("--ring", str(ring.path), "--wake-fd", str(ring.wake_fd)),
                *(() if done_fd is None else ("--done-fd", str(done_fd))),
                *("--disk", str(path), "--budget", str(1 << 30)),
            ],
            pass_fds=fds,
        )
        self.store.attach_fills(self.ring)
        self.store.put(entry("http://fence.test/first"))  # the zone's databases and host row
        self.store.flush()

    def commits(self) -> int:
        return self.store.stats.commits + self.ring.counters()["commits"]

    def cpu(self) -> float:
        return time.process_time() + cpu_of(self.child.pid)

    def close(self) -> None:
        self.store.flush()
        self.ring.close_writer()
        self.child.wait()
        self.store.attach_fills(None)
        self.ring.close(unlink=True)
        self.store.close()


def cycles(n: int, gap: float, one: Callable[[int], float]) -> list[float]:
    out = []
    for i in range(n):
        time.sleep(gap)
        out.append(one(i))
    return sorted(out)


def row(name: str, ms: list[float], extra: str = "") -> str:
    p50, p99, top = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]
    return f"| {name} | {p50:.2f} | {p99:.2f} | {top:.2f} |{extra}"


def fences(ringed: Ringed, n: int, gap: float) -> None:
    store = ringed.store

    def job(i: int, fill: bool, later: float = 0.0) -> float:
        if fill:
            store.put(entry(f"http://fence.test/job/{i}"))
        if later:
            time.sleep(later)
        t = time.perf_counter()
        store.run_job(nothing).result(10)
        return (time.perf_counter() - t) * 1000

    def delete(i: int) -> float:
        store.put(entry(f"http://fence.test/del/{i}"))
        t = time.perf_counter()
        store.delete(f"http://fence.test/other/{i}")
        store.flush(10)
        return (time.perf_counter() - t) * 1000

    cpu = ringed.cpu()
    after = cycles(n, gap, lambda i: job(i, True))
    cpu_job = (ringed.cpu() - cpu) / n * 1000
    dozing = cycles(n, gap, lambda i: job(n + i, True, 0.001))
    alone = cycles(n, gap, lambda i: job(i, False))
    deleted = cycles(n, gap, delete)
    print("\n### 1. A change queued right after a fill (the fence)\n")
    print("| change | wall ms p50 | p99 | max |")
    print("|---|---:|---:|---:|")
    print(row("a removal job that does nothing, right after a fill", after))
    print(row("the same job 1 ms after a fill (the fill writer waits for more fills)", dozing))
    print(row("the same job, no fill before it", alone))
    print(row("a delete of another key right after a fill, then flush", deleted))
    print(f"\nCPU (this process + the fill writer) per cycle of the first row: {cpu_job:.2f} ms.")


def varies(ringed: Ringed, n: int, gap: float) -> None:
    store = ringed.store

    def one(i: int) -> float:
        base = f"http://fence.test/vary/{i}"
        t = time.perf_counter()
        store.put(entry(base + "\x00accept-encoding=gzip"), vary=(base, ("accept-encoding",)))
        # Not ``flush``: it commits on its own. Until the writer thread and the ring hold nothing.
        while store.queue_depth:
            time.sleep(0.0002)
        return (time.perf_counter() - t) * 1000

    commits, cpu = ringed.commits(), ringed.cpu()
    ms = cycles(n, gap, one)
    per = (ringed.commits() - commits) / n
    cpu_per = (ringed.cpu() - cpu) / n * 1000
    print("\n### 2. Vary fills: a fill and its Vary names, until both are committed\n")
    print("| cycle | wall ms p50 | p99 | max | commits (fsyncs) per cycle | CPU ms per cycle |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("put with its Vary names, until committed", ms, f" {per:.2f} | {cpu_per:.2f} |"))


def wake_order(trace: Path) -> tuple[int, int, int]:
    """From ``strace -y`` of the loop thread, per miss (from its request to the origin to the next
    one): whether the eventfd write that wakes the fill writer came before the answer's write to
    the client, after it, or not at all."""
    before = after = neither = 0
    state = ""  # "" before the answer, then "answered"; "woken" / "late" once a wake is seen
    for line in [*trace.read_text().splitlines(), 'write(0<socket:[0]>, "GET "']:
        if re.search(r"^(write|writev|sendto|sendmsg)\(\d+<socket:[^,]*, \"GET ", line):
            before += state == "woken+answered"
            after += state == "answered+late"
            neither += state == "answered"
            state = ""
        elif re.search(r"^write\(\d+<anon_inode:\[eventfd\]>", line):
            state = "woken" if state == "" else state + "+late" if state == "answered" else state
        elif re.search(r"^(write|writev|sendto|sendmsg)\(\d+<socket:.*HTTP/1\.1 200", line):
            state = "answered" if state == "" else state + "+answered" if state == "woken" else state
    return before, after, neither


def lone_misses(n: int, gap: float, trace: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-fence-"))
    tmp.chmod(0o755)
    origin = srv.start_origin(tmp)
    node: srv.Server | None = None
    try:
        node = srv.start_edgecache(tmp, origin.port, Path(sys.executable).parent / "edgecache")
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        statuses: dict[str, int] = {}

        def get(path: str) -> float:
            t = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            ms = (time.perf_counter() - t) * 1000
            status = resp.getheader("cf-cache-status", "?")
            statuses[status] = statuses.get(status, 0) + 1
            return ms

        for i in range(20):
            get(f"/obj/{900000 + i:06d}")  # the origin connection and the node's caches, warm
        statuses.clear()
        pids = node.pids()
        cpu = srv.cpu_seconds(pids)
        ms = cycles(n, gap, lambda i: get(f"/obj/{i:06d}"))
        cpu_per = (srv.cpu_seconds(pids) - cpu) / n * 1000
        seen = dict(statuses)
        order = None
        if trace:
            out = tmp / "loop.strace"
            argv = ["strace", "-y", "-s", "16", "-e", "trace=write,writev,sendto,sendmsg", "-o", str(out)]
            tracer = subprocess.Popen([*argv, "-p", str(node.proc.pid)])
            time.sleep(1.0)  # attached
            cycles(n, gap, lambda i: get(f"/obj/{n + i:06d}"))
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
            order = wake_order(out)
        conn.close()
    finally:
        if node is not None:
            srv.stop(node)
        srv.stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n### 3. A lone miss, {gap * 1000:.0f} ms apart (the fill writer asleep at each fill)\n")
    print("| request | wall ms p50 | p99 | max | node CPU ms per miss (fill writer included) |")
    print("|---|---:|---:|---:|---:|")
    print(row(f"GET of a never-seen 1 KiB object ({seen})", ms, f" {cpu_per:.3f} |"))
    print(f"\nmean {statistics.fmean(ms):.3f} ms")
    if order is not None:
        print("\n| answers under strace (the loop thread) | wake right before the answer | after | neither |")
        print("|---|---:|---:|---:|")
        print(f"| {n} lone misses | {order[0]} | {order[1]} | {order[2]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between cycles")
    parser.add_argument("--node", action="store_true", help="also section 3 (a node, nginx as origin)")
    parser.add_argument("--only-node", action="store_true", help="only section 3")
    parser.add_argument("--strace", action="store_true", help="section 3: the wake's order, under strace")
    args = parser.parse_args()
    print(f"edgecache from {Path(edgecache.__file__).parent}; load {os.getloadavg()[0]:.1f}")
    if not args.only_node:
        path = Path(tempfile.mkdtemp(prefix="edgecache-fence-"))
        ringed = Ringed(path)
        try:
            fences(ringed, args.cycles, args.gap)
            varies(ringed, args.cycles, args.gap)
        finally:
            ringed.close()
            shutil.rmtree(path, ignore_errors=True)
    if args.node or args.only_node:
        lone_misses(args.cycles, args.gap, args.strace)


if __name__ == "__main__":
    main()
