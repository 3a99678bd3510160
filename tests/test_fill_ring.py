"""The fill ring (store/fillring.py): records come out in order and whole across wrap-arounds, a
full ring refuses a record rather than overwrite one not yet committed, a record whose bytes are
not all there is not read, one whose CRC never matches is given up (with those after it, counted),
and a dead fill writer's records are skipped and counted; with either
appender (the C one, ``store/_fillring.c``, and ``PyAppender``), which write the same bytes: an
entry's record is ``encode_entry``'s, and the fill writer reads the entry back. The fill writer
stores a record as the writer thread stores its entry (every row, the counters, the key filter), a
record it cannot read or a large object's is counted, not written, and a batch that fails counts
its fills dropped."""

from __future__ import annotations

import asyncio
import contextlib
import math
import mmap
import os
import platform
import random
import resource
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgecache.edge.fillwriter import run
from edgecache.store import disk as disk_module
from edgecache.store import disk_layout
from edgecache.store._fillring import HARDWARE, Appender, checked, crc32c, crc32c_portable
from edgecache.store.chain import TierChain
from edgecache.store.chunked import ChunkedEntry
from edgecache.store.disk import DiskStore, Fill
from edgecache.store.disk_layout import (
    CACHE,
    ENTRY,
    EXPIRY,
    REC,
    RESERVE,
    VARY,
    decode_entry,
    encode_entry,
    expiry_row,
    fill_fields,
    host_of,
    key_bytes,
    with_reserve_expires,
)
from edgecache.store.entry import VARIANT_SEP, Entry
from edgecache.store.fillring import (
    _ASLEEP,
    _Q,
    COUNTERS,
    HEADER_SIZE,
    MAGIC,
    RESERVE_FLAG,
    VARY_FLAG,
    FillRing,
    PyAppender,
    decode_vary,
)
from edgecache.store.keyfilter import KeyFilter
from edgecache.store.memory import MemoryTier

CAPACITY = 1 << 16
APPENDERS = [Appender, PyAppender]


@pytest.fixture(params=APPENDERS, ids=["c", "python"])
def ring(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FillRing]:
    r = FillRing.create(tmp_path / "r.ring", CAPACITY, appender=request.param)
    yield r
    r.close()


def test_a_node_appends_in_c(tmp_path: Path) -> None:
    ring = FillRing.create(tmp_path / "r.ring", CAPACITY)
    assert isinstance(ring.appender, Appender)
    ring.close(unlink=True)


def drain(reader: FillRing, pos: int) -> tuple[list[tuple[bytes, int]], int]:
    batch = reader.read(pos, 1 << 20, 1 << 30)
    reader.commit(batch, dict.fromkeys(COUNTERS, 0))
    return batch.records, batch.end


@pytest.mark.parametrize("appender", APPENDERS, ids=["c", "python"])
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9000), st.booleans(), st.booleans()), max_size=120))
def test_records_come_out_in_order_and_whole(
    tmp_path_factory: pytest.TempPathFactory,
    appender: type[Appender | PyAppender],
    steps: list[tuple[int, bool, bool]],
) -> None:
    path = tmp_path_factory.mktemp("ring") / "r.ring"
    ring = FillRing.create(path, CAPACITY, appender=appender)
    reader = FillRing.open(path, ring.wake_fd, ring.done_fd)
    sent: list[tuple[bytes, int]] = []
    got: list[tuple[bytes, int]] = []
    refused = 0
    pos = 0
    for i, (size, reserve, read_now) in enumerate(steps):
        payload = bytes([i % 251]) * size
        flags = RESERVE_FLAG if reserve else 0
        if ring.append(payload, flags):
            sent.append((payload, flags))
        else:
            refused += 1
            # At most a record's size is lost to a wrap: a refusal leaves less than twice that free.
            assert ring.head - ring.committed + 2 * (size + 28) > CAPACITY, "refused with room to spare"
        if read_now:
            records, pos = drain(reader, pos)
            got.extend(records)
    records, pos = drain(reader, pos)
    got.extend(records)
    assert got == sent
    assert pos == ring.head and ring.pending() == 0
    reader._mm.close()
    ring.close(unlink=True)


def test_a_full_ring_refuses_and_a_committed_one_takes_again(ring: FillRing) -> None:
    record = b"x" * 4000
    taken = 0
    while ring.append(record, 0):
        taken += 1
    assert taken == CAPACITY // 4016
    assert ring.pending() == taken
    reader = FillRing.open(ring.path, ring.wake_fd, ring.done_fd)
    records, _ = drain(reader, 0)
    assert len(records) == taken and ring.pending() == 0
    assert ring.append(record, RESERVE_FLAG)


def test_a_record_whose_bytes_are_not_there_is_not_read(ring: FillRing) -> None:
    assert ring.append(b"first", 0) and ring.append(b"second", 0)
    # The second record's payload as a reader that saw ``head`` before the bytes would find it.
    at = HEADER_SIZE + 32 + 12
    ring._mm[at : at + 6] = b"\x00" * 6
    reader = FillRing.open(ring.path, ring.wake_fd, ring.done_fd)
    batch = reader.read(0, 100, 1 << 20)
    assert batch.records == [(b"first", 0)] and batch.end == 32


