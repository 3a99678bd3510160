"""A node of worker processes (``[runtime] workers = 2``), as real processes on loopback.

What a user would notice: a purge the API has answered is in effect in every process (no process
serves the old object, however connections spread); a worker killed under load costs only its own
connections, is replaced, and the replacement follows later purges; SIGTERM lets in-flight
responses finish. The tasks of a purge succeed once every process has reclaimed it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers_node import HOST, VersionedOrigin, WorkerNode, wait_for


@pytest.fixture(scope="module")
def origin() -> Iterator[VersionedOrigin]:
    o = VersionedOrigin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def node(origin: VersionedOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerNode]:
    n = WorkerNode(tmp_path_factory.mktemp("workers"), origin)
    yield n
    assert n.stop() == 0


def test_an_object_one_worker_fetched_is_a_hit_for_the_other(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    # First in the module, on a node that has served nothing: the other worker has never looked
    # at this zone's disk database before it reads the object the first one stored there.
    origin.version = 1
    conn = node.connection()
    try:
        assert node.get(conn, "/shared/a")[1] == "MISS"
    finally:
        conn.close()
    wait_for(lambda: node.metrics().get("edgecache_disk_write_queue") == 0)
    answers = list(node.spread("/shared/a", at_least=1))
    assert {cache for _, cache, _, _ in answers} == {"HIT"}
    # The next tests count what their purges match: leave nothing behind.
    job = node.purge({"tags": ["obj"]})
    wait_for(lambda: node.job(job)["done"])


def test_an_object_purged_is_no_disk_hit_for_a_worker_that_never_held_it(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    """One worker fetches two objects (written to the shared disk tier); one is purged, and both
    processes reclaim it (its epoch rows may then be compacted away). The other worker, whose
    memory never held either, reads the kept one from disk and never serves the purged one."""
    origin.version = 1
    conn = node.connection()
    try:
        assert node.get(conn, "/disk-purge/a")[1:] == ("MISS", "/disk-purge/a v1")
        assert node.get(conn, "/disk-purge/kept")[1:] == ("MISS", "/disk-purge/kept v1")
        first = node.owner(conn)
    finally:
        conn.close()
    wait_for(lambda: node.metrics().get("edgecache_disk_write_queue") == 0)
    origin.version = 2
    job = node.purge({"files": [f"http://{HOST}/disk-purge/a"]})
    wait_for(lambda: node.job(job)["done"])
    for _ in range(200):
        conn = node.connection()
        try:
            status, cache, body = node.get(conn, "/disk-purge/kept")
            if node.owner(conn) == first:
                continue
            assert (status, cache, body) == (200, "HIT", "/disk-purge/kept v1")
            assert node.get(conn, "/disk-purge/a")[1:] == ("MISS", "/disk-purge/a v2")
            break
        finally:
            conn.close()
    else:
        raise AssertionError("no connection reached the other worker")
    # The next tests count what their purges match: leave nothing behind.
    job = node.purge({"tags": ["obj"]})
    wait_for(lambda: node.job(job)["done"])


def test_a_purge_is_in_effect_in_every_worker_before_the_api_answers(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.version = 1
    # Every worker caches v1 and serves it as a hit.
    answers = list(node.spread("/purge/a", at_least=2))
    assert {body for _, _, body, _ in answers} == {"/purge/a v1"}
    assert any(cache == "HIT" for _, cache, _, _ in answers)

    origin.version = 2
    job = node.purge({"tags": ["obj"]})
    # At once, on fresh connections reaching each worker: nobody serves the purged v1. The first
    # answer is a MISS; a worker answering later may find the new v2 in the shared disk tier.
    after = list(node.spread("/purge/a", at_least=2))
    assert {body for _, _, body, _ in after} == {"/purge/a v2"}
    assert after[0][1] == "MISS" and len({pid for *_, pid in after}) == 2

    # The task succeeds once both processes have reclaimed it. Each had the object once: counted
    # whether its reclaimer removed it or the request above found it first and removed it then.
    wait_for(lambda: node.job(job)["done"])
    [task] = node.job(job)["tasks"]
    assert task["status"] == "success" and task["matched"] == 2

    metrics = node.metrics()
    assert metrics["edgecache_workers"] == 2
    published = metrics["edgecache_ledger_published_position"]
    assert published >= 1
    for slot in ("0", "1"):
        assert metrics[f'edgecache_worker_applied_position{{worker="{slot}"}}'] == published
        assert metrics[f'edgecache_worker_rss_bytes{{worker="{slot}"}}'] > 1_000_000
    # The node's totals are the sums of its processes'.
    per_worker = sum(
        metrics[f'edgecache_worker_responses_total{{cache_status="MISS",worker="{slot}"}}']
        for slot in ("0", "1")
    )
    # One MISS per version at least; the other worker may find each version in the shared disk tier.
    assert metrics['edgecache_responses_total{cache_status="MISS"}'] == per_worker >= 2


def test_a_killed_worker_costs_only_its_own_connections_and_is_replaced(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.version = 3
    node.purge({"tags": ["obj"]})
    connections = []
    owners: dict[int, int] = {}
    for _ in range(64):
        conn = node.connection()
        node.get(conn, "/kill/a")
        owners[len(connections)] = node.owner(conn)
        connections.append(conn)
        if len(connections) >= 8 and len(set(owners.values())) == 2:
            break
    victim, survivor = sorted(set(owners.values()))
    assert {victim, survivor} == set(node.workers())  # never 0: os.kill(0) would hit our own group
    failures: dict[int, list[BaseException]] = {i: [] for i in range(len(connections))}
    served_after_kill: dict[int, int] = dict.fromkeys(range(len(connections)), 0)
    killed = threading.Event()
    stop = threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            try:
                status, _, body = node.get(connections[i], "/kill/a")
                assert (status, body) == (200, "/kill/a v3")
            except BaseException as exc:  # a reset, an EOF, a wrong answer: all count
                failures[i].append(exc)
                return
            if killed.is_set():
                served_after_kill[i] += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(connections))]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    killed.set()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    for i, conn in enumerate(connections):
        conn.close()
        if owners[i] == survivor:
            assert failures[i] == [] and served_after_kill[i] > 0, (i, failures[i])

    # The supervisor replaces it, counts the restart, and the replacement follows later purges.
    wait_for(lambda: len(node.workers()) == 2 and victim not in node.workers())
    replacement = next(p for p in node.workers() if p != survivor)
    metrics = node.metrics()
    assert sum(metrics[f'edgecache_worker_restarts_total{{worker="{s}"}}'] for s in ("0", "1")) == 1
    answers = list(node.spread("/kill/a", at_least=1))
    assert {body for _, _, body, _ in answers} == {"/kill/a v3"}
    origin.version = 4
    node.purge({"tags": ["obj"]})
    answers = list(node.spread("/kill/a", at_least=2))
    assert {body for _, _, body, _ in answers} == {"/kill/a v4"}
    assert replacement in {pid for _, _, _, pid in answers}


def test_sigterm_lets_in_flight_responses_finish(origin: VersionedOrigin, tmp_path: Path) -> None:
    n = WorkerNode(tmp_path, origin, grace=5.0)
    origin.slow = 1.5
    results: list[tuple[int, str, str]] = []
    errors: list[BaseException] = []
    conns = [n.connection() for _ in range(4)]

    def slow(i: int) -> None:
        try:
            results.append(n.get(conns[i], f"/slow/{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every request is at the origin now
    started = time.monotonic()
    assert n.stop() == 0
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    assert sorted(body for _, _, body in results) == [f"/slow/{i} v{origin.version}" for i in range(4)]
    assert time.monotonic() - started < 5.0 + 5.0
    for conn in conns:
        conn.close()
