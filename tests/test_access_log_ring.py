"""The access log's shared-memory ring and its formatter process, on real nodes and real processes:
lines for real requests, a formatter that dies is replaced without duplicating or losing lines,
overrun is counted (in /metrics and the log) and never makes the writer wait, and
``edgecache log tail`` prints the node's requests. And the ring's soundness: a reader in another
process never gets a torn record, a batch not yet wholly visible is waited for, rings live on
tmpfs, and a dead process's ring is never reused by one with the same pid, and is cleaned up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

import test_logs
from conftest import Route
from edgecache.edge import logring
from edgecache.edge.http1 import Request
from edgecache.edge.logring import (
    RingCounts,
    RingReader,
    RingWriter,
    read_counts,
    record,
    ring_directory,
    ring_path,
)
from edgecache.edge.logtail import Tail
from test_logs import COMBINED, LoggedNode, _lines
from workers_node import VersionedOrigin, WorkerNode

ONE_MIB = 1 << 20
CLI = [sys.executable, "-c", "from edgecache.cli import main; main()"]
node_factory = test_logs.node_factory


def _wait(predicate: object, n: LoggedNode, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        n.run(0.05)
    assert predicate(), "timed out"  # type: ignore[operator]


def _metrics(n: LoggedNode) -> dict[str, float]:
    async def get() -> str:
        url = f"http://127.0.0.1:{n.node.control_port}/metrics"
        return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())

    text = n.loop.run_until_complete(get())
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("edgecache_access_log_")
    }


def _add(writer: RingWriter, i: int) -> None:
    """Record a MISS of ``/r/<i>`` whose head arrived over several reads (so its values are kept)."""
    req = Request("GET", f"/r/{i}", {}, b"", "1.1", True, "127.0.0.1")
    req._fields = [("host", b"a.example"), ("user-agent", b"t")]
    now = time.monotonic()
    writer.add(req, now, now, now, b"MISS", 1000 + i, b"200")


def _targets(reader: RingReader) -> list[str]:
    return [record(rec).target for rec in reader.read()]


def test_formatter_is_a_process_that_writes_lines_and_comes_back_when_killed(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    path = tmp_path / "access.log"
    n = node_factory(tmp_path, access_log=path)
    n.origin.routes["/p"] = Route(body=b"x" * 100)
    formatter = n.node.access_formatter
    assert formatter is not None and formatter._proc is not None
    first_pid = formatter._proc.pid
    assert first_pid != os.getpid()
    for _ in range(3):
        assert n.request("/p") == 200
    _wait(lambda: path.exists() and len(_lines(path)) == 3, n)
    os.kill(first_pid, signal.SIGKILL)
    _wait(lambda: formatter._proc is not None and formatter._proc.pid != first_pid, n)
    assert n.request("/p?after") == 200
    _wait(lambda: len(_lines(path)) == 4, n)
    assert _metrics(n) == {
        "edgecache_access_log_records_total": 4.0,
        "edgecache_access_log_lines_total": 4.0,
        "edgecache_access_log_lost_total": 0.0,
    }
    n.close()
    lines = [COMBINED.match(line) for line in _lines(path)]
    assert [m["request"] if m else None for m in lines] == ["GET /p HTTP/1.1"] * 3 + ["GET /p?after HTTP/1.1"]
    assert [m["cache"] if m else None for m in lines] == ["MISS", "HIT", "HIT", "MISS"]
    # Drained and stopped: the node's ring is gone with it.
    assert not ring_directory(tmp_path).exists()


def test_a_formatter_that_falls_behind_loses_records_and_counts_them(
    tmp_path: Path, node_factory: type[LoggedNode], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    n = node_factory(tmp_path, access_log=path, access_log_ring_mib=1)
    ring = n.node.access_ring
    formatter = n.node.access_formatter
    assert ring is not None and formatter is not None and formatter._proc is not None
    pid = formatter._proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # The writer laps the stopped reader many times over and never waits for it.
        total = 30_000
        started = time.monotonic()
        for i in range(total):
            _add(ring, i)
            if i % 32 == 31:
                ring.flush()
        ring.flush()
        assert time.monotonic() - started < 30
    finally:
        os.kill(pid, signal.SIGCONT)

    def settled() -> bool:
        c = read_counts(ring.path)
        return c.written == total and c.logged + c.lost == total

    _wait(settled, n)
    counts = read_counts(ring.path)
    assert counts.lost > total // 2 and counts.logged > 0
    metrics = _metrics(n)
    assert metrics["edgecache_access_log_lost_total"] == counts.lost
    assert metrics["edgecache_access_log_lines_total"] == counts.logged == len(_lines(path))
    # What was written is the newest records, whole, in order.
    targets = [line.split('"')[1].split()[1] for line in _lines(path)]
    assert targets == [f"/r/{i}" for i in range(total - len(targets), total)]


def test_a_reader_counts_exactly_what_it_missed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "rings"
    writer = RingWriter(ring_path(directory), ONE_MIB)
    out = (tmp_path / "out.log").open("w")
    tail = Tail(directory, out, "json", keep=True)
    tail.rescan()
    for i in range(100):
        _add(writer, i)
    writer.flush()
    assert tail.pump() == 100
    for i in range(100, 40_100):
        _add(writer, i)
        if i % 32 == 31:
            writer.flush()
    writer.flush()
    with caplog.at_level(logging.WARNING, logger="edgecache.edge.logtail"):
        got = tail.pump()
    out.close()
    assert tail.lost() + got == 40_000 and tail.lost() > 0
    assert any("records lost" in r.getMessage() for r in caplog.records)
    counts = read_counts(writer.path)
    assert (counts.written, counts.lost, counts.logged) == (40_100, tail.lost(), 100 + got)
    # A second reader started by hand keeps its own place and writes nothing in the ring.
    by_hand = RingReader(writer.path)
    _add(writer, 40_100)
    writer.flush()
    assert _targets(by_hand) == ["/r/40100"]
    assert read_counts(writer.path) == RingCounts(written=40_101, lost=counts.lost, logged=counts.logged)
    writer.close()


def test_log_tail_prints_the_nodes_requests(tmp_path: Path, node_factory: type[LoggedNode]) -> None:
    n = node_factory(tmp_path, access_log=tmp_path / "access.log")
    n.origin.routes["/t"] = Route(body=b"tail")
    assert n.request("/t") == 200
    assert n.request("/t", headers={"User-Agent": "line\u0085two"}) == 200
    n.node.access_ring.flush()  # type: ignore[union-attr]
    proc = subprocess.Popen(
        [*CLI, "log", "tail", "--data-dir", str(tmp_path), "--format", "json", "--from-start"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert (first["target"], first["cache"], first["status"]) == ("/t", "MISS", 200)
    assert (second["cache"], second["zone"]) == ("HIT", "test.example")
    assert second["user_agent"] == "line\u0085two"
    # The node's own log file is unaffected by the extra reader.
    n.close()
    assert len(_lines(tmp_path / "access.log")) == 2


def test_log_tail_says_when_the_access_log_is_off(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgecache.cli import main; main()",
            "log",
            "tail",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "access log on" in proc.stderr


def test_each_worker_process_writes_its_own_ring_and_one_formatter_writes_them_all(tmp_path: Path) -> None:
    origin = VersionedOrigin()
    log = tmp_path / "access.log"
    node = WorkerNode(tmp_path, origin, extra=f'[logging]\naccess_log = "{log}"\n')
    try:
        answers = list(node.spread("/w", at_least=2))
        served_by = {pid for *_, pid in answers}
        assert len(served_by) == 2
        rings = {int(p.stem.split("-")[0]) for p in ring_directory(tmp_path).glob("*.ring")}
        assert served_by <= rings
        deadline = time.monotonic() + 20
        while (not log.exists() or len(_lines(log)) < len(answers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = node.metrics()
        # Counted once for the node, not once per process.
        assert metrics["edgecache_access_log_records_total"] == len(answers)
        assert metrics["edgecache_access_log_lines_total"] == len(answers)
        assert metrics["edgecache_access_log_lost_total"] == 0
    finally:
        assert node.stop() == 0
        origin.close()
    targets = [m["request"] for m in (COMBINED.match(line) for line in _lines(log)) if m]
    assert targets == ["GET /w HTTP/1.1"] * len(answers)
    assert not ring_directory(tmp_path).exists()


STRESS_WRITER = """
import random, sys, zlib
from pathlib import Path
from edgecache.edge.http1 import Request
from edgecache.edge.logring import RingWriter
path, total = Path(sys.argv[1]), int(sys.argv[2])
writer = RingWriter(path, 1 << 20)
print("ready", flush=True)
rng = random.Random(9)
for i in range(total):
    target = "/r/%d/%s" % (i, "x" * rng.randrange(300))
    agent = b"a" * rng.randrange(50)
    check = zlib.crc32(agent, zlib.crc32(target.encode()))
    req = Request("GET", target, {}, b"", "1.1", True, "10.0.0.1")
    req._fields = [("host", b"h"), ("user-agent", agent)]
    if i % 2:
        # Half as the bytes of a read, half as values: both forms of a record.
        req.raw = b"GET %s HTTP/1.1\\r\\nHost: h\\r\\nUser-Agent: %s\\r\\n\\r\\n" % (target.encode(), agent)
    writer.add(req, 1.0, 1.0, 1.0, b"MISS", check, b"200")
    if rng.random() < 0.05:
        writer.flush()
