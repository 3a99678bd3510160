"""Fill locks between processes (``cluster/fill_locks.py``, decision 0021), end to end: a node on
loopback whose proxy shares its fill locks with another real process, which takes and releases a
key's lock the way a second worker's fill does. The other process never fetches; what the tests
watch is whether the node asks the origin, and what its client gets."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.cluster.board import CLAIM_SLOTS, FILL_SLOTS, PositionBoard
from edgecache.cluster.fill_locks import STORED_RECENTLY, FillLocks, _claim_slot, _slot
from edgecache.httpcache.key import primary_key, vary_suffix
from edgecache.store.entry import Entry

OTHER_WORKER = """
import sys
from edgecache.cluster.board import FILL_SLOTS, PositionBoard
from edgecache.cluster.fill_locks import FillLocks, _slot
locks = FillLocks(PositionBoard(int(sys.argv[1]), 2), 1)
for line in sys.stdin:
    command, key = line.split()
    token = locks.token(key)
    if command == "take":
        print(locks.take(token), flush=True)
    elif command == "probe":
        print(locks.probe(token).value, flush=True)
    else:
        locks.release(token, stored=command == "stored")
        print("released", flush=True)
"""


class OtherWorker:
    """A second process of the node (worker slot 1; the node's proxy is slot 0), holding fill
    claims on the same board."""

    def __init__(self, board: PositionBoard) -> None:
        self.board = board
        self.process = subprocess.Popen(
            [sys.executable, "-c", OTHER_WORKER, str(board.fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(board.fd,),
        )

    def say(self, command: str, key: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command} {key}\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        """Kill it, and clear its claims as the supervisor does for a worker it has reaped."""
        self.process.kill()
        self.process.wait()
        self.board.clear_claims(1)


@pytest.fixture(scope="module")
def board(stack: Stack) -> Iterator[PositionBoard]:
    b = PositionBoard.create(2)
    yield b
    stack.node.proxy.fill_locks = None
    b.close()


@pytest.fixture
def other(stack: Stack, board: PositionBoard) -> Iterator[OtherWorker]:
    stack.node.proxy.share_fills(FillLocks(board, 0), 5.0)
    o = OtherWorker(board)
    yield o
    o.close()


def sdk(stack: Stack) -> cloudflare.Cloudflare:
    """The official Cloudflare SDK pointed at the node's control listener."""
    base_url = f"http://127.0.0.1:{stack.node.control_port}/client/v4"
    return cloudflare.Cloudflare(api_token=stack.token(), base_url=base_url, max_retries=0)


def key_of(stack: Stack, path: str) -> str:
    return primary_key("http", "test.example", path, stack.node.zones.by_id[ZONE_ID].key_options)


def entry_for(
    stack: Stack, path: str, body: bytes, names: tuple[str, ...] = (), variant: dict[str, str] | None = None
) -> Entry:
    """A fresh entry for ``path`` (the variant ``variant`` selects, when it varies by ``names``)."""
    now = time.time()
    return Entry(
        zone=ZONE_ID,
        key=key_of(stack, path) + vary_suffix(names, variant or {}),
        status=200,
        head=b"Cache-Control: public, max-age=60\r\n" + b"".join(b"Vary: %s\r\n" % n.encode() for n in names),
        body=body,
        tags=(),
        stored_seq=stack.node.index.position,
        response_time=now,
        initial_age=0.0,
        freshness_lifetime=60.0,
        length_known=True,
    )


def stored_elsewhere(stack: Stack, path: str, body: bytes, *, variant: dict[str, str] | None = None) -> None:
    """What the other worker's fill leaves in the shared disk tier; with ``variant``, for a URL
    whose answers vary by those request fields: the variant they select, and the URL's Vary names."""
    names = tuple(sorted(variant or ()))
    disk = stack.node.disk
    assert disk is not None
    assert disk.put(entry_for(stack, path, body, names, variant))
    if names:
        disk.set_vary(key_of(stack, path), names)


def wait_for_the_wait(stack: Stack, key: str) -> None:
    """Until this process waits for another's fill of ``key`` (read from the proxy: when to act as
    the other worker)."""
    deadline = time.monotonic() + 10
    while not stack.call(lambda: key in stack.node.proxy._elsewhere) and time.monotonic() < deadline:
        time.sleep(0.002)


def test_a_miss_waits_for_the_fill_another_process_holds_and_is_answered_from_the_disk_tier(
    stack: Stack, other: OtherWorker
) -> None:
    path = "/fill-locks/held"
    stack.origin.routes[path] = Route(body=b"from the origin")
    assert other.say("take", key_of(stack, path)) == "True"
    # Released as stored, then visible in the disk tier a little later, as its commit makes it.
    stack.call(lambda: stack.loop.call_later(0.25, other.say, "stored", key_of(stack, path)))
    stack.call(lambda: stack.loop.call_later(0.28, stored_elsewhere, stack, path, b"from the other worker"))
    started = time.monotonic()
    status, headers, body = stack.request(path)
    assert (status, body) == (200, b"from the other worker")
    assert headers["cf-cache-status"] == "HIT"
    assert stack.origin.hits[path] == 0
    assert time.monotonic() - started < 2.0  # not the 5 s timeout


def test_a_fill_stored_elsewhere_just_now_is_waited_for_though_its_lock_is_free(
    stack: Stack, other: OtherWorker
) -> None:
    """The other worker has stored its fill and released the lock, and the disk tier has not
    committed the entry yet: a miss now must wait for it there, not fetch it again."""
    path = "/fill-locks/stored-just-now"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    assert other.say("take", key) == "True"
    assert other.say("stored", key) == "released"
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.request, path)
        # Once the miss is waiting, the entry shows up in the disk tier, as the other worker's
        # commit would make it.
        wait_for_the_wait(stack, key)
        stack.call(lambda: stored_elsewhere(stack, path, b"from the other worker"))
        status, _, body = answer.result(timeout=20)
    assert (status, body) == (200, b"from the other worker")
    assert stack.origin.hits[path] == 0
    assert time.monotonic() - started < 2.0  # not the 5 s timeout


