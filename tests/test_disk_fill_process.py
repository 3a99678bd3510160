"""The disk tier's fill writer process (decision 0020): fills reach the disk through it, a change
queued after a fill never overtakes it nor is overtaken by a fill queued after it, ``flush`` covers
the ring, a dead fill writer is restarted while the loop goes on serving (its unwritten fills
counted as dropped), a hung one is killed and restarted, and it dies with the process it writes
for; a ring that does not fit in tmpfs goes in the data directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from conftest import Route, Stack
from edgecache.cluster.fill_locks import STORED_RECENTLY
from edgecache.edge.fillwriter import HUNG_AFTER, START_WAIT, FillWriterProcess, create_ring
from edgecache.edge.logring import SHM
from edgecache.store.disk import DiskStore
from edgecache.store.entry import VARIANT_SEP, Entry
from edgecache.store.fillring import DEFAULT_CAPACITY, FillRing
from test_disk_crash import Origin, get, start


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


def test_a_node_serves_only_once_its_fill_writer_can_commit(fresh: Stack) -> None:
    """The first fill of a node that has just started is on disk, where another worker told it was
    stored looks for it, within ``STORED_RECENTLY`` of its answer (decision 0028). It used to wait
    in the ring for the child's start (0.4-0.7 s on a loaded machine), long enough for that worker
    to stop waiting for it and fetch it again: the first hot object of a node fetched twice.
    Without ``start``'s wait only the first assertion fails here: the child started fast enough
    that the fill was on disk 0.18 s after its answer (3 runs), and a bound tight enough to catch
    that would flake on a slow fsync."""
    fresh.restart()  # a node that has just started
    fw = writer(fresh)
    assert fw.ring.started == fw.pid, "the node serves before its fill writer is ready"
    disk = fresh.node.disk
    assert disk is not None
    cached(fresh, "/first")
    answered = time.monotonic()
    while (on_disk := fresh.call(lambda: len(disk))) == 0 and time.monotonic() - answered < STORED_RECENTLY:
        time.sleep(0.005)
    assert on_disk == 1, "not on disk within STORED_RECENTLY of its answer"
    assert disk.counters().writes == 1


def test_a_vary_fill_and_its_vary_row_are_one_commit(fresh: Stack) -> None:
    # The Vary names go through the ring behind their fill: the fill writer writes both in one
    # transaction (one fsync), where the writer thread used to wait for the fill's commit and
    # commit the names on its own.
    writer(fresh)
    disk = fresh.node.disk
    assert disk is not None
    fresh.origin.routes["/v"] = Route(
        body=b"v" * 2000, headers={"Cache-Control": "max-age=600", "Vary": "Accept-Encoding"}
    )
    before = disk.counters().commits
    assert fresh.request("/v", headers={"Accept-Encoding": "gzip"})[1]["cf-cache-status"] == "MISS"
    deadline = time.monotonic() + 10
    while (disk.queue_depth or disk.counters().commits == before) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a commit of the names on their own would come after the fill's
    assert disk.counters().commits - before == 1
    fresh.restart()
    headers = fresh.request("/v", headers={"Accept-Encoding": "gzip"})[1]
    assert headers["cf-cache-status"] == "HIT" and headers["cache-status"].endswith("detail=disk")
    assert fresh.request("/v", headers={"Accept-Encoding": "br"})[1]["cf-cache-status"] == "MISS"


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


@pytest.mark.parametrize("removal", ["delete", "delete_primary"])
def test_a_fill_after_a_queued_delete_is_not_removed_by_it(fresh: Stack, removal: str) -> None:
    # The writer thread waits (a fence) for a fill the stopped child has not committed, with an
    # unbounded delete (the proxy's, after an unsafe method) queued behind it; a refill of the key
    # comes next and must come out stored.
    pid = writer(fresh).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        cached(fresh, "/refilled")
        disk = fresh.node.disk
        assert disk is not None
        (entry,) = list(fresh.node.store)
        fresh.call(lambda: getattr(disk, removal)(entry.key))
        fresh.call(lambda: disk.put(entry))
        time.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert disk.flush(10)
    assert len(disk) == 1, "the delete queued before the refill removed it"
    assert fresh.call(lambda: disk.get(entry.key)) is not None


@pytest.mark.parametrize("removal", ["delete", "delete_primary"])
def test_a_variant_fill_after_a_queued_delete_of_it_or_its_url_is_not_removed_by_it(
    fresh: Stack, removal: str
) -> None:
    # As above for a key with a variant part, where the variant's own key and its URL are two
    # names a queued delete may hide: the fill goes behind either (``DiskStore.put`` checks both).
    pid = writer(fresh).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        cached(fresh, "/refilled-variant")
        disk = fresh.node.disk
        assert disk is not None
        (entry,) = list(fresh.node.store)
        variant = replace(entry, key=entry.key + VARIANT_SEP + "gzip")
        target = variant.key if removal == "delete" else entry.key
        fresh.call(lambda: getattr(disk, removal)(target))
        fresh.call(lambda: disk.put(variant))
        time.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert disk.flush(10)
    assert fresh.call(lambda: disk.get(variant.key)) is not None, "the queued delete removed the fill"


def test_vary_names_queued_on_the_writer_thread_are_not_overtaken_by_newer_ones(fresh: Stack) -> None:
    # Names for a base set without their fill go to the writer thread (behind a fence); newer names
    # for the same base, put with their fill, must not go through the ring: the fill writer would
    # commit them with the fenced fills, and the writer thread would then write the older names
    # over them.
    cached(fresh, "/v")
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    (entry,) = list(fresh.node.store)
    base = entry.key
    pid = writer(fresh).pid
    assert pid is not None

    def fills() -> None:
        assert disk.put(replace(entry, key=base + VARIANT_SEP + "gzip"))
        assert disk.put(replace(entry, key=base + "-other"))
        disk.set_vary(base, ("old",))
        assert disk.put(replace(entry, key=base + VARIANT_SEP + "br"), vary=(base, ("new",)))

    os.kill(pid, signal.SIGSTOP)
    try:
        fresh.call(fills)
        time.sleep(0.2)  # the writer thread waits for the fills before the older names
    finally:
        os.kill(pid, signal.SIGCONT)
    assert disk.flush(10)
    assert fresh.call(lambda: disk.lookup(base)[0]) == ("new",), "the older Vary names came last"


def test_a_fill_writer_started_without_a_done_fd_commits(tmp_path: Path) -> None:
    # A node running an older version, whose fill writer is restarted from upgraded files, passes
    # no ``--done-fd`` (its writer thread polls ``committed``).
    ring = FillRing.create(tmp_path / "old.ring", 1 << 16)
    entry = Entry("z", "https://a.test/old-node", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0)
    args = ["--parent", str(os.getpid()), "--ring", str(ring.path), "--wake-fd", str(ring.wake_fd)]
    args += ["--disk", str(tmp_path / "disk"), "--budget", str(1 << 20)]
    command = [sys.executable, "-m", "edgecache.edge.fillwriter", *args]
    proc = subprocess.Popen(command, pass_fds=(ring.wake_fd,))
    try:
        assert ring.append_entry(entry, False) > 0
        ring.want(ring.head)
        deadline = time.monotonic() + 30
        while ring.committed < ring.head and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the fill writer exited with status {proc.returncode}"
        assert ring.committed == ring.head and ring.counters()["writes"] == 1
        ring.close_writer()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ring.close(unlink=True)
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    try:
        assert [e.key for e in store] == [entry.key]
    finally:
        store.close()


def exited(pid: int) -> bool:
    """Whether the process is gone or a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_hung_fill_writer_is_killed_and_its_fences_released(fresh: Stack) -> None:
    fw = writer(fresh)
    fw.hung_after = 1.0
    pid = fw.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    cached(fresh, "/stuck")
    disk = fresh.node.disk
    assert disk is not None
    (key,) = [e.key for e in fresh.node.store]
    fresh.call(lambda: disk.delete(key))
    # The delete waits behind the stopped child's fill until the supervisor kills the child (its
    # records are skipped once it has exited): when the flush returns, the stopped child is gone
    # (a clock here measured the request's and the delete's time as well on a loaded machine).
    assert disk.flush(20), "the writer thread's fence waited for a stopped child"
    assert exited(pid), "the delete's fence was released while the stopped child still lived"
    # Back to the default before the restart: the next child, whose start a loaded machine can
    # make longer than a second while "/after" waits, is not to be killed as hung too.
    fw.hung_after = HUNG_AFTER
    deadline = time.monotonic() + 15
    while (fw.restarts == 0 or fw.pid == pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fw.restarts == 1 and fw.pid != pid
    assert disk.counters().dropped == 1
    cached(fresh, "/after")
    assert disk.flush(10)
    assert len(disk) == 1 and disk.counters().writes == 1


def test_a_full_tmpfs_puts_the_ring_in_the_data_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    small = tmp_path / "shm"
    small.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    # A tmpfs smaller than a ring, as a container's /dev/shm shared by several workers' rings.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with caplog.at_level(logging.WARNING, logger="edgecache.edge.fillwriter"):
            ring = create_ring(data, shm=small)
        try:
            assert ring.path.parent == data and ring.capacity == DEFAULT_CAPACITY
            assert not list(small.iterdir()), "the ring that did not fit was left behind"
            assert any(r.getMessage().startswith("no room for a disk fill ring") for r in caplog.records)
        finally:
            ring.close(unlink=True)
    finally:
        subprocess.run(["umount", str(small)], check=True)


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


def test_a_fill_writer_that_keeps_failing_is_restarted_ever_later(
    fresh: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    fw = writer(fresh)
    pid = fw.pid
    assert pid is not None
    # Its ring gone from tmpfs (the node keeps its mapping), every new child fails at start.
    fw.ring.path.unlink()
    with caplog.at_level(logging.WARNING, logger="edgecache.edge.fillwriter"):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while fw.restarts < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    delays = [
        r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records if "starting it again" in r.getMessage()
    ]
    assert delays[:2] == ["1 s", "2 s"]


def test_a_fill_writer_that_dies_before_it_is_ready_is_reported_at_once(
    fresh: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``start`` returns when its child exits before it was ready, not after ``START_WAIT``, and
    says so: the node serves on, its fills waiting in the ring for the restarted child."""
    config = fresh.config.model_copy(update={"data_dir": tmp_path})
    disk = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    fw = FillWriterProcess(config, disk)
    fw.ring.path.unlink()  # the child cannot open its ring

    async def start_and_stop() -> float:
        began = time.monotonic()
        await fw.start()
        took = time.monotonic() - began
        await fw.stop()
        return took

    try:
        with caplog.at_level(logging.WARNING, logger="edgecache.edge.fillwriter"):
            took = asyncio.run(start_and_stop())
    finally:
        disk.close()
    assert took < START_WAIT
    assert any("exited with status 1 before it was ready" in r.getMessage() for r in caplog.records)


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