def test_skip_gives_up_what_a_dead_writer_left(ring: FillRing) -> None:
    for i in range(5):
        assert ring.append(b"%d" % i, 0)
    reader = FillRing.open(ring.path, ring.wake_fd, ring.done_fd)
    batch = reader.read(0, 2, 1 << 20)
    reader.commit(batch, reader.counters())
    assert ring.pending() == 3
    assert ring.skip() == 3
    assert ring.pending() == 0 and ring.committed == ring.head


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
entries = st.builds(
    Entry,
    zone=text,
    # Keys may hold lone surrogates (a request target's undecodable bytes): stored as they are.
    key=st.text(max_size=600),
    status=st.integers(100, 599),
    head=st.binary(max_size=300),
    body=st.binary(max_size=5000),
    # Tags are never empty (``httpcache/tags.py`` drops empty ones) and hold no NUL (a header
    # value cannot): the record joins them with NUL.
    tags=st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1), max_size=5).map(
        tuple
    ),
    stored_seq=st.integers(-(2**63), 2**63 - 1),
    response_time=st.floats(allow_nan=False),
    initial_age=st.floats(allow_nan=False),
    freshness_lifetime=st.floats(allow_nan=False),
    stale_while_revalidate=st.floats(allow_nan=False),
    stale_if_error=st.floats(allow_nan=False),
    must_revalidate=st.booleans(),
    no_cache=st.booleans(),
    auth_ok=st.booleans(),
    length_known=st.booleans(),
    stale_since=st.none() | st.floats(allow_nan=False),
)


vary_names = st.lists(st.from_regex(r"[a-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True), max_size=4).map(tuple)
"""Field names as a response's Vary lists them (tokens, lower-cased by the proxy)."""


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(entries, st.booleans(), st.none() | vary_names), min_size=1, max_size=30))
def test_both_appenders_write_an_entry_as_its_record(
    tmp_path_factory: pytest.TempPathFactory, fills: list[tuple[Entry, bool, tuple[str, ...] | None]]
) -> None:
    # Each fill, then (a Vary fill) its base key's names as a VARY_FLAG record.
    at = tmp_path_factory.mktemp("rings")
    c = FillRing.create(at / "c.ring", CAPACITY, appender=Appender)
    py = FillRing.create(at / "py.ring", CAPACITY, appender=PyAppender)
    kept: list[tuple[Entry, bool] | tuple[str, tuple[str, ...]]] = []
    for entry, reserve, names in fills:
        added = c.append_entry(entry, reserve)
        assert added == py.append_entry(entry, reserve)
        # Too large for the ring exactly when its record is, and then nothing is written.
        assert (added == -1) == (len(encode_entry(entry, 0.0)) > c.max_record)
        if added > 0:
            kept.append((entry, reserve))
        if names is not None and added > 0:
            varied = c.append_vary(entry.key, names)
            assert varied == py.append_vary(entry.key, names)
            if varied:
                kept.append((entry.key, names))
    assert bytes(c._mm) == bytes(py._mm)
    reader = FillRing.open(c.path, c.wake_fd, c.done_fd)
    records, _ = drain(reader, 0)
    assert len(records) == len(kept)
    for (payload, flags), sent in zip(records, kept, strict=True):
        if isinstance(sent[0], str):
            assert flags == VARY_FLAG and decode_vary(payload) == sent
            continue
        entry, reserve = sent
        assert isinstance(entry, Entry) and payload == encode_entry(entry, 0.0)
        back = decode_entry(payload)
        assert flags == (RESERVE_FLAG if reserve else 0) and back.reserve_expires == 0.0
        assert (back.entry.key, back.entry.body, back.entry.tags) == (entry.key, entry.body, entry.tags)
        if entry.stale_since is None:
            assert back.entry.stale_since is None or math.isnan(back.entry.stale_since)
    reader._mm.close()
    c.close(unlink=True)
    py.close(unlink=True)


class _Fields:
    """An entry's fields as plain instance attributes (no slots): what the C appender reads by name."""

    def __init__(self, entry: Entry) -> None:
        for name in entry.__slots__:
            setattr(self, name, getattr(entry, name))


def _c_records(path: Path, entries: list[Any]) -> list[bytes]:
    """The records the C appender writes for ``entries``, in a ring of its own."""
    ring = FillRing.create(path, CAPACITY, appender=Appender)
    try:
        for e in entries:
            assert ring.append_entry(e, False) > 0
        return [payload for payload, _ in ring.read(0, 100, 1 << 20).records]
    finally:
        ring.close(unlink=True)


def test_the_c_appender_reads_what_attribute_access_gives_whatever_the_type(tmp_path: Path) -> None:
    # It reads an Entry's slots by their offset; an object without slots, a subclass whose field is
    # a property, and a type changed after an append are read as attribute access reads them.
    class Renamed(Entry):
        __slots__ = ()

    class Propertied(Entry):
        __slots__ = ()
        # Over Entry's slot, which stays unset: ``__init__``'s store goes to the setter.
        zone = property(lambda self: "propertied", lambda self, value: None)  # type: ignore[assignment]

    plain = _fill("plain")
    renamed = Renamed("z", "https://a.test/renamed", 200, b"H: 1\r\n", b"body", ("t",), 1, 0.0, 0.0, 60.0)
    propertied = Propertied("z", "https://a.test/prop", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0)
    assert _c_records(tmp_path / "slots.ring", [plain, _Fields(plain), renamed, propertied]) == [
        encode_entry(plain, 0.0),
        encode_entry(plain, 0.0),
        encode_entry(renamed, 0.0),
        encode_entry(propertied, 0.0),
    ]
    assert decode_entry(encode_entry(propertied, 0.0)).entry.zone == "propertied"
    try:
        Renamed.zone = property(lambda self: "other")  # type: ignore[assignment]
        (after,) = _c_records(tmp_path / "slots.ring", [renamed])
    finally:
        del Renamed.zone
    assert decode_entry(after).entry.zone == "other"
    assert _c_records(tmp_path / "slots.ring", [renamed]) == [encode_entry(renamed, 0.0)]


class _Decoy:
    """Entry's ``zone`` member descriptor on a type that is not Entry's: attribute access refuses
    it (TypeError); where Entry keeps its slots, this type keeps strings of its own."""

    __slots__ = (*(f"pad{i:02}" for i in range(len(Entry.__slots__))), "__dict__")
    zone = Entry.__dict__["zone"]

    def __init__(self, entry: Entry) -> None:
        for i in range(len(Entry.__slots__)):
            setattr(self, f"pad{i:02}", "decoy")
        for name in entry.__slots__:
            if name != "zone":
                self.__dict__[name] = getattr(entry, name)


