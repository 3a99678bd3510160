"""The disk tier's key filter (store/keyfilter.py, decision 0020's addendum ``missfilter``): a memory
miss of a key never stored skips the disk read, and a key any writer of the node stored (the fill
writer child, the writer thread's Vary rows and large objects, another worker process, the disk as
found at a start) is never answered "absent"."""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Route, Stack
from edgecache.config import CacheReserve, DiskStorage, Storage, Zone
from edgecache.store import disk as disk_module
from edgecache.store import keyfilter as keyfilter_module
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry
from edgecache.store.keyfilter import MAX_SLOTS, MIN_SLOTS, RECORD_BYTES, KeyFilter, slots_for
from workers_node import VersionedOrigin, WorkerNode

OBJECT = Route(body=b"k" * 2000, headers={"Cache-Control": "max-age=600"})


def trusted(stack: Stack) -> DiskStore:
    """The node's disk tier, once its key filter is built (answers "absent" at all)."""
    disk = stack.node.disk
    assert disk is not None and stack.node.key_filter is not None
    deadline = time.monotonic() + 10
    while not stack.node.key_filter.ready:
        assert time.monotonic() < deadline, "the key filter was never built"
        time.sleep(0.01)
    return disk


def flush(stack: Stack) -> None:
    assert stack.node.disk is not None
    assert stack.node.disk.flush(20)


def forget_in_memory(stack: Stack, primary: str) -> None:
    """Drop a URL's entries from the memory tier only: its next request is a memory miss."""
    stack.call(lambda: stack.node.store.delete_primary(primary))


@pytest.fixture
def filtered() -> Iterator[Stack]:
    s = Stack()
    s.origin.routes["/obj"] = OBJECT
    try:
        yield s
    finally:
        s.close()


def test_a_never_seen_key_does_not_read_the_disk(filtered: Stack) -> None:
    disk = trusted(filtered)
    before = disk.stats.filtered, disk.stats.misses
    for i in range(20):
        filtered.origin.routes[f"/new/{i}"] = OBJECT
        assert filtered.request(f"/new/{i}")[1]["cf-cache-status"] == "MISS"
    # Every one of these disk misses was the filter's answer: none began a read of LMDB.
    assert (disk.stats.filtered - before[0], disk.stats.misses - before[1]) == (20, 20)


def test_a_fill_the_fill_writer_child_stored_is_found_on_disk(filtered: Stack) -> None:
    disk = trusted(filtered)
    assert filtered.node.fill_writer is not None  # the fills go through the child's ring
    filtered.request("/obj")
    flush(filtered)
    forget_in_memory(filtered, "http://test.example/obj")
    headers = filtered.request("/obj")[1]
    assert headers["cache-status"].endswith("detail=disk")
    assert filtered.origin.hits["/obj"] == 1
    assert disk.stats.filtered == 1  # the first request's memory miss only


def test_a_vary_variant_is_found_on_disk(filtered: Stack) -> None:
    trusted(filtered)
    filtered.origin.routes["/v"] = Route(
        body=b"en", headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"}
    )
    filtered.request("/v", headers={"Accept-Language": "en"})
    flush(filtered)
    forget_in_memory(filtered, "http://test.example/v")
    headers = filtered.request("/v", headers={"Accept-Language": "en"})[1]
    assert headers["cache-status"].endswith("detail=disk")
    assert filtered.origin.hits["/v"] == 1


def test_a_large_object_is_found_on_disk() -> None:
    stack = Stack(storage=Storage(max_object_bytes=64 * 1024))
    try:
        trusted(stack)
        stack.origin.routes["/big"] = Route(body=b"b" * 300_000, headers={"Cache-Control": "max-age=600"})
        assert stack.request("/big")[1]["cf-cache-status"] == "MISS"
        flush(stack)
        # Never in memory: every request of it reads the disk, through the writer thread's record.
        status, headers, body = stack.request("/big")
        assert (status, len(body), headers["cf-cache-status"]) == (200, 300_000, "HIT")
        assert stack.origin.hits["/big"] == 1
    finally:
        stack.close()