def test_a_lock_released_without_a_stored_fill_lets_the_waiter_fetch_at_once(
    stack: Stack, other: OtherWorker
) -> None:
    path = "/fill-locks/not-stored"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    assert other.say("take", key) == "True"
    started = time.monotonic()
    stack.call(lambda: stack.loop.call_later(0.2, other.say, "failed", key))
    status, headers, body = stack.request(path)
    assert (status, body) == (200, b"from the origin")
    assert headers["cf-cache-status"] == "MISS"
    assert stack.origin.hits[path] == 1
    assert 0.2 <= time.monotonic() - started < 2.0  # it waited for the release, not the 5 s timeout


def test_a_waiter_fetches_itself_when_the_lock_timeout_passes(
    stack: Stack, board: PositionBoard, other: OtherWorker
) -> None:
    stack.node.proxy.share_fills(FillLocks(board, 0), 0.3)
    path = "/fill-locks/timeout"
    stack.origin.routes[path] = Route(body=b"from the origin")
    assert other.say("take", key_of(stack, path)) == "True"
    started = time.monotonic()
    status, _, body = stack.request(path)
    waited = time.monotonic() - started
    assert (status, body) == (200, b"from the origin")
    assert stack.origin.hits[path] == 1
    assert 0.3 <= waited < 4.0