def test_the_c_appender_fails_as_attribute_access_fails(ring: FillRing) -> None:
    # A member descriptor of another type is not read at its offset, nor is an unset slot: the
    # append raises what getattr raises and adds nothing.
    decoy, unset = _Decoy(_fill("decoy")), object.__new__(Entry)
    for obj, error in ((decoy, TypeError), (unset, AttributeError)):
        with pytest.raises(error):
            _ = obj.zone
        with pytest.raises(error):
            ring.append_entry(obj, False)
        assert ring.head == 0 and ring.pending() == 0
    assert ring.append_entry(_fill("after"), False) == 1


def test_an_entry_too_large_for_the_ring_is_left_to_the_caller(ring: FillRing) -> None:
    entry = Entry("z", "https://a.test/big", 200, b"", b"x" * ring.max_record, (), 1, 0.0, 0.0, 60.0)
    assert ring.append_entry(entry, False) == -1
    assert ring.head == 0 and ring.pending() == 0


def test_an_append_reports_a_sleeping_fill_writer_for_the_caller_to_wake(ring: FillRing) -> None:
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    entry = Entry("z", "https://a.test/x", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0)
    assert ring.append(b"awake", 0) == 1 and ring.append_entry(entry, False) == 1
    _Q.pack_into(reader._mm, _ASLEEP, 1)  # what ``wait`` sets before it sleeps
    assert ring.append(b"asleep", 0) == 2 and ring.append_entry(entry, False) == 2
    assert ring.append_vary("https://a.test/x", ("accept",)) == 2
    with pytest.raises(BlockingIOError):
        os.eventfd_read(ring.wake_fd)  # the appends wrote nothing to it
    ring.wake_if_asleep()
    assert os.eventfd_read(ring.wake_fd) == 1
    _Q.pack_into(reader._mm, _ASLEEP, 0)
    ring.wake_if_asleep()
    with pytest.raises(BlockingIOError):
        os.eventfd_read(ring.wake_fd)
    reader.close()


def _fill(name: str) -> Entry:
    return Entry("z", f"https://a.test/{name}", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0)


def _wakes(ring: FillRing) -> int:
    """The wakes written to the ring's eventfd since the last look (the fill writer's side)."""
    try:
        return os.eventfd_read(ring.wake_fd)
    except BlockingIOError:
        return 0


def test_the_loop_wakes_the_fill_writer_once_at_the_end_of_its_turn(ring: FillRing, tmp_path: Path) -> None:
    # A lone miss's answer is written after its put, in the same turn of the loop: the woken fill
    # writer must not take the CPU before it (decision 0020's addendum on the wake).
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    store.attach_fills(ring)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    _Q.pack_into(reader._mm, _ASLEEP, 1)
    seen: list[int] = []

    def turn() -> None:
        for n in "ab":
            assert store.put(_fill(n))
        seen.append(_wakes(ring))  # none yet: the answers of the turn go out first

    async def main() -> None:
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        asyncio.get_running_loop().call_soon(turn)
        await asyncio.sleep(0.01)
        seen.append(_wakes(ring))  # one for the turn's two puts
        # A put on another thread wakes at once.
        assert await asyncio.to_thread(store.put, _fill("c"))
        seen.append(_wakes(ring))

    try:
        asyncio.run(main())
        assert seen == [0, 1, 1]
        # On the loop's thread once the loop has closed (its ``call_soon`` refuses), at once.
        assert store.put(_fill("d"))
        assert _wakes(ring) == 1
    finally:
        store.attach_fills(None)
        store.close()
        reader.close()


def test_a_wake_the_stopped_loop_never_ran_does_not_silence_other_threads(
    ring: FillRing, tmp_path: Path
) -> None:
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    store.attach_fills(ring)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    _Q.pack_into(reader._mm, _ASLEEP, 1)
    never_run: list[Callable[[], None]] = []
    try:
        # A loop that stops with its end-of-turn wake scheduled: it never runs.
        store.read_in_turns(never_run.append)
        assert store.put(_fill("a"))
        assert len(never_run) == 1 and _wakes(ring) == 0
        other = threading.Thread(target=store.put, args=(_fill("b"),))
        other.start()
        other.join(10)
        assert _wakes(ring) == 1, "another thread's put left the sleeping fill writer asleep"
    finally:
        store.attach_fills(None)
        store.close()
        reader.close()


def test_a_record_that_never_matches_its_crc_is_given_up(ring: FillRing, tmp_path: Path) -> None:
    entries = [Entry("z", f"https://a.test/{n}", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0) for n in "abc"]
    assert ring.append_entry(entries[0], False) == 1
    damaged = ring.head
    assert ring.append_entry(entries[1], False) == 1 and ring.append_entry(entries[2], False) == 1
    # A byte of the second record's payload damaged for good: its CRC never matches.
    at = HEADER_SIZE + damaged + 12 + 20
    ring._mm[at] ^= 0xFF
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0, writer=False)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    stop = [False]
    child = threading.Thread(target=run, args=(reader, store, stop, os.getppid(), 0.2))
    child.start()
    try:
        deadline = time.monotonic() + 10
        while ring.committed < ring.head and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ring.committed == ring.head, "the fill writer stays stuck on the damaged record"
        assert ring.pending() == 0 and ring.counters()["dropped"] == 2
        assert [e.key for e in store] == [entries[0].key]
        # It goes on with what comes after.
        assert ring.append_entry(entries[2], False) > 0
        ring.wake_if_asleep()
        deadline = time.monotonic() + 10
        while ring.committed < ring.head and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(e.key for e in store) == [entries[0].key, entries[2].key]
    finally:
        stop[0] = True
        child.join(10)
        store.close()
        reader.close()


