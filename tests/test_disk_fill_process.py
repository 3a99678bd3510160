"""The disk tier's fill writer process (decision 0020): fills reach the disk through it, a change
queued after a fill never overtakes it, ``flush`` covers the ring, and a dead fill writer is
restarted while the loop goes on serving (its unwritten fills counted as dropped), and dies with
the process it writes for."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from conftest import Route, Stack
from edgecache.edge.fillwriter import SHM, FillWriterProcess
from test_disk_crash import Origin, get, start


@pytest.fixture
def fresh() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.close()


def writer(stack: Stack) -> FillWriterProcess:
    fw = stack.node.fill_writer
    assert fw is not None and fw.pid is not None
    return fw


def cached(stack: Stack, path: str) -> None:
    stack.origin.routes[path] = Route(body=b"b" * 2000, headers={"Cache-Control": "max-age=600"})
    assert stack.request(path)[1]["cf-cache-status"] == "MISS"


def test_fills_are_written_by_the_child_and_reported(fresh: Stack) -> None:
    fw = writer(fresh)
    assert fw.pid != os.getpid()
    cached(fresh, "/a")
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    assert disk.stats.writes == 0, "the writer thread wrote nothing itself"
    assert disk.counters().writes == 1 and disk.counters().commits >= 1
    metrics = generate_latest(fresh.node.registry).decode()
    assert "edgecache_disk_writes_total 1.0" in metrics
    assert "edgecache_disk_write_queue 0.0" in metrics
    fresh.restart()
    headers = fresh.request("/a")[1]
    assert headers["cf-cache-status"] == "HIT" and headers["cache-status"].endswith("detail=disk")


def test_a_delete_queued_after_a_fill_waits_for_it(fresh: Stack) -> None:
    pid = writer(fresh).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        cached(fresh, "/gone")
        disk = fresh.node.disk
        assert disk is not None
        (key,) = [e.key for e in fresh.node.store]
        assert disk.queue_depth == 1, "the fill waiting in the ring is reported"
        fresh.call(lambda: disk.delete(key))
        # The delete is queued; the fill before it is still in the ring, unwritten.
        time.sleep(0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert disk.flush(10)
    assert len(disk) == 0, "the fill, committed after the delete, came back"
    fresh.restart()
    assert fresh.request("/gone")[1]["cf-cache-status"] == "MISS"


def test_a_dead_fill_writer_is_restarted_and_its_fills_counted(fresh: Stack) -> None:
    fw = writer(fresh)
    pid = fw.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    for i in range(3):
        cached(fresh, f"/lost{i}")
    assert time.monotonic() - started < 5, "the loop does not wait for the fill writer"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while (fw.restarts == 0 or fw.pid == pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fw.restarts == 1 and fw.pid != pid
    disk = fresh.node.disk
    assert disk is not None
    assert disk.counters().dropped == 3
    cached(fresh, "/kept")
    assert disk.flush(10)
    assert len(disk) == 1 and disk.counters().writes == 1


def test_stop_commits_what_the_ring_holds(fresh: Stack) -> None:
    pid = writer(fresh).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    cached(fresh, "/late")
    threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
    fresh.restart()
    headers = fresh.request("/late")[1]
    assert headers["cf-cache-status"] == "HIT" and headers["cache-status"].endswith("detail=disk")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _fill_rings() -> set[Path]:
    return set(SHM.glob("edgecache-fills-*.ring"))


def test_a_killed_node_takes_its_fill_writer_along(tmp_path: Path) -> None:
    origin = Origin()
    threading.Thread(target=origin.server.serve_forever, daemon=True).start()
    before = _fill_rings()
    proc, info = start(tmp_path, origin)
    try:
        assert get(info["data"], "/obj/1")[0] == 200
        (child,) = _children(proc.pid)
        ring = {p for p in _fill_rings() - before if p.name.startswith(f"edgecache-fills-{proc.pid}-")}
        assert len(ring) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists(), "the fill writer outlived its node"
        # The next node removes the ring the killed one left.
        proc, info = start(tmp_path, origin)
        assert not ring & _fill_rings()
        assert get(info["data"], "/obj/1")[0] == 200
    finally:
        proc.kill()
        proc.wait()
        origin.server.shutdown()