def test_a_fill_a_purge_kept_out_of_the_store_is_not_announced_as_stored(
    stack: Stack, other: OtherWorker
) -> None:
    """This process's fetch began before a purge of its URL, so the fill is not stored: the other
    processes' waiters must learn at once that there is nothing to wait for in the disk tier."""
    path = "/fill-locks/purged-during-the-fetch"
    # Long enough for the purge below to land while the origin is still answering.
    stack.origin.routes[path] = Route(body=b"from the origin", delay=2.0)
    key = key_of(stack, path)
    cf = sdk(stack)
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(stack.request, path)
            deadline = time.monotonic() + 10
            while stack.origin.hits[path] == 0 and time.monotonic() < deadline:
                time.sleep(0.002)
            assert other.say("probe", key) == "held"  # this process fetches it
            cf.cache.purge(zone_id=ZONE_ID, files=[f"http://test.example{path}"])
            status, _, body = answer.result(timeout=20)
    finally:
        cf.close()
    assert (status, body) == (200, b"from the origin")
    assert other.say("probe", key) == "gone"
    assert stack.request(path)[1]["cf-cache-status"] == "MISS"
    assert stack.origin.hits[path] == 2


def test_another_variant_stored_elsewhere_ends_the_wait_at_once(stack: Stack, other: OtherWorker) -> None:
    """The first fill of a URL whose answers vary: the lock and the "stored" announcement are the
    URL's, and the other worker stored its own client's variant. A client here that asks for
    another variant must fetch its own at once, not wait ``STORED_RECENTLY`` for one that will
    not come."""
    path = "/fill-locks/vary"
    stack.origin.routes[path] = Route(
        body=b"fr from the origin", headers={"Cache-Control": "public, max-age=60", "Vary": "Accept-Language"}
    )
    key = key_of(stack, path)
    assert other.say("take", key) == "True"
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.request, path, headers={"Accept-Language": "fr"})
        wait_for_the_wait(stack, key)
        started = time.monotonic()
        assert other.say("stored", key) == "released"
        en = {"accept-language": "en"}
        stack.call(lambda: stored_elsewhere(stack, path, b"en from elsewhere", variant=en))
        status, _, body = answer.result(timeout=20)
        elapsed = time.monotonic() - started
    assert (status, body) == (200, b"fr from the origin")
    assert stack.origin.hits[path] == 1
    assert elapsed < STORED_RECENTLY
    # The other worker's variant is a hit from the disk tier.
    status, headers, body = stack.request(path, headers={"Accept-Language": "en"})
    assert (status, body, headers["cf-cache-status"]) == (200, b"en from elsewhere", "HIT")
    assert stack.origin.hits[path] == 1


def test_past_the_keys_a_process_may_wait_for_a_miss_fetches_at_once(
    stack: Stack, board: PositionBoard, other: OtherWorker
) -> None:
    stack.node.proxy.share_fills(FillLocks(board, 0), 5.0, wait_keys=1)
    waited, fetched = "/fill-locks/cap/waited", "/fill-locks/cap/fetched"
    for path in (waited, fetched):
        stack.origin.routes[path] = Route(body=b"from the origin")
        assert other.say("take", key_of(stack, path)) == "True"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stack.request, waited)
        wait_for_the_wait(stack, key_of(stack, waited))
        started = time.monotonic()
        status, headers, body = stack.request(fetched)
        assert time.monotonic() - started < 2.0  # not the 5 s lock timeout
        assert (status, body, headers["cf-cache-status"]) == (200, b"from the origin", "MISS")
        assert not first.done()  # the key waited for is waited for still
        assert other.say("failed", key_of(stack, waited)) == "released"
        assert first.result(timeout=20)[0] == 200
    assert stack.origin.hits[fetched] == 1
    assert stack.origin.hits[waited] == 1