def _waiter(ring: FillRing, position: int, timeout: float) -> tuple[threading.Thread, list[float]]:
    """A thread that waits for ``position``'s commit as the disk writer's fence does; the list gets
    how long it waited, negative when it timed out."""
    took: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        ok = ring.await_commit(position, timeout)
        took.append((time.monotonic() - began) * (1 if ok else -1))

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, took


def test_a_fence_makes_the_fill_writer_commit_at_once(
    ring: FillRing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Group waits far longer than the fence may take: without ``want`` ending the fill writer's
    # wait for more fills, the fenced change would wait for them.
    monkeypatch.setattr("edgecache.edge.fillwriter.GROUP_QUIET", 3.0)
    monkeypatch.setattr("edgecache.edge.fillwriter.GROUP_WAIT", 6.0)
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0, writer=False)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    stop = [False]
    child = threading.Thread(target=run, args=(reader, store, stop, os.getppid()))
    child.start()
    try:
        entry = Entry("z", "https://a.test/fenced", 200, b"", b"body", (), 1, 0.0, 0.0, 60.0)
        assert ring.append_entry(entry, False) > 0
        ring.wake_if_asleep()
        time.sleep(0.3)  # the fill writer has seen it and waits for more fills
        assert ring.committed < ring.head
        waiter, took = _waiter(ring, ring.head, 10.0)
        ring.want(ring.head)
        waiter.join(10)
        assert took and 0 <= took[0] < 2.0, f"the fence waited {took} s, not woken by the commit"
        assert [e.key for e in store] == [entry.key]
    finally:
        stop[0] = True
        ring.close_writer()
        child.join(10)
        store.close()
        reader.close()


def test_a_dead_fill_writers_skip_releases_a_fence(ring: FillRing) -> None:
    assert ring.append(b"never written", 0)
    waiter, took = _waiter(ring, ring.head, 10.0)
    time.sleep(0.1)
    ring.skip()
    waiter.join(10)
    assert took and 0 <= took[0] < 2.0


def _in_use(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_waits_take_eventfds_numbered_past_1024(ring: FillRing) -> None:
    # A node with many connections open gets high descriptors; ``select`` refuses them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = next(fd for fd in range(1500, 1600) if not _in_use(fd) and not _in_use(fd + 1))
    if hard != resource.RLIM_INFINITY and hard <= high + 1:
        pytest.skip(f"descriptors are limited to {hard} here")
    if soft <= high + 1:
        resource.setrlimit(resource.RLIMIT_NOFILE, (high + 2, hard))
    try:
        reader = FillRing.open(
            ring.path, os.dup2(ring.wake_fd, high, False), os.dup2(ring.done_fd, high + 1, False)
        )
        try:
            ring.want(1)
            began = time.monotonic()
            reader.doze(10.0)
            reader.wait(0, 0.01)
            assert time.monotonic() - began < 5, "the wake did not end the doze"
            assert ring.append(b"fill", 0)
            assert not reader.await_commit(ring.head, 0.01)
            batch = reader.read(0, 10, 1 << 20)
            threading.Timer(0.05, reader.commit, (batch, reader.counters())).start()
            assert reader.await_commit(ring.head, 10.0)
        finally:
            reader.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_fill_writer_given_no_done_fd_commits(ring: FillRing) -> None:
    # Started by an older node (its supervisor passes no ``--done-fd``), it still commits.
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), -1)
    assert ring.append(b"fill", 0)
    reader.commit(reader.read(0, 10, 1 << 20), reader.counters())
    assert ring.committed == ring.head and ring.pending() == 0
    reader.close()


def test_vary_names_put_with_their_fill_follow_it_in_the_ring_and_names_set_alone_do_not(
    ring: FillRing, tmp_path: Path
) -> None:
    # ``put``'s ``vary``: the names go in the ring as the record right after their fill (one
    # transaction for both in the fill writer); ``set_vary`` alone follows no fill there.
    disk = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    disk.attach_fills(ring)
    base = "https://a.test/v"
    try:
        assert disk.put(_fill("v" + VARIANT_SEP + "gzip"), vary=(base, ("accept-encoding",)))
        records = ring.read(0, 10, 1 << 20).records
        assert [flags for _, flags in records] == [0, VARY_FLAG]
        assert decode_vary(records[1][0]) == (base, ("accept-encoding",))
        head = ring.head
        disk.set_vary(base, ("accept",))
        assert ring.head == head, "names set without their fill went in the ring"
    finally:
        ring.skip()  # no fill writer: the writer thread's fence passes
        disk.attach_fills(None)
        disk.close()


def test_vary_names_after_a_fill_the_disk_did_not_take_do_not_go_in_the_ring(
    ring: FillRing, tmp_path: Path
) -> None:
    # The names of a variant that stayed in memory (a second-fill admission declined it) follow no
    # fill in the ring: not the earlier variant's, which the ring took.
    disk = DiskStore(tmp_path / "disk", budget=1 << 20, position=0)
    disk.attach_fills(ring)
    tiers = TierChain(
        MemoryTier(1 << 20),
        disk,
        reserve_on=lambda zone: False,
        reserve_eligible=lambda e: False,
        still_valid=lambda e: True,
        admit_second_fill=True,
    )
    base = "https://a.test/v"
    try:
        gzip = _fill("v" + VARIANT_SEP + "gzip")
        assert not tiers.put(gzip) and tiers.put(gzip), "a second fill goes to the disk"
        head = ring.head
        assert not tiers.put(_fill("v" + VARIANT_SEP + "br"), (base, ("accept-encoding",)))
        assert ring.head == head, "the names went in the ring behind a fill that is not there"
        assert tiers.vary(base) == ("accept-encoding",)
    finally:
        ring.skip()  # no fill writer: the writer thread's fence passes
        disk.attach_fills(None)
        disk.close()


