"""Following the ledger, in one process: a control-plane node that only *publishes* each purge on a
position board (no nudge, no reclaim), and a worker's data plane that must find out on its own.

The supervisor also nudges idle workers, and their reclaimers remove purged entries within
milliseconds; either would hide the loss of the per-request check. Here neither happens (the worker
is never nudged and its reclaimer is held), so only the comparison of the published position
with the applied one, on the request itself, can make the next answer a MISS.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cloudflare
import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from conftest import Route, ScriptedOrigin
from edgecache.app import Node
from edgecache.cluster.acks import AckBook
from edgecache.cluster.board import PositionBoard
from edgecache.cluster.channel import Channel, decode_purge, encode_purge
from edgecache.cluster.collector import NodeCollector, WorkerView
from edgecache.cluster.worker import Worker
from edgecache.config import Config, DiskStorage, Listener, Storage, Zone
from edgecache.control.credentials import Permission
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url

T = TypeVar("T")
ZONE = "5" * 32
HOST = "follow.example"


class Pair:
    """A control node publishing on a board, and one worker's data plane reading it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.origin = ScriptedOrigin()
        self.run(self.origin.start())
        self.tmp = tempfile.TemporaryDirectory(prefix="edgecache-follow-")
        zone = Zone(id=ZONE, name=HOST, hostnames=(HOST,), origin=f"http://127.0.0.1:{self.origin.port}")
        # Two nodes in one process cannot open one LMDB environment; the disk tier is not what this
        # test is about (test_workers.py runs it with real processes).
        config = Config(
            data_dir=Path(self.tmp.name),
            data=Listener(port=0),
            control=Listener(port=0),
            zones=(zone,),
            storage=Storage(disk=DiskStorage(enabled=False)),
        )
        self.board = PositionBoard.create(1)
        self.published: list[Purge] = []
        self.control = Node(config, apply=self._publish)
        self.run(self.control.start_control())
        self.supervisor_end, worker_end = socket.socketpair()
        self.supervisor_end.setblocking(False)
        self.channel: Channel | None = None
        self.wakes_end, worker_wakes = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        worker_wakes.setblocking(False)

        async def make_worker() -> Worker:
            worker = Worker(config, 0, self.board, await Channel.open(worker_end), worker_wakes)
            await worker.node.start_data(None, worker.handler())
            worker.node.reclaimer.hold()
            return worker

        self.worker = self.run(make_worker())
        _, token = self.control.credentials.create_token(
            config.accounts[0].id, "follow", [Permission.CACHE_PURGE], [ZONE]
        )
        self.cf = cloudflare.Cloudflare(
            api_token=token, base_url=f"http://127.0.0.1:{self.control.control_port}/client/v4", max_retries=0
        )

    def _publish(self, purge: Purge) -> None:
        self.published.append(purge)
        self.board.publish(purge.seq)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def wake(self, after: int, purge: Purge) -> None:
        """The supervisor's wake message for ``purge``, published after position ``after`` (nothing
        here reads the socket until a request finds the worker behind)."""
        self.wakes_end.send(json.dumps({"t": "wake", "after": after, "purge": encode_purge(purge)}).encode())

    def ack(self, seq: int) -> list[int]:
        """The worker's counts per selector for purge ``seq``, as the supervisor would read them."""

        async def read() -> list[int]:
            if self.channel is None:
                self.channel = await Channel.open(self.supervisor_end)
            while True:
                message = await self.channel.receive()
                assert message is not None
                if message["t"] == "acks":
                    for acked, counts in message["acks"]:
                        if acked == seq:
                            return list(counts)

        return self.run(asyncio.wait_for(read(), 20))

    def status(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.worker.node.data_port, timeout=20)
        try:
            conn.request("GET", path, headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            return resp.headers["CF-Cache-Status"]
        finally:
            conn.close()

    def close(self) -> None:
        self.cf.close()
        self.run(self.worker.stop())
        self.run(self.control.stop())
        self.run(self.origin.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.supervisor_end.close()
        self.wakes_end.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


PURGES: dict[str, Any] = {
    "files": lambda n: {"files": [f"http://{HOST}/follow/{n}/x"]},
    "tags": lambda n: {"tags": [f"follow-{n}"]},
    "hosts": lambda n: {"hosts": [HOST]},
    "prefixes": lambda n: {"prefixes": [f"{HOST}/follow/{n}/"]},
    "everything": lambda n: {"purge_everything": True},
}


@pytest.mark.parametrize("kind", sorted(PURGES))
def test_an_unnudged_worker_catches_up_on_its_next_request(pair: Pair, kind: str) -> None:
    path = f"/follow/{kind}/x"
    pair.origin.routes[path] = Route(
        headers={"Cache-Control": "public, max-age=600", "Cache-Tag": f"follow-{kind}"}
    )
    pair.status(path)
    assert pair.status(path) == "HIT"
    before = pair.worker.follower.caught_up

    pair.cf.cache.purge(zone_id=ZONE, **PURGES[kind](kind))

    assert pair.board.published > pair.worker.follower.applied  # nobody told the worker
    assert pair.status(path) == "MISS"
    assert pair.worker.follower.applied == pair.board.published
    assert pair.worker.follower.caught_up == before + 1
    assert pair.board.applied(0) == pair.board.published
    assert pair.status(path) == "HIT"  # the refill is stored after the purge, and stays


def test_the_reclaimed_purge_is_acknowledged_with_its_counts(pair: Pair) -> None:
    path = "/follow/ack/x"
    pair.origin.routes[path] = Route(
        headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "follow-ack"}
    )
    pair.status(path)
    pair.cf.cache.purge(zone_id=ZONE, tags=["follow-ack", "follow-none"])
    pair.status("/follow/ack/other")  # any request: the worker catches up
    seq = pair.board.published
    pair.run(_release(pair))

    assert pair.ack(seq) == [1, 0]  # per selector, in the purge's order
    assert pair.board.reclaimed(0) == seq


def test_an_object_a_request_removed_before_the_reclaimer_is_acknowledged_with_its_count(
    pair: Pair,
) -> None:
    for path in ("/follow/early/x", "/follow/early/y"):
        pair.origin.routes[path] = Route(
            headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "follow-early"}
        )
        pair.status(path)
        assert pair.status(path) == "HIT"
    pair.run(_hold(pair))
    pair.cf.cache.purge(zone_id=ZONE, tags=["follow-early"])
    assert pair.status("/follow/early/x") == "MISS"  # removed by this lookup, not by the reclaimer
    seq = pair.board.published
    pair.run(_release(pair))
    assert pair.ack(seq) == [2]


