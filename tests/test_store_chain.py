"""Memory in front of disk (store/chain.py): when a read from disk is promoted into memory, and what
a memory miss reads from disk."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecache.store.chain import DISK, TierChain
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier


def make(key: str, size: int = 1024) -> Entry:
    return Entry(
        zone="z",
        key=key,
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=b"x" * size,
        tags=(),
        stored_seq=0,
        response_time=1e10,
        initial_age=0.0,
        freshness_lifetime=600.0,
    )


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[TierChain]:
    disk = DiskStore(tmp_path, budget=1 << 28, position=0, map_size=1 << 28)
    tiers = TierChain(
        MemoryTier(1 << 20),
        disk,
        reserve_on=lambda zone: False,
        reserve_eligible=lambda e: False,
        still_valid=lambda e: True,
    )
    try:
        yield tiers
    finally:
        disk.close()


def test_a_read_from_disk_is_promoted_while_memory_has_room(chain: TierChain) -> None:
    chain.disk.put(make("http://h/a"))
    assert chain.disk.flush(10)
    entry = chain.get("http://h/a")
    assert entry is not None and entry.tier == DISK
    entry.tier = b""
    again = chain.get("http://h/a")
    assert again is entry and again.tier == b"", "the next hit is a memory hit"


def test_when_memory_is_full_the_second_read_from_disk_promotes(chain: TierChain) -> None:
    for i in range(2000):
        chain.put(make(f"http://h/{i}"))
    assert chain.disk.flush(10)
    assert chain.memory.bytes_used + make("http://h/x").size > chain.memory.budget
    cold = next(f"http://h/{i}" for i in range(2000) if chain.memory.peek(f"http://h/{i}") is None)
    first = chain.get(cold)
    assert first is not None and first.tier == DISK
    assert chain.memory.peek(cold) is None, "one read from disk does not evict an entry from memory"
    second = chain.get(cold)
    assert second is not None and second.tier == DISK
    second.tier = b""
    assert chain.memory.peek(cold) is second
    assert chain.get(cold) is second


def test_a_memory_miss_reads_vary_and_record_in_one_go(chain: TierChain) -> None:
    chain.disk.put(make("http://h/plain"))
    assert chain.disk.flush(10)
    hits = chain.disk.stats.hits
    assert chain.vary("http://h/plain") is None
    entry = chain.get("http://h/plain")
    assert entry is not None and entry.tier == DISK
    assert chain.disk.stats.hits == hits + 1
    # Asking for the Vary names alone (a fill does) counts no read from disk.
    misses = chain.disk.stats.misses
    assert chain.vary("http://h/absent") is None
    assert chain.disk.stats.misses == misses
    # A delete between the two drops what the lookup read.
    chain.memory.delete("http://h/plain")
    assert chain.vary("http://h/plain") is None
    chain.delete("http://h/plain")
    assert chain.get("http://h/plain") is None


def test_an_eviction_while_the_fill_waits_for_the_writer_is_not_written_twice(chain: TierChain) -> None:
    # Hold the writer with a job, so that the fills' puts stay queued while memory evicts them.
    release = threading.Event()

    def hold(view: object) -> bool:
        release.wait(10)
        return True

    chain.disk.run_job(hold)
    for i in range(400):
        chain.put(make(f"http://h/held/{i}", size=8192))  # 3.2 MB through a 1 MiB memory tier
    assert chain.memory.evictions > 0
    release.set()
    assert chain.disk.flush(10)
    assert chain.disk.stats.writes == 400, "each record written once, not again at its eviction"


@pytest.fixture
def second_fill(tmp_path: Path) -> Iterator[TierChain]:
    disk = DiskStore(tmp_path, budget=1 << 28, position=0, map_size=1 << 28)
    tiers = TierChain(
        MemoryTier(1 << 20),
        disk,
        reserve_on=lambda zone: False,
        reserve_eligible=lambda e: False,
        still_valid=lambda e: True,
        admit_second_fill=True,
    )
    try:
        yield tiers
    finally:
        disk.close()


def test_with_second_fill_admission_only_a_key_filled_again_reaches_the_disk(second_fill: TierChain) -> None:
    second_fill.put(make("http://h/once"))
    second_fill.put(make("http://h/twice"))
    second_fill.put(make("http://h/twice"))
    assert second_fill.disk.flush(10)
    assert second_fill.get("http://h/once") is not None, "memory takes every fill"
    assert [e.key for e in second_fill.disk] == ["http://h/twice"]
    assert second_fill.disk.stats.writes == 1


def test_with_second_fill_admission_memory_evictions_write_nothing_back(second_fill: TierChain) -> None:
    for i in range(3000):  # 3 MiB of fresh one-hit wonders through a 1 MiB memory tier
        second_fill.put(make(f"http://h/{i}"))
    assert second_fill.disk.flush(10)
    assert second_fill.memory.evictions > 1000
    assert len(second_fill.disk) == 0 and second_fill.disk.stats.writes == 0


def test_by_default_every_fill_is_written_through_and_evictions_are_kept(chain: TierChain) -> None:
    for i in range(3000):
        chain.put(make(f"http://h/{i}"))
    assert chain.disk.flush(10)
    assert chain.memory.evictions > 1000
    assert len(chain.disk) == 3000