@settings(max_examples=100, deadline=None)
@given(
    # Puts of six keys, and commits of up to five records: mostly puts, so that several
    # generations of ring keys are made before the fill writer has committed them.
    st.lists(st.tuples(st.sampled_from(("put", "put", "put", "commit")), st.integers(0, 5)), max_size=40),
    st.sampled_from([2, 3, disk_module.RING_KEYS_KEPT]),
)
@example([("put", n) for n in range(6)], 2)
def test_a_fill_in_the_ring_is_held_until_the_fill_writer_commits_it(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]], kept: int
) -> None:
    # ``has`` (a memory eviction's "is it on disk already?") counts a key as held while any record
    # of it waits in the ring, and only then: nothing is on disk here (the fill writer commits
    # without writing). Small generations of ring keys drop the older one often.
    at = tmp_path_factory.mktemp("held")
    ring = FillRing.create(at / "r.ring", CAPACITY)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    disk = DiskStore(at / "disk", budget=1 << 20, position=0)
    disk.attach_fills(ring)
    kept_before = disk_module.RING_KEYS_KEPT
    disk_module.RING_KEYS_KEPT = kept
    appended: list[tuple[str, int]] = []  # (key, the position after its record)
    read = 0
    try:
        for step, n in steps:
            if step == "put":
                fill = _fill(f"k{n}")
                assert disk.put(fill)
                appended.append((fill.key, ring.head))
            else:
                batch = reader.read(read, n, 1 << 20)
                reader.commit(batch, reader.counters())
                read = batch.end
            committed = ring.committed
            for i in range(6):
                key = _fill(f"k{i}").key
                waiting = any(k == key and end > committed for k, end in appended)
                assert disk.has(key) == waiting, (key, appended, committed)
    finally:
        disk_module.RING_KEYS_KEPT = kept_before
        ring.skip()
        disk.attach_fills(None)
        disk.close()
        reader.close()
        ring.close()