async def _hold(pair: Pair) -> None:
    pair.worker.node.reclaimer.hold()


async def _release(pair: Pair) -> None:
    pair.worker.node.reclaimer.release()
    await pair.worker.node.reclaimer.drain()


def _purge(seq: int, *selectors: Selector) -> Purge:
    return Purge(seq, ZONE, Mode.DELETE, selectors, 0.0)


def test_ack_book_completes_a_purge_when_every_process_that_could_hold_it_has_acked() -> None:
    done: list[tuple[int, dict[Selector, int]]] = []
    book = AckBook(lambda purge, matched: done.append((purge.seq, matched)))
    book.joined(0, 0)
    book.joined(1, 0)
    book.published(_purge(1, Tag("a"), Everything()))
    book.acked(0, 1, [2, 1])
    assert done == []
    book.acked(1, 1, [3, 0])
    assert done == [(1, {Tag("a"): 5, Everything(): 1})]

    # A process that dies owes nothing more; one that joins after a purge owes nothing for it.
    book.published(_purge(2, Tag("b")))
    book.left(1)
    assert done[-1][0] == 1
    book.joined(1, 2)
    book.acked(0, 2, [1])
    assert done[-1] == (2, {Tag("b"): 1})

    # A process that joins from a position behind a pending purge owes it too.
    book.published(_purge(3, Tag("c")))
    book.joined(2, 2)
    book.acked(0, 3, [0])
    book.acked(1, 3, [0])
    assert done[-1][0] == 2
    book.acked(2, 3, [4])
    assert done[-1] == (3, {Tag("c"): 4})
    assert book.outstanding == 0

    # Nobody to wait for: complete at once.
    empty = AckBook(lambda purge, matched: done.append((purge.seq, matched)))
    empty.published(_purge(4, Tag("d")))
    assert done[-1] == (4, {Tag("d"): 0})


def test_node_metrics_sum_the_processes_and_take_the_lowest_applied_position() -> None:
    def view(slot: int, hits: float, position: float) -> WorkerView:
        families = [
            ["edgecache_hits", "counter", "Fresh cache hits", [["edgecache_hits_total", {}, hits]]],
            [
                "edgecache_purge_ledger_position",
                "gauge",
                "Last purge applied",
                [["edgecache_purge_ledger_position", {}, position]],
            ],
        ]
        return WorkerView(slot, 0, True, 0, int(position), int(position), families)

    registry = CollectorRegistry()
    registry.register(NodeCollector(lambda: [view(0, 5, 7), view(1, 6, 4)], lambda: 7))
    text = generate_latest(registry).decode()
    assert "edgecache_hits_total 11.0" in text
    assert "edgecache_purge_ledger_position 4.0" in text
    assert 'edgecache_worker_applied_position{worker="1"} 4.0' in text
    assert "edgecache_ledger_published_position 7.0" in text


