"""Partial entries: joining parts, what they cover, and the size the tier charges for them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.store.entry import Entry
from edgecache.store.memory import MemoryTier
from edgecache.store.partial import PARTIAL_SUFFIX, PartialEntry

SIZE = 200
DATA = bytes(range(SIZE))
KEY = "http://h.example/v.mp4"


def entry(key: str = KEY) -> Entry:
    return Entry(
        zone="z",
        key=key,
        status=200,
        head=b'ETag: "a"\r\n',
        body=b"",
        tags=("t",),
        stored_seq=0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=60.0,
    )


def part(first: int, last: int) -> PartialEntry:
    return PartialEntry.holding(
        entry(KEY + PARTIAL_SUFFIX), SIZE, ((first, DATA[first : last + 1]),), 'etag "a"'
    )


spans = st.tuples(st.integers(0, SIZE - 1), st.integers(1, 60)).map(
    lambda t: (t[0], min(SIZE - 1, t[0] + t[1] - 1))
)


@given(st.lists(spans, min_size=1, max_size=12))
def test_joined_parts_hold_exactly_the_union_of_what_arrived(arrivals: list[tuple[int, int]]) -> None:
    reference = [False] * SIZE
    held = None
    for first, last in arrivals:
        new = part(first, last)
        held = new if held is None else PartialEntry.holding(new, SIZE, new.joined_with(held), new.validator)
        reference[first : last + 1] = [True] * (last - first + 1)
    assert held is not None
    starts = [s for s, _ in held.parts]
    assert starts == sorted(starts)
    for (s1, d1), (s2, _) in zip(held.parts, held.parts[1:], strict=False):
        assert s1 + len(d1) <= s2  # disjoint
    for start, data in held.parts:
        assert data and data == DATA[start : start + len(data)]
    assert held.held == sum(reference)
    assert held.complete == all(reference)
    for first in range(0, SIZE, 7):
        for last in (first, first + 9, SIZE - 1):
            if last >= SIZE:
                continue
            inside = all(reference[first : last + 1])
            assert held.covers([(first, last)]) == inside
            if inside:
                assert held.slice(first, last) == DATA[first : last + 1]
    if held.complete:
        assert held.as_full(KEY).body == DATA


def test_a_range_across_a_gap_is_not_covered_and_one_across_adjacent_parts_is() -> None:
    held = part(0, 9)
    new = part(20, 29)
    joined = PartialEntry.holding(new, SIZE, new.joined_with(held), new.validator)
    assert joined.covers([(0, 9), (20, 29)])
    assert not joined.covers([(5, 25)])
    with pytest.raises(ValueError):
        joined.slice(5, 25)
    gap = part(10, 19)
    filled = PartialEntry.holding(gap, SIZE, gap.joined_with(joined), gap.validator)
    assert [(s, len(d)) for s, d in filled.parts] == [(0, 10), (10, 10), (20, 10)]
    assert filled.slice(5, 25) == DATA[5:26]


def test_a_new_part_adds_only_the_bytes_not_held() -> None:
    held = part(10, 19)
    wide = part(0, 29)
    joined = PartialEntry.holding(wide, SIZE, wide.joined_with(held), wide.validator)
    assert [(s, len(d)) for s, d in joined.parts] == [(0, 10), (10, 10), (20, 10)]
    assert joined.parts[1][1] is held.parts[0][1]


def test_complete_parts_make_a_full_entry() -> None:
    held = part(0, SIZE - 1)
    assert held.complete
    full = held.as_full(KEY)
    assert type(full) is Entry
    assert (full.key, full.status, full.body, full.etag, full.tags) == (KEY, 200, DATA, '"a"', ("t",))


def test_the_tier_charges_the_bytes_held_and_refunds_them() -> None:
    tier = MemoryTier(100_000)
    held = part(0, 99)
    tier.put(held)
    assert tier.bytes_used == held.size and held.size > 100
    new = part(100, 149)
    joined = PartialEntry.holding(new, SIZE, new.joined_with(held), new.validator)
    tier.put(joined)
    assert tier.bytes_used == joined.size and joined.size - held.size >= 50
    assert tier.variants(KEY) == [KEY + PARTIAL_SUFFIX]
    assert tier.keys_for_tag("z", "t") == [KEY + PARTIAL_SUFFIX]
    assert tier.delete_primary(KEY) == 1
    assert tier.bytes_used == 0