writer.close()
"""


def test_a_reader_in_another_process_never_sees_a_torn_record(tmp_path: Path) -> None:
    # A writer process fills a small ring as fast as it can (lapping the reader over and over,
    # batches of every size, wrap markers); this process reads concurrently and checks every
    # record it is given against the checksum the writer put in it.
    path = tmp_path / "stress.ring"
    total = 150_000
    writer = subprocess.Popen(
        [sys.executable, "-c", STRESS_WRITER, str(path), str(total)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    reader = RingReader(path, from_start=True)
    seen: list[int] = []
    while True:
        done = writer.poll() is not None
        for rec in map(record, reader.read()):
            check = zlib.crc32(rec.user_agent.encode(), zlib.crc32(rec.target.encode()))
            assert rec.sent == check, f"torn record {rec.target[:20]!r}"
            seen.append(int(rec.target.split("/")[2]))
        if done and reader.drained():
            break
    assert writer.returncode == 0
    assert seen == sorted(set(seen)), "records repeated or out of order"
    assert len(seen) + reader.lost == total and seen[-1] == total - 1
    assert reader.lost > 0 and len(seen) > 1000  # the test did race the writer
    reader.close()


def test_a_batch_whose_bytes_are_not_all_visible_yet_is_read_later_not_garbled(tmp_path: Path) -> None:
    # What a weakly ordered CPU may show a reader: the new head, but a payload byte (or the
    # commit word) still old. The reader must wait for it, and give up on it only if it stays so.
    writer = RingWriter(ring_path(tmp_path), ONE_MIB)
    reader = RingReader(writer.path)
    mm = writer._mm

    def batch(first: int) -> tuple[int, int]:
        at = logring.HEADER_SIZE + (writer.capture.head & (writer.capacity - 1))
        for i in range(first, first + 5):
            _add(writer, i)
        writer.flush()
        return at, at + logring._BATCH.size + 3

    _, byte = batch(0)
    mm[byte] ^= 0xFF  # a payload byte still stale
    assert reader.read() == [] and reader.lost == 0
    mm[byte] ^= 0xFF
    assert _targets(reader) == [f"/r/{i}" for i in range(5)]

    at, _ = batch(5)
    whole = mm[at : at + logring._BATCH.size]
    # An older batch's commit word still showing.
    meta = struct.pack("<IQII", 64, 0, 5, 0)
    mm[at : at + logring._BATCH.size] = struct.pack("<I", logring.checksum(meta)) + meta
    assert reader.read() == [] and reader.lost == 0
    mm[at : at + logring._BATCH.size] = whole
    assert _targets(reader) == [f"/r/{i}" for i in range(5, 10)]

    _, byte = batch(10)
    mm[byte] ^= 0xFF  # and this one stays bad: skipped on the next read, counted lost
    assert reader.read() == []
    assert reader.read() == [] and reader.lost == 5
    batch(15)
    assert _targets(reader) == [f"/r/{i}" for i in range(15, 20)]
    reader.close()
    writer.close()


def test_rings_live_on_tmpfs_readable_by_the_node_only(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    n = node_factory(tmp_path, access_log=tmp_path / "access.log")
    ring = n.node.access_ring
    assert ring is not None
    assert ring.path.parent == ring_directory(tmp_path) and not (tmp_path / "accesslog").exists()
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    under = [m for m in mounts if str(ring.path).startswith(m[1].rstrip("/") + "/")]
    mount = max(under, key=lambda m: len(m[1]))
    assert mount[2] == "tmpfs"
    assert ring.path.stat().st_mode & 0o777 == 0o600
    n.close()
    assert not ring_directory(tmp_path).exists()
    # Without a tmpfs the rings go under the data directory.
    assert ring_directory(tmp_path, shm=tmp_path / "no-shm") == tmp_path / "accesslog"


def test_a_dead_process_ring_is_logged_then_removed_even_when_its_pid_is_reused(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    # A process that crashed left its ring, with records the formatter had not read. The node
    # that starts next has the same pid (this process): it must not reuse that ring, and its
    # formatter must log those records and then remove the ring, its owner being gone.
    directory = ring_directory(tmp_path)
    crashed = RingWriter(ring_path(directory), ONE_MIB)
    for i in range(3):
        _add(crashed, i)
    crashed.flush()
    started = logring._POS.unpack_from(crashed._mm, logring._STARTED_AT)[0]
    logring._POS.pack_into(crashed._mm, logring._STARTED_AT, started - 1)
    crashed.close()
    assert not RingReader(crashed.path).owner_alive()
    path = tmp_path / "access.log"
    n = node_factory(tmp_path, access_log=path)
    ring = n.node.access_ring
    assert ring is not None and ring.path != crashed.path
    assert ring.path.name.split("-")[0] == crashed.path.name.split("-")[0] == str(os.getpid())
    _wait(lambda: path.exists() and len(_lines(path)) == 3 and not crashed.path.exists(), n)
    assert ring.path.exists()
    n.close()
    assert [line.split('"')[1] for line in _lines(path)] == [f"GET /r/{i} HTTP/1.1" for i in range(3)]


EXITING_WRITER = """
import sys, time
from pathlib import Path
from edgecache.edge.http1 import Request
from edgecache.edge.logring import RingWriter, ring_path
writer = RingWriter(ring_path(Path(sys.argv[1])), 1 << 20)
for i in range(3):
    req = Request("GET", "/last/%d" % i, {}, b"", "1.1", True, "10.0.0.1")
    req._fields = [("host", b"h")]
    writer.add(req, time.monotonic(), time.monotonic(), time.monotonic(), b"MISS", 10, b"200")