def _rows(store: DiskStore) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every row of every database of a store, a reserve record's expiry (the clock's, at its
    commit) left out."""
    out: dict[bytes, list[tuple[bytes, bytes]]] = {}
    with store.env.begin() as txn:
        names = [k for k, _ in txn.cursor()]
    for name in names:
        db = store.env.open_db(name, create=False)
        with store.env.begin(db=db) as txn:
            rows = []
            for k, v in txn.cursor():
                if name.startswith(RESERVE + b"/"):
                    if k.startswith(EXPIRY):
                        k = EXPIRY + k[9:]
                    elif k.startswith(ENTRY):
                        v = with_reserve_expires(v, 0.0)
                rows.append((k, v))
        out[name] = rows
    return out


ZONES = ("z", "y")


def _put_each(store: DiskStore, txn: Any, fills: list[Fill], now: float, reclaimed: int) -> tuple[int, int]:
    """``DiskStore._put_fills`` as plain per-record steps (``_insert``, which places a disk-cache
    record too; the host row written every time, no cache of zones, rows or hosts): the oracle the
    run is compared with."""
    writes = dropped = 0
    for record, zone, key, kb, seq, tags, reserve, chunked in fills:
        cdb = None if seq < reclaimed else store._zdb(txn, CACHE, zone, create=True)
        if cdb is None:
            dropped += 1
            continue
        host = host_of(key)
        txn.put(b"host:" + host.encode(), zone.encode(), db=store._meta)
        store._new_hosts[host] = zone
        writes += 1
        store._insert(txn, cdb, CACHE, zone, kb, record, seq, tags, chunked)
        if reserve and chunked is None:
            rdb = store._zdb(txn, RESERVE, zone, create=True)
            assert rdb is not None
            expires = now + store._reserve_retention(zone)
            store._insert(txn, rdb, RESERVE, zone, kb, with_reserve_expires(record, expires), seq, tags, None)
            txn.put(expiry_row(expires, kb), b"", db=rdb)
    return writes, dropped


def _apply_each(store: DiskStore, ops: list[tuple[Any, ...]]) -> None:
    """Apply the writer thread's changes each in a transaction of its own, a put written by
    ``_put_each``."""
    store._put_fills = partial(_put_each, store)  # type: ignore[method-assign]
    try:
        for op in ops:
            store._apply([op])
    finally:
        del store._put_fills


def _committed_keys(store: DiskStore) -> list[bytes]:
    """The stored bytes of every key a store holds a record or Vary row of, in either area."""
    return [
        k[1:]
        for name, rows in _rows(store).items()
        if name[:1] in (CACHE, RESERVE) and name[1:2] == b"/"
        for k, _ in rows
        if k[:1] in (ENTRY, VARY)
    ]


@pytest.mark.parametrize("appender", APPENDERS, ids=["c", "python"])
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(entries, st.sampled_from(ZONES), st.booleans(), st.integers(0, 3), st.none() | vary_names),
        min_size=1,
        max_size=25,
    )
)
def test_a_ring_record_is_stored_as_the_writer_thread_stores_its_entry(
    tmp_path_factory: pytest.TempPathFactory,
    appender: type[Appender | PyAppender],
    fills: list[tuple[Entry, str, bool, int, tuple[str, ...] | None]],
) -> None:
    # The fill writer stores a ring record's bytes as they are (decision 0020's addendum
    # ``fillchild``): every row, record and index, must be what the writer thread's entry stores,
    # each by the plain per-record steps in a transaction of its own (``_apply_each``: not the run's
    # loop, which both sides would share), replacements (a key filled again), reserve copies,
    # drops, two zones and the Vary names that follow a fill (a run of fills split around each)
    # included. And every key the fill writer commits is "maybe" in the node's key filter
    # (``_announce``, before the commit).
    at = tmp_path_factory.mktemp("stores")
    with contextlib.ExitStack() as closing:
        ring = FillRing.create(at / "r.ring", CAPACITY, appender=appender)
        closing.callback(ring.close, unlink=True)
        keys = KeyFilter.create(1000)
        closing.callback(keys.close)
        keys.set_ready()
        child = DiskStore(at / "child", budget=1 << 30, position=1, zones=ZONES, writer=False)
        closing.callback(child.close)
        child.use_filter(keys, build=False)
        thread = DiskStore(at / "thread", budget=1 << 30, position=1, zones=ZONES, writer=False)
        closing.callback(thread.close)
        reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
        closing.callback(reader.close)
        ops: list[tuple[Any, ...]] = []
        for entry, zone, reserve, again, names in fills:
            # A few keys per zone only, so that some fills replace an earlier one.
            key = f"https://{zone}.test/{again}{entry.key}"[: 20 + 600 * (again == 3)]
            e = replace(entry, zone=zone, key=key)
            if ring.append_entry(e, reserve) <= 0:
                continue
            ops.append(("put", e, reserve))
            if names is not None and ring.append_vary(key, names):
                ops.append(("vary", key, names))
        records, _ = drain(reader, 0)
        child.write_fills(records)
        _apply_each(thread, ops)
        assert _rows(child) == _rows(thread)
        # The fill counters (commits and evictions follow the transactions, not the fills).
        fill_counts = itemgetter("writes", "dropped", "write_errors")
        assert fill_counts(child.fill_counters()) == fill_counts(thread.fill_counters())
        absent = [kb for kb in _committed_keys(child) if not keys.may_hold(kb)]
        assert not absent, f"committed, but absent from the key filter: {absent}"


@settings(max_examples=150, deadline=None)
@given(
    entries,
    # Here a tag may be empty or hold a NUL (a record's, not what the proxy parses).
    st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=6), max_size=3).map(tuple),
    st.none() | st.integers(0, 3),
)
def test_fill_fields_read_what_decode_entry_reads(
    entry: Entry, tags: tuple[str, ...], cut: int | None
) -> None:
    # ``cut``: the record ends that many bytes past its key (a record cut short), where
    # ``decode_entry`` reads what is there: no tag text is no tags.
    raw = encode_entry(replace(entry, tags=tags), 0.0)
    if cut is not None:
        raw = raw[
            : REC.size + len(entry.zone.encode()) + len(entry.key.encode("utf-8", "surrogatepass")) + cut
        ]
    try:
        decoded = decode_entry(raw).entry
    except (struct.error, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            fill_fields(raw)
        return
    want = (decoded.zone, decoded.key, key_bytes(decoded.key), decoded.stored_seq, decoded.tags)
    assert fill_fields(raw) == (raw, *want, False, None)


def test_fill_fields_keeps_a_bounded_memory_of_tag_lists() -> None:
    # A node whose objects each have their own tags (say a product id) must not grow the decoded
    # tag lists fill_fields remembers without bound, nor read a forgotten list wrong.
    fill = _fill("tagged")
    for i in range(2 * disk_layout._REMEMBERED + 3):
        fields = fill_fields(encode_entry(replace(fill, tags=("all", f"product-{i}")), 0.0))
        assert fields is not None and fields[5] == ("all", f"product-{i}")
        assert len(disk_layout._tag_lists) <= disk_layout._REMEMBERED
    # Nor keep long lists at all: their number bounds nothing (an origin's 16 KiB lists, 4,096 of
    # them, held ~760 MiB in the child).
    disk_layout._tag_lists.clear()
    long_tags = tuple(f"listing-{i:04}" for i in range(40))
    fields = fill_fields(encode_entry(replace(fill, tags=long_tags), 0.0))
    assert fields is not None and fields[5] == long_tags and not disk_layout._tag_lists


def test_a_large_objects_record_in_the_ring_is_counted_not_written(tmp_path: Path) -> None:
    # No appender puts one there (its chunks go through the writer thread, and its record after
    # them), but a record the ring holds is written or counted, never half-written.
    ring = FillRing.create(tmp_path / "r.ring", CAPACITY, appender=PyAppender)
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0, zones=["z"], writer=False)
    try:
        large = ChunkedEntry(
            "z", "https://a.test/large", 200, b"", b"", (), 1, 0.0, 0.0, 60.0, length=10, object_id=b"o" * 16
        )
        assert ring.append_entry(large, True) > 0 and ring.append_entry(_fill("small"), False) > 0
        records, _ = drain(reader, 0)
        store.write_fills(records)
        counters = store.fill_counters()
        assert (counters["write_errors"], counters["writes"]) == (1, 1)
        assert [e.key for e in store] == ["https://a.test/small"]
    finally:
        store.close()
        reader.close()
        ring.close(unlink=True)


def _failing_batch() -> list[Entry]:
    """Fills for a 2 MiB map: three dropped (below the reclaimed position, 1), then two larger than
    the map, so that a transaction holding either fails (however the writer groups them)."""
    below = [replace(_fill(f"old{i}"), stored_seq=0) for i in range(3)]
    return below + [replace(_fill(f"big{i}"), body=bytes([i]) * (3 << 20)) for i in range(2)]


def test_a_failed_batch_of_ring_fills_is_counted_dropped(tmp_path: Path) -> None:
    store = DiskStore(
        tmp_path / "disk", budget=1 << 30, position=1, map_size=2 << 20, zones=["z"], writer=False
    )
    try:
        fills = _failing_batch()
        store.write_fills([(encode_entry(e, 0.0), 0) for e in fills])
        counters = store.fill_counters()
        # Every fill of the failed transaction is not written, the dropped ones too: each counted
        # once, and no write counted.
        assert (counters["write_errors"], counters["writes"], counters["dropped"]) == (1, 0, len(fills))
        assert list(store) == []
    finally:
        store.close()


def test_a_failed_batch_of_the_writer_threads_fills_is_counted_dropped(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "disk", budget=1 << 30, position=1, map_size=2 << 20, zones=["z"])
    try:
        fills = _failing_batch()
        for e in fills:
            assert store.put(e)
        assert store.flush(20)
        stats = store.stats
        assert stats.write_errors >= 1 and stats.writes == 0 and stats.dropped == len(fills)
        assert list(store) == []
    finally:
        store.close()


def test_a_damaged_ring_record_is_counted_and_the_rest_written(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "disk", budget=1 << 20, position=0, zones=["z"], writer=False)
    good = encode_entry(_fill("good"), 0.0)
    bad_zone = good[:79] + b"\xff" + good[80:]  # the zone's one byte: not UTF-8
    store.write_fills([(good[:40], 0), (bad_zone, RESERVE_FLAG), (good, 0)])
    assert store.fill_counters()["write_errors"] == 2 and store.fill_counters()["writes"] == 1
    assert store.get("https://a.test/good") is not None
    store.close()


# Keys whose hosts a run of fills tells apart by a prefix (``host_prefix``): one host's paths, a
# host that extends another's name, the same host without a path, no scheme at all.
TRICKY_KEYS = ("https://a.test/", "https://a.test/x/", "https://a.testx/", "https://a.test", "a.test/", "")


@pytest.mark.parametrize("appender", APPENDERS, ids=["c", "python"])
@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(TRICKY_KEYS),
            st.integers(0, 2),
            st.sampled_from(ZONES),
            st.booleans(),
            # Mostly written (at or above the reclaimed position, 2), so that a run often replaces
            # a key it wrote.
            st.sampled_from((1, 2, 2, 3)),
            # Vary names after the fill: they end the run.
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    # Fills on disk before the run: the run replaces them.
    st.lists(st.tuples(st.sampled_from(TRICKY_KEYS), st.integers(0, 2), st.sampled_from(ZONES)), max_size=4),
)
@example([("https://a.test/", 0, "z", False, 2, False)] * 2, [])
@example([("https://a.test/", 0, "z", False, 2, False), ("https://a.test/", 1, "y", False, 2, False)], [])
def test_a_run_of_ring_fills_writes_what_each_fill_alone_writes(
    tmp_path_factory: pytest.TempPathFactory,
    appender: type[Appender | PyAppender],
    fills: list[tuple[str, int, str, bool, int, bool]],
    on_disk: list[tuple[str, int, str]],
) -> None:
    # A run of ring fills in one transaction (its index rows written per zone at once, its host
    # rows looked up once per host prefix, decision 0020's addendum ``childput``) stores every row
    # that the same fills store each in a transaction of its own by the plain per-record steps
    # (``_apply_each``): replacements of a key in the run or on disk before it, reserve copies,
    # Vary names between runs, hosts moving between zones and puts below the reclaimed position
    # included.
    at = tmp_path_factory.mktemp("runs")
    with contextlib.ExitStack() as closing:
        ring = FillRing.create(at / "r.ring", CAPACITY, appender=appender)
        closing.callback(ring.close, unlink=True)
        child = DiskStore(at / "child", budget=1 << 30, position=1, zones=ZONES, writer=False)
        closing.callback(child.close)
        alone = DiskStore(at / "alone", budget=1 << 30, position=1, zones=ZONES, writer=False)
        closing.callback(alone.close)
        for store in (child, alone):
            with store.env.begin(write=True) as txn:
                store._meta_put(txn, b"reclaimed_upto", 2)
        reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
        closing.callback(reader.close)
        before = [
            ("put", Entry(zone, f"{prefix}{path}", 200, b"old", b"", ("t", "old"), 2, 0.0, 0.0, 60.0), True)
            for prefix, path, zone in on_disk
        ]
        for store in (child, alone):
            _apply_each(store, before)
        ops: list[tuple[Any, ...]] = []
        for prefix, path, zone, reserve, seq, vary in fills:
            key = f"{prefix}{path}"
            e = Entry(zone, key, 200, b"h", b"body", ("t", f"u{path}"), seq, 0.0, 0.0, 60.0)
            assert ring.append_entry(e, reserve) > 0
            ops.append(("put", e, reserve))
            if vary:
                assert ring.append_vary(key, ("accept",))
                ops.append(("vary", key, ("accept",)))
        records, _ = drain(reader, 0)
        child.write_fills(records)
        _apply_each(alone, ops)
        assert _rows(child) == _rows(alone)
        written, dropped = (child.counters().writes, child.counters().dropped)
        assert (written, dropped) == (alone.counters().writes, alone.counters().dropped)
        assert written == len(before) + sum(seq >= 2 for *_, seq, _ in fills)


def _crc32c_bitwise(data: bytes) -> int:
    # CRC-32C one bit at a time (reflected, polynomial 0x82F63B78): an oracle that shares nothing
    # with the C module's tables or the CPU's instruction.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


RFC3720_VECTORS = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (b"123456789", 0xE3069283),
]
"""RFC 3720's CRC-32C examples (section B.4) and the check value of "123456789"."""