def test_a_waiter_cancelled_leaves_the_others_waiting(stack: Stack, other: OtherWorker) -> None:
    """Two clients wait for the same fill of another process; one's answer is cancelled (its
    connection reset, its task cancelled, as a stopping server does). The other must still be
    answered when the fill is stored."""
    path = "/fill-locks/one-cancelled"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    assert other.say("take", key) == "True"
    server = stack.node._data
    assert server is not None

    def answering() -> list[asyncio.Task[None]]:
        return [c._task for c in server.connections if c._task is not None and not c._task.done()]

    def cancel_one() -> None:
        for conn in server.connections:
            task = conn._task
            if task is not None and not task.done():
                conn.abort()
                task.cancel()
                return

    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(stack.request, path) for _ in range(2)]
        deadline = time.monotonic() + 10
        while len(stack.call(answering)) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        stack.call(cancel_one)
        time.sleep(0.1)  # the cancellation reaches the waiter
        assert other.say("stored", key) == "released"
        stack.call(lambda: stored_elsewhere(stack, path, b"from the other worker"))
        outcomes: list[tuple[int, bytes] | None] = []
        for answer in answers:
            try:
                status, _, body = answer.result(timeout=30)
                outcomes.append((status, body))
            except (OSError, http.client.HTTPException):
                outcomes.append(None)
    assert sorted(outcomes, key=repr) == [(200, b"from the other worker"), None]
    assert stack.origin.hits[path] == 0


def test_a_fill_the_disk_tier_dropped_is_not_announced_as_stored(stack: Stack, other: OtherWorker) -> None:
    """The disk tier's fill writer is stalled and its ring full, so this process's fill is dropped
    on its way to the disk (counted): it will never show up there, and the other processes'
    waiters must learn at once that there is nothing to wait for."""
    path = "/fill-locks/dropped-by-the-disk"
    stack.origin.routes[path] = Route(body=b"from the origin")
    disk, writer = stack.node.disk, stack.node.fill_writer
    assert disk is not None and writer is not None and writer.pid is not None

    def fill(i: int, size: int) -> bool:
        return disk.put(entry_for(stack, f"/fill-locks/filler/{size}/{i}", b"f" * size))

    os.kill(writer.pid, signal.SIGSTOP)
    try:
        # Filled to the last few bytes: large fillers, then ever smaller ones in what is left.
        for size in (1 << 20, 1 << 14, 1 << 8, 1):
            assert not all(stack.call(partial(fill, i, size)) for i in range(64)), "the ring never filled"
        dropped = disk.counters().dropped
        status, _, body = stack.request(path)
        assert (status, body) == (200, b"from the origin")
        assert disk.counters().dropped == dropped + 1
        assert other.say("probe", key_of(stack, path)) == "gone"
    finally:
        os.kill(writer.pid, signal.SIGCONT)


def test_the_waits_end_when_the_node_stops_waiting(stack: Stack, other: OtherWorker) -> None:
    """What a stopping node does after its server has cancelled the answers (``Node.stop``): no
    poller is left running, and a waiter still there fetches at once."""
    path = "/fill-locks/stop-waiting"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    assert other.say("take", key) == "True"
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.request, path)
        wait_for_the_wait(stack, key)
        started = time.monotonic()
        stack.run(stack.node.proxy.stop_waiting())
        assert not stack.call(lambda: stack.node.proxy._elsewhere)
        status, _, body = answer.result(timeout=20)
    assert (status, body) == (200, b"from the origin")
    assert time.monotonic() - started < 2.0  # not the 5 s timeout


def test_a_process_killed_holding_a_claim_leaves_it_free_once_reaped(board: PositionBoard) -> None:
    """What the supervisor does when it reaps a worker (``Supervisor._watch``): the dead worker's
    claims go, the other slot's stay."""
    other = OtherWorker(board)
    locks = FillLocks(board, 0)
    token = locks.token("http://test.example/fill-locks/killed")
    mine = locks.token("http://test.example/fill-locks/kept")
    assert locks.take(mine)
    assert other.say("take", "http://test.example/fill-locks/killed") == "True"
    assert not locks.take(token)
    other.process.kill()  # SIGKILL
    other.process.wait()
    assert board.clear_claims(1) == 1
    assert locks.take(token)
    assert board.clear_claims(1) == 0
    other = OtherWorker(board)  # the slot's next worker
    try:
        assert other.say("take", "http://test.example/fill-locks/kept") == "False"
        assert other.say("take", "http://test.example/fill-locks/killed") == "False"
    finally:
        other.close()
    locks.unlock(token)
    locks.unlock(mine)