def test_what_the_writer_thread_stores_is_found_on_disk() -> None:
    stack = Stack(storage=Storage(disk=DiskStorage(fill_writer="thread")))
    try:
        trusted(stack)
        stack.origin.routes["/obj"] = OBJECT
        stack.request("/obj")
        flush(stack)
        forget_in_memory(stack, "http://test.example/obj")
        assert stack.request("/obj")[1]["cache-status"].endswith("detail=disk")
        assert stack.origin.hits["/obj"] == 1
    finally:
        stack.close()


def test_the_disk_found_at_a_restart_is_in_the_new_filter(filtered: Stack) -> None:
    for i in range(5):
        filtered.origin.routes[f"/kept/{i}"] = OBJECT
        filtered.request(f"/kept/{i}")
    # A varying URL: its base key is on disk only as the Vary row, its variant as a record.
    filtered.origin.routes["/v"] = Route(
        body=b"en", headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"}
    )
    filtered.request("/v", headers={"Accept-Language": "en"})
    flush(filtered)
    filtered.restart()
    disk = trusted(filtered)
    for i in range(5):
        assert filtered.request(f"/kept/{i}")[1]["cache-status"].endswith("detail=disk")
    headers = filtered.request("/v", headers={"Accept-Language": "en"})[1]
    assert headers["cache-status"].endswith("detail=disk")
    assert filtered.origin.hits["/v"] == 1
    assert disk.stats.filtered == 0
    assert filtered.request("/obj")[1]["cf-cache-status"] == "MISS"
    assert disk.stats.filtered == 1


def wait_trusted(keys: KeyFilter, within: float = 10) -> None:
    """Until the start's build has made the filter trusted."""
    deadline = time.monotonic() + within
    while not keys.ready:
        assert time.monotonic() < deadline, "the key filter was never built"
        time.sleep(0.01)


def entry(key: str) -> Entry:
    return Entry(
        key=key,
        zone="z",
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=b"x" * 100,
        stored_seq=0,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=600.0,
        tags=(),
    )


def stored(path: Path, count: int) -> list[str]:
    """Store ``count`` records in a disk store at ``path`` and close it: the disk a node finds."""
    first = DiskStore(path, budget=1 << 30, position=0, zones=["z"])
    keys = [f"http://h.example/old/{i}" for i in range(count)]
    for i in range(0, count, 2000):
        for key in keys[i : i + 2000]:
            first.put(entry(key))
        assert first.flush(30)
    first.close()
    return keys


def test_keys_written_while_the_filter_is_built_are_never_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many read transactions, each going on from where the last one stopped.
    monkeypatch.setattr(disk_module, "FILTER_STEP", 777)
    old = stored(tmp_path, 20_000)
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = KeyFilter.create(50_000)
    try:
        new = [f"http://h.example/new/{i}" for i in range(2000)]
        writing = threading.Thread(target=lambda: [store.put(entry(key)) for key in new])
        store.use_filter(keys, build=True)
        writing.start()
        writing.join()
        assert store.flush(30)
        wait_trusted(keys, 30)
        assert all(store.get(key) is not None for key in old + new)
        assert store.stats.filtered == 0
        assert store.get("http://h.example/never") is None
        assert store.stats.filtered == 1
    finally:
        store.close()
        keys.close()


def test_an_untrusted_filter_rules_nothing_out() -> None:
    keys = KeyFilter.create(1000)
    try:
        assert keys.may_hold(b"anything")
        keys.set_ready()
        assert not keys.may_hold(b"anything")
        # A second mapping of the filter (as a worker's, through its own descriptor) sees both the
        # slots and the flag that the first one set.
        other = KeyFilter(os.dup(keys.fd))
        keys.add(b"anything")
        assert other.may_hold(b"anything") and other.ready
        other.close()
    finally:
        keys.close()


def test_a_close_during_the_build_leaves_the_filter_untrusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_module, "FILTER_STEP", 1)  # a transaction per row: a long build
    stored(tmp_path, 20_000)
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = KeyFilter.create(1000)
    try:
        store.use_filter(keys, build=True)
        store.close()
        # A build stopped part-way would answer "absent" for the keys it never reached.
        assert not keys.ready and keys.may_hold(b"anything")
    finally:
        keys.close()


class FailingFilter(KeyFilter):
    """A filter that fails to take keys, as a build's read of the disk may."""

    def add_all(self, kbs: Iterable[bytes | memoryview]) -> int:
        raise OSError("injected: the build cannot add a key")