def test_a_worker_applies_nothing_past_the_announced_position(pair: Pair) -> None:
    path = "/follow/unannounced/x"
    pair.origin.routes[path] = Route(
        headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "follow-un"}
    )
    pair.status(path)
    ledger = LedgerStore(pair.control.database)

    def commit(tag: str, job: str) -> int:
        return ledger.append(
            NewPurge(
                zone_id=ZONE,
                mode="delete",
                selectors={"tags": [tag]},
                principal="test",
                dialect="cloudflare",
                job_id=job * 32,
                created_at=datetime.now(UTC),
            )
        )

    announced = commit("follow-other", "e")
    unannounced = commit("follow-un", "f")  # committed, its announcement not made yet
    pair.board.publish(announced)
    assert pair.status(path) == "HIT"  # caught up to the announced row only
    assert pair.worker.follower.applied == announced
    pair.board.publish(unannounced)
    assert pair.status(path) == "MISS"
    assert pair.worker.follower.applied == unannounced


def test_a_purge_carried_in_the_wake_is_applied_without_reading_the_ledger(pair: Pair) -> None:
    path = "/follow/carried/x"
    pair.origin.routes[path] = Route(headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "carried"})
    pair.status(path)
    assert pair.status(path) == "HIT"  # and the worker is at the published position
    after = pair.worker.follower.applied
    reads, delivered = pair.worker.follower.caught_up, pair.worker.follower.delivered
    pair.cf.cache.purge(zone_id=ZONE, tags=["carried"])
    pair.wake(after, pair.published[-1])
    # The request finds the worker behind and reads the waiting message before it answers.
    assert pair.status(path) == "MISS"
    assert pair.worker.follower.applied == pair.board.published
    assert (pair.worker.follower.caught_up, pair.worker.follower.delivered) == (reads, delivered + 1)


def test_a_wake_read_before_the_word_moves_spares_the_ledger_read(pair: Pair) -> None:
    # The supervisor sends the wake, then writes the word: a worker may read the message first.
    path = "/follow/early-wake/x"
    pair.origin.routes[path] = Route(headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "early"})
    pair.status(path)
    assert pair.status(path) == "HIT"
    after = pair.worker.follower.applied
    reads, delivered = pair.worker.follower.caught_up, pair.worker.follower.delivered
    pair.cf.cache.purge(zone_id=ZONE, tags=["early"])
    purge = pair.published[-1]
    pair.board.publish(after)  # as if the word were not written yet
    pair.wake(after, purge)
    pair.run(_read_wakes(pair))
    assert pair.worker.follower.applied == purge.seq
    pair.board.publish(purge.seq)
    assert pair.status(path) == "MISS"
    assert (pair.worker.follower.caught_up, pair.worker.follower.delivered) == (reads, delivered + 1)


async def _read_wakes(pair: Pair) -> None:
    pair.worker.read_wakes()


def test_after_a_missed_wake_the_ledger_is_read_instead(pair: Pair) -> None:
    paths = ["/follow/missed/x", "/follow/missed/y"]
    for n, path in enumerate(paths):
        pair.origin.routes[path] = Route(
            headers={"Cache-Control": "public, max-age=600", "Cache-Tag": f"missed-{n}"}
        )
        pair.status(path)
        assert pair.status(path) == "HIT"
    reads, delivered = pair.worker.follower.caught_up, pair.worker.follower.delivered
    pair.cf.cache.purge(zone_id=ZONE, tags=["missed-0"])
    first_seq = pair.published[-1].seq
    pair.cf.cache.purge(zone_id=ZONE, tags=["missed-1"])
    # The first purge's wake never arrived: the second's is not the next purge for this worker.
    pair.wake(first_seq, pair.published[-1])
    assert pair.worker.follower.delivered == delivered
    assert [pair.status(p) for p in paths] == ["MISS", "MISS"]
    assert pair.worker.follower.caught_up == reads + 1


def test_a_purge_survives_the_wake_message_with_its_selectors_in_order() -> None:
    purge = Purge(
        7,
        ZONE,
        Mode.INVALIDATE,
        (Tag("b"), Url(f"http://{HOST}/x"), Tag("a", HOST), Host(HOST), Prefix(f"{HOST}/p"), Everything()),
        1.5,
    )
    assert decode_purge(json.loads(json.dumps(encode_purge(purge)))) == purge