@pytest.mark.parametrize(("data", "expected"), RFC3720_VECTORS)
def test_the_record_check_is_crc32c(data: bytes, expected: int) -> None:
    assert _crc32c_bitwise(data) == expected
    assert crc32c(data) == expected and crc32c_portable(data) == expected


@pytest.mark.parametrize("appender", APPENDERS, ids=["c", "python"])
def test_a_record_is_sealed_with_its_payloads_crc32c(
    tmp_path: Path, appender: type[Appender | PyAppender]
) -> None:
    # What another reader of the ring must compute: the head's CRC is the payload's CRC-32C, for a
    # record appended as bytes and for an entry's record.
    ring = FillRing.create(tmp_path / "r.ring", CAPACITY, appender=appender)
    fill = _fill("sealed")
    for payload in (*(data for data, _ in RFC3720_VECTORS), b"", b"x" * 1000):
        at = ring.head
        assert ring.append(payload, 0) == 1
        size, crc, _ = struct.unpack_from("<IIB", ring._mm, HEADER_SIZE + at)
        assert size == len(payload) and crc == _crc32c_bitwise(payload)
    at = ring.head
    assert ring.append_entry(fill, False) == 1
    record = encode_entry(fill, 0.0)
    assert struct.unpack_from("<I", ring._mm, HEADER_SIZE + at + 4)[0] == _crc32c_bitwise(record)
    ring.close(unlink=True)