writer.close()
"""


def test_a_stopping_formatter_logs_and_removes_the_ring_of_a_process_that_exited_unread(
    tmp_path: Path,
) -> None:
    # A worker's last batch reaches its ring as it exits, and the node's formatter is told to stop
    # before it read it: its last read logs the batch, and the ring (16 MiB of tmpfs by default)
    # must go with it rather than stay behind for a formatter that may never come.
    directory = tmp_path / "rings"
    subprocess.run([sys.executable, "-c", EXITING_WRITER, str(directory)], check=True)
    [ring] = list(directory.glob("*.ring"))
    out = tmp_path / "access.log"
    stop = threading.Event()
    stop.set()
    with out.open("w") as f:
        Tail(directory, f, "json", keep=True).run(stop)
    assert [json.loads(line)["target"] for line in _lines(out)] == ["/last/0", "/last/1", "/last/2"]
    assert not ring.exists()


def test_a_node_with_the_log_off_frees_the_rings_a_crashed_run_left(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    directory = ring_directory(tmp_path)
    crashed = RingWriter(ring_path(directory), ONE_MIB)
    _add(crashed, 0)
    crashed.flush()
    started = logring._POS.unpack_from(crashed._mm, logring._STARTED_AT)[0]
    logring._POS.pack_into(crashed._mm, logring._STARTED_AT, started - 1)
    crashed.close()
    live = RingWriter(ring_path(directory), ONE_MIB)  # a process of ours still writing
    n = node_factory(tmp_path)
    assert not crashed.path.exists() and live.path.exists()
    n.close()
    live.close(unlink=True)
    directory.rmdir()


def test_the_batch_check_is_crc32c() -> None:
    # CRC-32C's (Castagnoli's) check value and RFC 3720's 32-byte vectors (longer than the 8-byte
    # steps of the hardware path): a reader built elsewhere must compute the same values.
    assert logring.checksum(b"123456789") == 0xE3069283
    assert logring.checksum(bytes(32)) == 0x8A9136AA
    assert logring.checksum(b"\xff" * 32) == 0x62A8AB43
    assert logring.checksum(bytes(range(32))) == 0x46DD794E
