"""Request coalescing across the worker processes of a node (decision 0021), as real processes on
loopback: clients held by both workers ask for one new object at once and the origin is asked
once; an answer that is not stored lets the other worker's clients go at its head; a fetching worker
killed with SIGKILL does not leave the other's clients waiting for the lock timeout."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers_node import VersionedOrigin, WorkerNode

TIMEOUT = 30.0
"""The node's fill_lock_timeout: far longer than any wait these tests allow, so that each of them
fails if a wait lasts until the timeout instead of ending on what the other worker did."""


@pytest.fixture(scope="module")
def origin() -> Iterator[VersionedOrigin]:
    o = VersionedOrigin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def node(origin: VersionedOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerNode]:
    n = WorkerNode(tmp_path_factory.mktemp("coalescing"), origin, fill_lock_timeout=TIMEOUT)
    yield n
    assert n.stop() == 0


def per_worker(node: WorkerNode, each: int) -> dict[int, list[http.client.HTTPConnection]]:
    """Kept-alive connections, ``each`` held by every worker (each has answered one request)."""
    held: dict[int, list[http.client.HTTPConnection]] = {}
    spare = []
    for i in range(200):
        conn = node.connection()
        node.get(conn, f"/warm/{os.getpid()}-{i}-{time.monotonic()}")
        pid = node.owner(conn)
        if len(held.setdefault(pid, [])) < each:
            held[pid].append(conn)
        else:
            spare.append(conn)
        if len(held) >= 2 and all(len(c) >= each for c in held.values()):
            break
    for conn in spare:
        conn.close()
    assert len(held) == 2 and all(len(c) == each for c in held.values()), held
    return held


def get_all(
    node: WorkerNode, conns: list[http.client.HTTPConnection], path: str
) -> list[tuple[int, str, str]]:
    """The same GET on every connection at once."""
    answers: list[tuple[int, str, str]] = [(0, "", "")] * len(conns)

    def one(i: int) -> None:
        answers[i] = node.get(conns[i], path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return answers


def test_a_new_object_asked_for_in_every_worker_at_once_is_fetched_once(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.slow = 0.5
    held = per_worker(node, 3)
    conns = [c for cs in held.values() for c in cs]
    try:
        before = origin.fetches
        answers = get_all(node, conns, "/slow/hot-object")
        assert {(status, body) for status, _, body in answers} == {(200, "/slow/hot-object v1")}
        assert origin.fetches - before == 1
        # The worker that did not fetch answered its clients from the disk tier.
        assert {cache for _, cache, _ in answers} == {"MISS", "HIT"}
    finally:
        for conn in conns:
            conn.close()


def test_an_answer_that_is_not_stored_lets_the_other_workers_clients_go_at_its_head(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    """The first fetch's head says private, and its body comes ``late_body`` seconds later: the
    other worker's clients, waiting for that fill, must go as soon as the head is in, not when
    the body ends."""
    origin.slow = 0.5
    origin.late_body = 4.0
    path = "/slow/private/late-body/object"
    held = per_worker(node, 2)
    answers: list[tuple[int, str, str]] = []
    finished: dict[int, list[float]] = {pid: [] for pid in held}

    def one(pid: int, conn: http.client.HTTPConnection) -> None:
        answers.append(node.get(conn, path))
        finished[pid].append(time.monotonic() - started)

    try:
        before = origin.fetches
        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(pid, c)) for pid, cs in held.items() for c in cs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(answers) == len(threads)
        assert {(status, body) for status, _, body in answers} == {(200, f"{path} v1")}
        # One fetch per worker at least (each worker's own clients coalesce on it until its head
        # says private, then fetch on their own).
        assert origin.fetches - before >= 2
        # The first fetch's client waited for its late body; every client of the other worker
        # was answered well before that body came.
        assert max(max(times) for times in finished.values()) >= origin.slow + origin.late_body
        assert min(max(times) for times in finished.values()) < origin.slow + origin.late_body - 1.0
    finally:
        for cs in held.values():
            for conn in cs:
                conn.close()


def test_a_fetching_worker_killed_releases_the_others_clients(
    node: WorkerNode, origin: VersionedOrigin
) -> None:
    origin.slow = 1.0
    held = per_worker(node, 1)
    (fetcher, [first]), (_, [second]) = sorted(held.items())
    answers: list[tuple[int, str, str] | BaseException] = []

    def ask(conn: http.client.HTTPConnection) -> None:
        try:
            answers.append(node.get(conn, "/slow/killed-fetcher"))
        except BaseException as exc:  # the killed worker's client loses its connection
            answers.append(exc)

    try:
        before = origin.fetches
        threads = [threading.Thread(target=ask, args=(first,))]
        threads[0].start()
        deadline = time.monotonic() + 10
        while origin.fetches == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert origin.fetches == before + 1
        threads.append(threading.Thread(target=ask, args=(second,)))
        started = time.monotonic()
        threads[1].start()
        time.sleep(0.3)  # the second worker's client is waiting for the first worker's fill
        assert fetcher in node.workers()  # never 0: os.kill(0) would hit our own group
        os.kill(fetcher, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - started
        assert (200, "MISS", "/slow/killed-fetcher v1") in answers
        assert elapsed < TIMEOUT / 3
        assert origin.fetches == before + 2
    finally:
        first.close()
        second.close()


def test_fill_lock_timeout_zero_lets_every_worker_fetch(origin: VersionedOrigin, tmp_path: Path) -> None:
    """The option is honoured: 0 turns coalescing across workers off."""
    node = WorkerNode(tmp_path, origin, fill_lock_timeout=0.0)
    try:
        origin.slow = 0.5
        held = per_worker(node, 2)
        conns = [c for cs in held.values() for c in cs]
        before = origin.fetches
        answers = get_all(node, conns, "/slow/uncoalesced")
        assert {(status, body) for status, _, body in answers} == {(200, "/slow/uncoalesced v1")}
        assert origin.fetches - before == 2
        for conn in conns:
            conn.close()
    finally:
        assert node.stop() == 0