def test_fill_outcomes_spread_over_the_whole_table(board: PositionBoard) -> None:
    # An outcome another key writes in the same slot overwrites a "stored" announcement: the
    # tokens' fixed low bits must not confine 10,000 keys to an eighth of the slots.
    token = FillLocks(board, 0).token
    slots = {_slot(token(f"http://test.example/spread/{i}")) for i in range(10_000)}
    assert len(slots) > 0.9 * FILL_SLOTS
    # Likewise the claims: keys fetched at once share a word (and one fetches unclaimed) rarely.
    claims = {_claim_slot(token(f"http://test.example/spread/{i}")) for i in range(50_000)}
    assert len(claims) > 0.9 * CLAIM_SLOTS


def test_tokens_are_keyed_by_the_node(board: PositionBoard) -> None:
    """Every process of a node makes the same token for a key (they map one board); another node
    makes another, so a client cannot work out from one node which URLs collide on another."""
    key = "http://test.example/fill-locks/keyed"
    other = PositionBoard.create(2)
    again = PositionBoard(board.fd, 2)
    try:
        assert FillLocks(again, 1).token(key) == FillLocks(board, 0).token(key)
        assert FillLocks(other, 0).token(key) != FillLocks(board, 0).token(key)
    finally:
        again.unmap()  # the descriptor is the board fixture's
        other.close()


def test_a_second_fetch_here_keeps_the_lock_when_the_first_releases_it(board: PositionBoard) -> None:
    other = OtherWorker(board)
    locks = FillLocks(board, 0)
    key = "http://test.example/fill-locks/twice-here"
    token = locks.token(key)
    try:
        assert locks.take(token) and locks.take(token)  # two fetches of this process
        locks.release(token, stored=False)
        assert other.say("take", key) == "False"  # the second still holds it
        locks.unlock(token)
        assert other.say("take", key) == "True"
    finally:
        other.close()


def test_a_fill_announced_before_a_purge_here_is_not_waited_for(stack: Stack, other: OtherWorker) -> None:
    """The other worker stored the object just before a purge of it: the purge removes that fill
    from the disk tier, so a miss here must fetch at once, not wait for an entry that will not come
    (with two real workers, both waited the whole ``STORED_RECENTLY`` after every purge)."""
    path = "/fill-locks/announced-before-a-purge"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    cf = sdk(stack)
    try:
        assert other.say("take", key) == "True"
        assert other.say("stored", key) == "released"
        cf.cache.purge(zone_id=ZONE_ID, files=[f"http://test.example{path}"])
    finally:
        cf.close()
    started = time.monotonic()
    status, headers, body = stack.request(path)
    assert (status, body, headers["cf-cache-status"]) == (200, b"from the origin", "MISS")
    assert time.monotonic() - started < 0.3  # not STORED_RECENTLY (0.5 s) of waiting


def test_a_fill_announced_after_a_purge_here_is_waited_for(stack: Stack, other: OtherWorker) -> None:
    """A purge was applied here, then the other worker stored the object: that fill is newer than
    the purge, so a miss here waits for it in the disk tier. The purge used to be dated from this
    process's first miss after it, which took the fill for older and fetched it again (with two
    real workers: the first hot object after any purge fetched twice, ``bench/workers.py`` §4)."""
    path = "/fill-locks/announced-after-a-purge"
    stack.origin.routes[path] = Route(body=b"from the origin")
    key = key_of(stack, path)
    cf = sdk(stack)
    try:
        cf.cache.purge(zone_id=ZONE_ID, files=[f"http://test.example{path}/another"])
    finally:
        cf.close()
    time.sleep(0.05)
    assert other.say("take", key) == "True"
    assert other.say("stored", key) == "released"
    stack.call(lambda: stack.loop.call_later(0.1, stored_elsewhere, stack, path, b"from the other worker"))
    status, headers, body = stack.request(path)
    assert (status, body) == (200, b"from the other worker")
    assert headers["cf-cache-status"] == "HIT"
    assert stack.origin.hits[path] == 0