def test_a_cpu_with_sse42_computes_crc32c_with_its_instruction() -> None:
    # The CPU's own word for it (Linux's flags), so that the tests below do compare the two paths
    # where it has the instruction.
    flags = {
        word
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("flags")
        for word in line.split(":", 1)[1].split()
    }
    has_it = platform.machine() == "x86_64" and "sse4_2" in flags
    assert has_it == HARDWARE


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**64), st.integers(0, 7))
def test_the_instruction_and_the_tables_agree_at_every_length_and_alignment(seed: int, skew: int) -> None:
    # A random 4 KiB (from ``seed``: Hypothesis draws 4 KiB of its own badly), every length of it
    # from a start ``skew`` bytes past the buffer's: the 8-byte steps, the byte-wise tail and
    # unaligned loads of both paths.
    data = random.Random(seed).randbytes(4096 + 8)
    view = memoryview(data)
    for length in range(4097):
        part = view[skew : skew + length]
        assert crc32c(part) == crc32c_portable(part), (skew, length)
    assert crc32c(view[skew : skew + 100]) == _crc32c_bitwise(data[skew : skew + 100])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(-4, 320), st.integers(-4, 320), st.integers(0, 2**32 - 1))
def test_the_readers_check_copies_only_a_record_that_matches(
    data: bytes, start: int, size: int, crc: int
) -> None:
    # A damaged length may point past the map: the record is then unreadable, as a damaged byte
    # makes it, never an error or a read beyond the buffer.
    inside = 0 <= start <= len(data) and 0 <= size <= len(data) - start
    expected = data[start : start + size] if inside else None
    assert checked(data, start, size, crc) == (
        expected if expected is not None and _crc32c_bitwise(expected) == crc else None
    )
    if inside:
        assert checked(data, start, size, crc32c(data[start : start + size])) == expected


def test_a_record_whose_length_is_damaged_is_not_read(ring: FillRing) -> None:
    assert ring.append(b"first", 0) == 1
    damaged = ring.head
    assert ring.append(b"second", 0) == 1
    reader = FillRing.open(ring.path, os.dup(ring.wake_fd), os.dup(ring.done_fd))
    struct.pack_into("<I", ring._mm, HEADER_SIZE + damaged, 1 << 30)
    batch = reader.read(0, 10, 1 << 31)
    assert batch.records == [(b"first", 0)] and batch.end == damaged
    reader.close()


def _older_ring(tmp_path: Path) -> FillRing:
    # A ring as version 1 (zlib's CRC-32) made it: its magic's last byte is the version.
    ring = FillRing.create(tmp_path / "old.ring", CAPACITY)
    assert MAGIC[-1] == 2
    ring._mm[7] = 1
    return ring


def test_a_ring_of_another_format_version_is_refused(tmp_path: Path) -> None:
    ring = _older_ring(tmp_path)
    with pytest.raises(ValueError, match="format version 1, where this fill writer reads version 2"):
        FillRing.open(ring.path, -1, -1)
    with pytest.raises(ValueError, match="format version 1, where this appender writes version 2"):
        Appender(ring._mm)
    (tmp_path / "other").write_bytes(b"\x00" * (HEADER_SIZE + CAPACITY))
    with pytest.raises(ValueError, match="is not a fill ring"):
        FillRing.open(tmp_path / "other", -1, -1)
    with mmap.mmap(-1, HEADER_SIZE + CAPACITY) as other:
        _Q.pack_into(other, 8, CAPACITY)
        with pytest.raises(ValueError, match="not a fill ring's memory"):
            Appender(other)
    ring.close(unlink=True)


def test_a_fill_writer_started_on_an_older_ring_exits_saying_why(tmp_path: Path) -> None:
    # The package upgraded under a running node: the fill writer it restarts is the new one, the
    # ring the old process's. It exits before it is ready (the supervisor counts the fills dropped)
    # and reads nothing, writes nothing.
    ring = _older_ring(tmp_path)
    fill = _fill("old")
    old_record = encode_entry(fill, 0.0)
    # As version 1 sealed it, with zlib's CRC-32.
    struct.pack_into("<IIB3x", ring._mm, HEADER_SIZE, len(old_record), zlib.crc32(old_record), 0)
    ring._mm[HEADER_SIZE + 12 : HEADER_SIZE + 12 + len(old_record)] = old_record
    head = (12 + len(old_record) + 15) & ~15
    _Q.pack_into(ring._mm, 24, 1)
    _Q.pack_into(ring._mm, 16, head)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecache.edge.fillwriter",
            "--parent",
            str(os.getpid()),
            "--ring",
            str(ring.path),
            "--wake-fd",
            str(ring.wake_fd),
            "--done-fd",
            str(ring.done_fd),
            "--disk",
            str(tmp_path / "disk"),
            "--budget",
            str(1 << 20),
        ],
        pass_fds=(ring.wake_fd, ring.done_fd),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "format version 1, where this fill writer reads version 2" in done.stderr
    assert ring.started == 0 and ring.committed == 0
    assert not (tmp_path / "disk").exists()
    ring.close(unlink=True)
