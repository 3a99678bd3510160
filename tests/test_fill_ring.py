"""The fill ring (store/fillring.py): records come out in order and whole across wrap-arounds, a
full ring refuses a record rather than overwrite one not yet committed, a record whose bytes are
not all there is not read, and a dead fill writer's records are skipped and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.store.fillring import HEADER_SIZE, FillRing

CAPACITY = 1 << 16


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[FillRing]:
    r = FillRing.create(tmp_path / "r.ring", CAPACITY)
    yield r
    r.close()


def drain(reader: FillRing, pos: int) -> tuple[list[tuple[bytes, bool]], int]:
    batch = reader.read(pos, 1 << 20, 1 << 30)
    reader.commit(
        batch,
        dict.fromkeys(
            (
                "writes",
                "dropped",
                "commits",
                "write_errors",
                "evictions",
                "reserve_evictions",
                "reserve_expired",
            ),
            0,
        ),
    )
    return batch.records, batch.end


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9000), st.booleans(), st.booleans()), max_size=120))
def test_records_come_out_in_order_and_whole(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bool, bool]]
) -> None:
    path = tmp_path_factory.mktemp("ring") / "r.ring"
    ring = FillRing.create(path, CAPACITY)
    reader = FillRing.open(path, ring.wake_fd)
    sent: list[tuple[bytes, bool]] = []
    got: list[tuple[bytes, bool]] = []
    refused = 0
    pos = 0
    for i, (size, reserve, read_now) in enumerate(steps):
        payload = bytes([i % 251]) * size
        if ring.append(payload, reserve):
            sent.append((payload, reserve))
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
    while ring.append(record, False):
        taken += 1
    assert taken == CAPACITY // 4016
    assert ring.pending() == taken
    reader = FillRing.open(ring.path, ring.wake_fd)
    records, _ = drain(reader, 0)
    assert len(records) == taken and ring.pending() == 0
    assert ring.append(record, True)


def test_a_record_whose_bytes_are_not_there_is_not_read(ring: FillRing) -> None:
    assert ring.append(b"first", False) and ring.append(b"second", False)
    # The second record's payload as a reader that saw ``head`` before the bytes would find it.
    at = HEADER_SIZE + 32 + 12
    ring._mm[at : at + 6] = b"\x00" * 6
    reader = FillRing.open(ring.path, ring.wake_fd)
    batch = reader.read(0, 100, 1 << 20)
    assert batch.records == [(b"first", False)] and batch.end == 32


def test_skip_gives_up_what_a_dead_writer_left(ring: FillRing) -> None:
    for i in range(5):
        assert ring.append(b"%d" % i, False)
    reader = FillRing.open(ring.path, ring.wake_fd)
    batch = reader.read(0, 2, 1 << 20)
    reader.commit(batch, reader.counters())
    assert ring.pending() == 3
    assert ring.skip() == 3
    assert ring.pending() == 0 and ring.committed == ring.head
