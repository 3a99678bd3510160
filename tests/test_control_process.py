"""A node whose control plane runs in a process of its own in front of one data-plane worker
(``[runtime] workers = 1``, ``control_plane = "process"``, decision 0026), as real processes on
loopback.

What a user would notice: ``edgecache serve`` says which layout it runs and runs it (a supervisor
and one worker); a purge by tag through the official Cloudflare SDK is in effect when the API
answers and its task succeeds once the worker has reclaimed it; ``/metrics`` reports the worker's
counters once; a worker that is killed is replaced and follows later purges; SIGINT stops every
process of the node and leaves nothing in ``/dev/shm``; a configuration that asks for the control
plane inline with several workers is refused with a message that says why.
"""

from __future__ import annotations

import http.client
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import cloudflare
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from edgecache.cli import app
from edgecache.cluster.fill_locks import shares_fills
from edgecache.config import Config, load_config
from edgecache.edge.logring import SHM, ring_directory
from workers_node import ZONE, VersionedOrigin, WorkerNode, children, wait_for, write_config

SPLIT = "control plane in the supervisor process, 1 data-plane worker process"


@pytest.fixture(scope="module")
def origin() -> Iterator[VersionedOrigin]:
    o = VersionedOrigin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def node(origin: VersionedOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerNode]:
    n = WorkerNode(tmp_path_factory.mktemp("split"), origin, workers=1, control_plane="process")
    yield n
    assert n.stop() == 0


def sdk(node: WorkerNode) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(
        api_token=node.token, base_url=f"http://127.0.0.1:{node.control_port}/client/v4", max_retries=0
    )


def test_serve_says_and_runs_a_supervisor_with_one_worker(node: WorkerNode) -> None:
    assert SPLIT in node.banner
    [worker] = node.workers()
    assert b"edgecache.cluster.worker" in Path(f"/proc/{worker}/cmdline").read_bytes()


def test_a_purge_by_tag_through_the_sdk_makes_the_next_request_a_miss_and_its_task_succeeds(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.version = 1
    conn = node.connection()
    try:
        assert node.get(conn, "/sdk/a")[1:] == ("MISS", "/sdk/a v1")
        assert node.get(conn, "/sdk/a")[1:] == ("HIT", "/sdk/a v1")
        origin.version = 2
        job = sdk(node).cache.purge(zone_id=ZONE, tags=["obj"])
        assert job is not None
        # The control plane answered: the worker must not serve the purged copy any more.
        assert node.get(conn, "/sdk/a")[1:] == ("MISS", "/sdk/a v2")
    finally:
        conn.close()
    wait_for(lambda: node.job(job.id)["done"])
    [task] = node.job(job.id)["tasks"]
    assert (task["status"], task["matched"]) == ("success", 1)


def test_metrics_report_the_workers_counters_once(node: WorkerNode) -> None:
    conn = node.connection()
    try:
        node.get(conn, "/metrics-check")
        node.get(conn, "/metrics-check")
    finally:
        conn.close()
    metrics = node.metrics()  # fails on a family or sample exposed twice
    assert metrics["edgecache_workers"] == 1
    for status in ("HIT", "MISS"):
        total = metrics[f'edgecache_responses_total{{cache_status="{status}"}}']
        assert (
            total == metrics[f'edgecache_worker_responses_total{{cache_status="{status}",worker="0"}}'] >= 1
        )
    published = metrics["edgecache_ledger_published_position"]
    assert published >= 1
    wait_for(lambda: node.metrics()['edgecache_worker_applied_position{worker="0"}'] == published)


def test_a_killed_worker_is_replaced_and_follows_later_purges(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.version = 3
    conn = node.connection()
    try:
        node.get(conn, "/kill/a")
        assert node.get(conn, "/kill/a")[1:] == ("HIT", "/kill/a v3")
    finally:
        conn.close()
    [victim] = node.workers()
    assert victim > 0  # os.kill(0) would hit our own process group
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(node.workers()) == 1 and victim not in node.workers())
    # The restart is counted before the backoff and the new spawn: wait until the replacement
    # itself answers, so the purge below is one it follows, not one it reads as it starts.
    held: list[http.client.HTTPConnection] = []

    def replacement_answers() -> bool:
        try:
            c = node.connection()
        except ConnectionRefusedError:  # no listening socket yet
            return False
        try:
            node.get(c, "/kill/b")
        except (ConnectionError, http.client.HTTPException):  # still starting
            c.close()
            return False
        held.append(c)
        return True

    wait_for(replacement_answers)
    [conn] = held
    try:
        assert node.owner(conn) not in (0, victim)
        node.get(conn, "/kill/a")  # from the disk tier or the origin: v3 either way
        assert node.get(conn, "/kill/a")[1:] == ("HIT", "/kill/a v3")
        assert node.metrics().get('edgecache_worker_restarts_total{worker="0"}') == 1
        origin.version = 4
        sdk(node).cache.purge(zone_id=ZONE, tags=["obj"])
        assert node.get(conn, "/kill/a")[1:] == ("MISS", "/kill/a v4")
    finally:
        conn.close()


@pytest.mark.parametrize("listen", ["auto", "shared"])
def test_a_connection_made_while_the_worker_restarts_is_answered_by_its_replacement(
    origin: VersionedOrigin, tmp_path: Path, listen: str
) -> None:
    """With one worker, the default listen mode keeps the supervisor's socket listening: a client
    that connects while the killed worker is being replaced waits in its backlog and is answered by
    the replacement, where a ``SO_REUSEPORT`` socket per worker would have left no socket listening
    and refused it."""
    node = WorkerNode(tmp_path, origin, workers=1, control_plane="process", listen=listen)
    try:
        [victim] = node.workers()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in node.workers(), timeout=10)
        conn = node.connection()
        try:
            status, _, body = node.get(conn, "/restart/a")
            assert (status, body) == (200, f"/restart/a v{origin.version}")
            assert node.owner(conn) not in (0, victim)
        finally:
            conn.close()
    finally:
        assert node.stop() == 0


