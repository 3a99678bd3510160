"""How soon an object one process writes to the disk tier is readable by another process.

Method: this process opens a ``DiskStore`` and puts 1 KiB objects; a second process opens the same
store (as a node's other worker does) and, told of each put through a pipe with its instant on the
system-wide monotonic clock, reads the key (``DiskStore.get``, a committed read) every 0.2 ms until
it finds it. The delay is from the ``put`` to the first successful read in the other process: the
writer's wait for more fills to share the commit (``GROUP_WAIT``), the batch's write and commit,
and the reader's polling. Measured idle (one probe at a time, nothing else written) and under a
stream of other fills (``--rate`` per second, written from a thread of this process as a node's
misses would be). Prints p50, p99 and the largest delay in ms. By default the fills go through a
fill ring to a fill writer process, as a node's do (decision 0020); ``--fill-writer thread``
measures the disk writer thread instead.

Run: ``.venv/bin/python bench/disk_visibility.py [--probes 200] [--rate 5000] [--fill-writer thread]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _entries

from edgecache.edge.fillwriter import ring_file
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry
from edgecache.store.fillring import FillRing

ZONE = "z"
PUT = threading.Lock()
"""Puts come from two threads here; a fill ring has one appender (a node's loop)."""


def entry(key: str) -> Entry:
    return _entries.entry(key, zone=ZONE)


def open_store(path: Path) -> DiskStore:
    return DiskStore(path, budget=1 << 30, position=0, map_size=1 << 31, zones=[ZONE])


def reader(path: Path) -> None:
    """The other process: for each ``key instant`` line, the delay until the key is readable."""
    store = open_store(path)
    for line in sys.stdin:
        key, put_at = line.split()
        while store.get(key) is None:
            time.sleep(0.0002)
        print(f"{(time.monotonic() - float(put_at)) * 1000:.3f}", flush=True)
    store.close()


def probe(store: DiskStore, child: subprocess.Popen[str], name: str, n: int) -> list[float]:
    assert child.stdin is not None and child.stdout is not None
    delays = []
    for i in range(n):
        key = f"http://vis.test/{name}/{i}"
        with PUT:
            store.put(entry(key))
        child.stdin.write(f"{key} {time.monotonic()!r}\n")
        child.stdin.flush()
        delays.append(float(child.stdout.readline()))
        time.sleep(0.01)
    return sorted(delays)


def stream(store: DiskStore, rate: float, stop: threading.Event) -> None:
    i = 0
    start = time.monotonic()
    while not stop.is_set():
        with PUT:
            store.put(entry(f"http://vis.test/fill/{i}"))
        i += 1
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def row(name: str, delays: list[float]) -> str:
    p = delays[len(delays) // 2], delays[int(len(delays) * 0.99)], delays[-1]
    return f"| {name} | {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5000.0, help="other fills per second")
    parser.add_argument("--fill-writer", choices=("process", "thread"), default="process")
    parser.add_argument("--reader", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader is not None:
        reader(args.reader)
        return
    path = Path(tempfile.mkdtemp(prefix="edgecache-vis-"))
    store = open_store(path)
    writer = None
    if args.fill_writer == "process":
        ring = FillRing.create(ring_file(path))
        writer = subprocess.Popen(
            [
                *(sys.executable, "-m", "edgecache.edge.fillwriter", "--parent", str(os.getpid())),
                *("--ring", str(ring.path), "--wake-fd", str(ring.wake_fd), "--done-fd", str(ring.done_fd)),
                *("--disk", str(path), "--budget", str(1 << 30)),
            ],
            pass_fds=(ring.wake_fd, ring.done_fd),
        )
        store.attach_fills(ring)
    store.put(entry("http://vis.test/first"))  # the zone's host row, before the reader starts
    store.flush()
    child = subprocess.Popen(
        [sys.executable, __file__, "--reader", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        idle = probe(store, child, "idle", args.probes)
        stop = threading.Event()
        filler = threading.Thread(target=stream, args=(store, args.rate, stop))
        filler.start()
        try:
            busy = probe(store, child, "busy", args.probes)
        finally:
            stop.set()
            filler.join()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
        store.flush()
        counted = store.counters()
        if writer is not None:
            ring.close_writer()
            writer.wait()
            store.attach_fills(None)
            ring.close(unlink=True)
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    print("| writes | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    print(row("idle: one object at a time", idle))
    print(row(f"while other fills are written at {args.rate:,.0f}/s", busy))
    print(
        f"\n{args.probes} probes each; disk records written per commit: "
        f"{counted.writes / max(counted.commits, 1):.0f} ({args.fill_writer} writer)"
    )


if __name__ == "__main__":
    main()
