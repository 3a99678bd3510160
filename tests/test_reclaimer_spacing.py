"""A single-process node's reclaimer spaces its passes (``spacing``): a lone purge is reclaimed at
once, and the purges of a stream that arrive while a pass is recent wait for the next pass and are
reclaimed together in it, each with its own counts, in order."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from edgecache.edge import reclaimer
from edgecache.edge.reclaimer import Reclaimer
from edgecache.purge.index import EpochIndex
from edgecache.purge.selectors import Mode, Purge, Selector, Url
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier

ZONE = "z"
SPACING = 0.3


def entry(path: str) -> Entry:
    return Entry(
        zone=ZONE,
        key=f"http://h.example{path}",
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=b"x" * 100,
        tags=(),
        stored_seq=0,
        response_time=1000.0,
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


def purge(seq: int, path: str) -> Purge:
    return Purge(seq, ZONE, Mode.DELETE, (Url(f"http://h.example{path}"),), float(seq))


def test_a_lone_purge_is_reclaimed_at_once_and_a_stream_a_pass_at_a_time() -> None:
    acked: list[tuple[int, float, dict[Selector, int]]] = []
    store = MemoryTier(1 << 24)

    async def go() -> float:
        index = EpochIndex()
        rec = Reclaimer(
            store,
            index,
            lambda: None,
            on_reclaimed=lambda p, matched: acked.append((p.seq, time.monotonic(), dict(matched))),
            spacing=SPACING,
        )
        for i in range(1, 5):
            store.put(entry(f"/{i}"))
        rec.start()
        start = time.monotonic()
        index.apply(purge(1, "/1"))
        rec.enqueue(purge(1, "/1"))
        while not acked:
            await asyncio.sleep(0.001)
        for seq in (2, 3, 4):  # a stream: within the spacing of the first pass
            await asyncio.sleep(0.02)
            index.apply(purge(seq, f"/{seq}"))
            rec.enqueue(purge(seq, f"/{seq}"))
        await rec.drain()
        await rec.stop()
        return start

    start = asyncio.run(go())
    assert [seq for seq, _, _ in acked] == [1, 2, 3, 4]
    assert all(sum(matched.values()) == 1 for _, _, matched in acked)
    assert len(store) == 0
    first, rest = acked[0][1], [at for _, at, _ in acked[1:]]
    assert first - start < SPACING / 2, "a lone purge waits for nothing"
    assert min(rest) - start >= SPACING * 0.99, "the stream waits for the next pass"
    assert max(rest) - min(rest) < SPACING / 2, "and is reclaimed in that one pass"


def test_a_pass_ends_after_pass_max_and_the_rest_waits_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Purges queued faster than the reclaimer are not all reclaimed in one endless pass: those done
    when ``PASS_MAX`` is up get their disk job and acknowledgements, the rest go in the next pass."""
    monkeypatch.setattr(reclaimer, "PASS_MAX", 0.0)  # one purge a pass
    acked: list[tuple[int, float]] = []
    store = MemoryTier(1 << 24)

    async def go() -> None:
        index = EpochIndex()
        rec = Reclaimer(
            store,
            index,
            lambda: None,
            on_reclaimed=lambda p, matched: acked.append((p.seq, time.monotonic())),
            spacing=SPACING,
        )
        for i in range(1, 4):
            store.put(entry(f"/{i}"))
        for seq in (1, 2, 3):
            index.apply(purge(seq, f"/{seq}"))
            rec.enqueue(purge(seq, f"/{seq}"))
        rec.start()
        await rec.drain()
        await rec.stop()

    asyncio.run(go())
    assert [seq for seq, _ in acked] == [1, 2, 3]
    assert len(store) == 0
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(acked)]
    assert min(gaps) >= SPACING * 0.99, "each later purge waited for a pass of its own"