def test_sigint_stops_every_process_and_leaves_nothing_in_dev_shm(
    origin: VersionedOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    n = WorkerNode(
        tmp_path, origin, workers=1, control_plane="process", extra=f'[logging]\naccess_log = "{log}"\n'
    )
    try:
        conn = n.connection()
        try:
            assert n.get(conn, "/sigint/a")[1] == "MISS"  # the worker's fill ring and access-log ring
        finally:
            conn.close()
        processes = [n.process.pid, *children(n.process.pid)]
        processes += [c for pid in n.workers() for c in children(pid)]  # the fill writer
        assert len(processes) >= 4  # supervisor, access-log formatter, worker, fill writer
        rings = ring_directory(tmp_path)
        assert rings.exists() or not SHM.is_dir()
        assert any(f"-{pid}-" in p.name for p in SHM.glob("edgecache-fills-*") for pid in processes)
    finally:
        code = n.stop(signal.SIGINT)
    assert code == 0
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in processes), timeout=10)
    assert not rings.exists()
    left = [p.name for p in SHM.glob("*") if any(f"-{pid}-" in p.name for pid in processes)]
    assert left == []
    assert "/sigint/a" in log.read_text()


def test_inline_with_several_workers_is_refused_with_the_reason(
    tmp_path: Path, origin: VersionedOrigin
) -> None:
    config = write_config(tmp_path, origin, workers=2, control_plane="inline")
    with pytest.raises(ValidationError, match=r'control_plane = "inline".*needs workers = 1, not 2'):
        load_config(config)
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "invalid configuration" in result.output and "needs workers = 1" in result.output
    assert "Traceback" not in result.output


def test_the_default_keeps_one_worker_inline_and_the_fill_locks_off() -> None:
    """``auto`` keeps a one-worker node one process; split, its one worker has nobody to share
    fills with, so it takes no fill lock (decision 0021 applies from two workers)."""
    assert not Config.model_validate({"runtime": {"workers": 1}}).runtime.supervised
    assert Config.model_validate({"runtime": {"workers": 2}}).runtime.supervised
    split = Config.model_validate({"runtime": {"workers": 1, "control_plane": "process"}})
    assert split.runtime.supervised and not shares_fills(split)


def test_inline_without_a_count_is_one_worker_whatever_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default count is the usable cores; ``inline`` alone must not depend on them (accepted on
    one core, refused on four), and an explicit count above 1 is still refused."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert Config.model_validate({"runtime": {}}).runtime.workers == 4
    inline = Config.model_validate({"runtime": {"control_plane": "inline"}}).runtime
    assert inline.workers == 1 and not inline.supervised
    with pytest.raises(ValidationError, match="needs workers = 1, not 2"):
        Config.model_validate({"runtime": {"control_plane": "inline", "workers": 2}})