def test_a_failing_build_is_logged_and_leaves_the_filter_untrusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored(tmp_path, 10)
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = FailingFilter.create(1000)
    try:
        with caplog.at_level(logging.ERROR, logger="edgecache.store.disk"):
            store.use_filter(keys, build=True)
            deadline = time.monotonic() + 10
            while not any(getattr(r, "event", None) == "disk_key_filter_failed" for r in caplog.records):
                assert time.monotonic() < deadline, "the failed build was not logged"
                time.sleep(0.01)
        assert not keys.ready
        assert store.get("http://h.example/never") is None
        assert store.stats.filtered == 0  # read from disk: the filter answered "maybe"
        assert store.get("http://h.example/old/3") is not None
    finally:
        store.close()
        keys.close()


def reserve_zone(i: int, budget: int = 1 << 30) -> Zone:
    """A zone whose reserve has ``budget`` bytes (the default's 1 GiB), off until turned on."""
    return Zone(
        id=f"{i:012x}" + "e" * 20,
        name=f"z{i}.example",
        hostnames=(f"z{i}.example",),
        origin="http://127.0.0.1:9",
        cache_reserve=CacheReserve(budget_bytes=budget),
    )


def test_the_filter_is_sized_for_the_reserves_on_at_the_start() -> None:
    zones = [reserve_zone(i) for i in range(100)]
    huge = reserve_zone(100, budget=1 << 40)
    stack = Stack(extra_zones=(*zones, huge))
    try:
        disk_budget = stack.config.storage.disk.budget_bytes
        assert stack.node.key_filter is not None
        assert stack.node.key_filter.slots == slots_for(disk_budget // RECORD_BYTES) == 8 * MIN_SLOTS
        stack.run(stack.node.cache_reserve.set(zones[0].id, "on"))
        stack.restart()
        assert stack.node.key_filter is not None
        assert stack.node.key_filter.slots == slots_for((disk_budget + (1 << 30)) // RECORD_BYTES)
        # A reserve of 1 TiB: the filter stays at its cap (its false "maybe" rate rises instead).
        stack.run(stack.node.cache_reserve.set(huge.id, "on"))
        stack.restart()
        assert stack.node.key_filter is not None
        assert stack.node.key_filter.slots == MAX_SLOTS == 64 * MIN_SLOTS
    finally:
        stack.close()


def test_a_store_reads_the_disk_until_the_filter_is_trusted(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = KeyFilter.create(1000)
    try:
        store.use_filter(keys, build=False)  # another process builds it: not yet
        assert store.get("http://h.example/never") is None
        assert store.stats.filtered == 0
        keys.set_ready()
        assert store.get("http://h.example/never") is None
        assert store.stats.filtered == 1
    finally:
        store.close()
        keys.close()


def test_without_a_disk_tier_there_is_no_filter() -> None:
    stack = Stack(storage=Storage(disk=DiskStorage(enabled=False)))
    try:
        assert stack.node.key_filter is None
        stack.origin.routes["/obj"] = OBJECT
        assert [stack.request("/obj")[1]["cf-cache-status"] for _ in range(2)] == ["MISS", "HIT"]
    finally:
        stack.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=300), st.lists(st.binary(max_size=600), max_size=50))
def test_a_key_once_added_is_never_absent(added: list[bytes], others: list[bytes]) -> None:
    keys = KeyFilter.create(10)
    batch = KeyFilter.create(10)
    try:
        keys.set_ready()
        batch.set_ready()
        for kb in added:
            keys.add(kb)
        # A writer's batch (``add_all``) sets the very slots its keys one by one would.
        batch.add_all(memoryview(kb) for kb in added)
        assert bytes(batch._halves[0]) == bytes(keys._halves[0])
        for kb in others:
            keys.may_hold(kb)
        assert all(keys.may_hold(kb) for kb in added)
        assert all(batch.may_hold(kb) for kb in added)
    finally:
        keys.close()
        batch.close()


@given(st.integers(min_value=0, max_value=1 << 40))
def test_the_size_is_a_power_of_two_with_room_for_the_keys_up_to_the_cap(expected: int) -> None:
    slots = slots_for(expected)
    assert slots & (slots - 1) == 0 and slots >= min(MAX_SLOTS, 16 * expected)
    assert MIN_SLOTS <= slots <= MAX_SLOTS


def committed(node: WorkerNode, at_least: float = 0) -> float:
    """The records the node's disk writers have written, once they are ``at_least`` and none waits
    in a queue or a ring."""
    deadline = time.monotonic() + 30
    while True:
        samples = node.metrics()
        written = samples["edgecache_disk_writes_total"]
        if samples["edgecache_disk_write_queue"] == 0 and written >= at_least:
            return written
        assert time.monotonic() < deadline, "the disk writers never caught up"
        time.sleep(0.02)


def test_a_key_stored_by_another_worker_process_is_found(tmp_path: Path) -> None:
    origin = VersionedOrigin()
    node = WorkerNode(tmp_path, origin)
    held: dict[int, http.client.HTTPConnection] = {}
    try:
        # Never seen, on both workers: their memory misses are the filter's answers once it is
        # built (the control plane builds it; the workers only map it).
        deadline = time.monotonic() + 20
        i = 0
        while len(held) < 2 or node.metrics().get("edgecache_disk_filtered_total", 0.0) < 4:
            assert time.monotonic() < deadline, "no worker's memory miss was filtered"
            conn = node.connection()
            assert node.get(conn, f"/never/{i}")[1] == "MISS"
            i += 1
            pid = node.owner(conn)
            if pid in held:
                conn.close()
            else:
                held[pid] = conn
        first, second = held.values()
        written = committed(node)
        assert node.get(first, "/shared") == (200, "MISS", "/shared v1")
        # Committed by the first worker's fill writer child before the second worker is asked.
        assert committed(node, written + 1) == written + 1
        # A filter without the child's key would answer "absent": a miss, and a second fetch.
        assert node.get(second, "/shared") == (200, "HIT", "/shared v1")
        assert origin.fetches == i + 1
    finally:
        for conn in held.values():
            conn.close()
        assert node.stop() == 0
        origin.close()


# -- the rebuild: a churning disk's filter forgets the keys no longer on disk ---------------------


def rebuilds(caplog: pytest.LogCaptureFixture) -> int:
    return sum(getattr(r, "event", None) == "disk_key_filter_rebuilt" for r in caplog.records)


@pytest.fixture
def small_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters of 4,096 slots, looked at every 50 ms: a few thousand keys fill one."""
    monkeypatch.setattr(keyfilter_module, "MIN_SLOTS", 1 << 12)
    monkeypatch.setattr(disk_module, "FILTER_CHECK_EVERY", 0.05)


class GatedFilter(KeyFilter):
    """A filter whose keeper sees it empty until ``opened`` is set: no rebuild before then."""

    opened = threading.Event()

    def fill(self) -> float:
        return super().fill() if self.opened.is_set() else 0.0


def built(path: Path, kind: type[KeyFilter] = KeyFilter) -> tuple[DiskStore, KeyFilter]:
    store = DiskStore(path, budget=1 << 30, position=0, zones=["z"])
    keys = kind.create(0)
    store.use_filter(keys, build=True)
    wait_trusted(keys)
    return store, keys


def wait_for(caplog: pytest.LogCaptureFixture, event: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while sum(getattr(r, "event", None) == event for r in caplog.records) < count:
        assert time.monotonic() < deadline, f"no {event}"
        time.sleep(0.02)


@pytest.mark.usefixtures("small_filter")
def test_a_churning_disk_has_its_filter_rebuilt_without_the_keys_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    GatedFilter.opened.clear()
    store, keys = built(tmp_path, GatedFilter)
    try:
        with caplog.at_level(logging.INFO, logger="edgecache.store.disk"):
            gone = [f"http://h.example/churn/{i}" for i in range(3000)]
            kept = [f"http://h.example/kept/{i}" for i in range(50)]
            for key in gone:
                store.put(entry(key))
            assert store.flush(30)
            for key in gone:
                store.delete(key)
            for key in kept:
                store.put(entry(key))
            assert store.flush(30)
            # 3,000 keys left ~77% of the slots set: a never-stored key read the disk 59% of the time.
            GatedFilter.opened.set()
            wait_for(caplog, "disk_key_filter_rebuilt")
        assert [r.keys for r in caplog.records if getattr(r, "event", None) == "disk_key_filter_rebuilt"] == [
            50
        ]
        assert all(store.get(key) is not None for key in kept)
        assert store.stats.filtered == 0
        # Rebuilt from the 50 keys left, the filter rules nearly every deleted one out again.
        assert all(store.get(key) is None for key in gone)
        assert store.stats.filtered >= 2950
        assert keys.fill() < 0.05
    finally:
        store.close()
        keys.close()


@pytest.mark.usefixtures("small_filter")
def test_a_filter_full_of_keys_still_on_disk_is_not_rebuilt_again_and_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = stored(tmp_path, 3000)
    with caplog.at_level(logging.INFO, logger="edgecache.store.disk"):
        store, keys = built(tmp_path)
        try:
            # Every key is on disk: a rebuild would set the same slots. None in ten looks.
            time.sleep(0.5)
            assert keys.fill() > 0.5
            assert rebuilds(caplog) == 0
            assert all(store.get(key) is not None for key in old[:100])
        finally:
            store.close()
            keys.close()


class RebuildingFilter(KeyFilter):
    """A filter rebuilt (by ``rebuild``) once, in the writer thread, right after a batch's keys
    were set and before its write transaction begins."""

    rebuild: Callable[[], None] | None = None

    def add_all(self, kbs: Iterable[bytes | memoryview]) -> int:
        gen = super().add_all(kbs)
        rebuild, type(self).rebuild = type(self).rebuild, None
        if rebuild is not None and threading.current_thread().name != "edgecache-disk-filter":
            rebuild()
        return gen


def test_a_key_announced_before_a_rebuild_and_committed_after_it_is_never_absent(
    tmp_path: Path,
) -> None:
    stored(tmp_path, 100)
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = RebuildingFilter.create(1000)
    try:
        store.use_filter(keys, build=True)
        wait_trusted(keys)
        # The rebuild reads the disk before the batch commits and swaps the halves: the batch's
        # key is set in the old half only, unless the writer announces it again in its transaction.
        RebuildingFilter.rebuild = lambda: store._rebuild_filter(keys, 1.0)
        store.put(entry("http://h.example/late"))
        assert store.flush(30)
        assert RebuildingFilter.rebuild is None and keys.generation == 2
        assert store.get("http://h.example/late") is not None
        assert store.stats.filtered == 0
    finally:
        store.close()
        keys.close()


def test_a_key_committed_while_a_rebuild_begins_is_never_absent(tmp_path: Path) -> None:
    stored(tmp_path, 100)
    store = DiskStore(tmp_path, budget=1 << 30, position=0, zones=["z"])
    keys = KeyFilter.create(1000)
    rebuilding: list[threading.Thread] = []
    write_counts = store._write_counts

    def rebuild_inside_the_commit(txn: Any) -> None:
        # The batch holds the write lock, its keys set in the active half only: a rebuild that
        # read the disk now would not see its key, and would swap the halves before it commits.
        write_counts(txn)
        if not rebuilding:
            rebuilding.append(threading.Thread(target=store._rebuild_filter, args=(keys, 1.0)))
            rebuilding[0].start()
            deadline = time.monotonic() + 10
            while not keys.generation & 1:
                assert time.monotonic() < deadline, "the rebuild never began"
                time.sleep(0.005)
            time.sleep(0.3)  # time enough for a rebuild that did not wait to read the disk and swap

    try:
        store.use_filter(keys, build=True)
        wait_trusted(keys)
        store._write_counts = rebuild_inside_the_commit  # type: ignore[method-assign]
        store.put(entry("http://h.example/late"))
        assert store.flush(30)
        rebuilding[0].join(10)
        assert not rebuilding[0].is_alive() and keys.generation == 2
        assert store.get("http://h.example/late") is not None
        assert store.stats.filtered == 0
    finally:
        store.close()
        keys.close()


def test_a_rebuild_swaps_the_halves_and_an_abandoned_one_keeps_the_active_half() -> None:
    keys = KeyFilter.create(1000)
    try:
        keys.set_ready()
        keys.add(b"before")
        keys.begin_rebuild()
        keys.add(b"during")  # set in both halves
        keys.abandon_rebuild()
        assert keys.generation == 4
        assert keys.may_hold(b"before") and keys.may_hold(b"during")
        keys.begin_rebuild()
        with pytest.raises(RuntimeError):
            keys.begin_rebuild()
        keys.add(b"again")
        keys.end_rebuild()
        # The new half holds what was added during its rebuild only (the store adds the disk's).
        assert keys.may_hold(b"again") and not keys.may_hold(b"before")
        with pytest.raises(RuntimeError):
            keys.end_rebuild()
        other = KeyFilter(os.dup(keys.fd))
        assert other.generation == keys.generation and other.may_hold(b"again")
        assert not other.may_hold(b"during")
        other.close()
    finally:
        keys.close()


class _Between:
    """A half of a reader's mapping that runs ``meanwhile`` once, before its first slot is read."""

    def __init__(self, half: memoryview, meanwhile: Callable[[], None]) -> None:
        self.half, self.meanwhile = half, meanwhile

    def __getitem__(self, at: int) -> int:
        meanwhile, self.meanwhile = self.meanwhile, lambda: None
        meanwhile()
        return int(self.half[at])


def test_a_reader_whose_half_is_swapped_while_it_reads_answers_maybe() -> None:
    keys = KeyFilter.create(1000)
    reader = KeyFilter(os.dup(keys.fd))
    try:
        keys.set_ready()

        def swap_then_store() -> None:
            # Another process rebuilds and swaps, then a writer stores the key: in the new half only.
            keys.begin_rebuild()
            keys.end_rebuild()
            keys.add(b"stored meanwhile")

        old = reader._halves
        reader._halves = (_Between(old[0], swap_then_store), old[1])  # type: ignore[assignment]
        # Read from the half named when the read began: it lacks the key, but the generation moved.
        assert reader.may_hold(b"stored meanwhile")
        reader._halves = old
        assert reader.may_hold(b"stored meanwhile")
        assert not reader.may_hold(b"never stored")
    finally:
        reader.close()
        keys.close()


class FailingOnceFilter(KeyFilter):
    """A filter whose first rebuild fails while it reads the disk; the next one begins once
    ``retry`` is set (the test looks at the abandoned rebuild's filter before it)."""

    failed = False
    retry = threading.Event()

    def begin_rebuild(self) -> None:
        if FailingOnceFilter.failed:
            assert FailingOnceFilter.retry.wait(30), "the test never let the rebuild be tried again"
        super().begin_rebuild()

    def add_all(self, kbs: Iterable[bytes | memoryview]) -> int:
        # The rebuild's own reads only: while it runs, the disk writer's announcements add to the
        # filter too, and one of those failing would be another test (it failed so under load).
        rebuilding = threading.current_thread().name == "edgecache-disk-filter"
        if rebuilding and self.generation & 1 and not FailingOnceFilter.failed:
            FailingOnceFilter.failed = True
            raise OSError("injected: the rebuild cannot add a key")
        return super().add_all(kbs)


@pytest.mark.usefixtures("small_filter")
def test_a_failed_rebuild_leaves_the_filter_right_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_module, "FILTER_RETRY_AFTER", 0.2)
    FailingOnceFilter.failed = False
    FailingOnceFilter.retry.clear()
    stored(tmp_path, 100)
    with caplog.at_level(logging.INFO, logger="edgecache.store.disk"):
        store, keys = built(tmp_path, FailingOnceFilter)
        try:
            gone = [f"http://h.example/churn/{i}" for i in range(3000)]
            for key in gone:
                store.put(entry(key))
            assert store.flush(30)
            for key in gone:
                store.delete(key)
            assert store.flush(30)
            wait_for(caplog, "disk_key_filter_failed")
            # Abandoned: the same half as before it began, every key on disk still "maybe".
            assert keys.generation == 4
            assert all(store.get(f"http://h.example/old/{i}") is not None for i in range(100))
            FailingOnceFilter.retry.set()
            wait_for(caplog, "disk_key_filter_rebuilt")
            assert keys.generation == 6
            assert all(store.get(f"http://h.example/old/{i}") is not None for i in range(100))
            assert store.stats.filtered == 0
        finally:
            FailingOnceFilter.retry.set()
            store.close()
            keys.close()
