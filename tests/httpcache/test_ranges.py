"""Range requests (RFC 9110 §14) served from stored responses, and the 206s the cache can store."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.ranges import (
    MAX_RANGES,
    content_range,
    multipart_byteranges,
    parse_content_range,
    parse_range,
    single_range,
    strong_validator,
    unsatisfied_range,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=500-", [(500, 999)]),
        ("bytes=-200", [(800, 999)]),
        ("bytes=-5000", [(0, 999)]),
        ("bytes=900-5000", [(900, 999)]),
        ("BYTES=0-0", [(0, 0)]),
        (" bytes=0-1, ,5-6 ", [(0, 1), (5, 6)]),
        ("bytes=500-599,0-99", [(500, 599), (0, 99)]),
        ("bytes=0-9,10-19", [(0, 9), (10, 19)]),
        ("bytes=0-1,2000-3000", [(0, 1)]),
        ("bytes=0-" + "9" * 5000, [(0, 999)]),
    ],
)
def test_satisfiable_ranges(value: str, expected: list[tuple[int, int]]) -> None:
    assert parse_range(value, 1000) == expected


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=5000-,-0"])
def test_unsatisfiable_ranges(value: str) -> None:
    assert parse_range(value, 1000) == "unsatisfiable"


def test_empty_representation_satisfies_no_range() -> None:
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=-10", 0) == "unsatisfiable"


@pytest.mark.parametrize(
    "value",
    [
        "items=0-1",
        "bytes 0-1",
        "bytes=",
        "bytes=5-1",
        "bytes=a-b",
        "bytes=1",
        "bytes=0-1-2",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=0-499,400-600",
        "bytes=0-0,0-0",
        "bytes=-100,850-900",
        ",".join(["bytes=0-0", *(f"{i * 10}-{i * 10 + 1}" for i in range(1, MAX_RANGES + 1))]),
    ],
)
def test_invalid_or_abusive_range_sets_are_ignored(value: str) -> None:
    assert parse_range(value, 1000) is None


def test_sixteen_ranges_are_allowed() -> None:
    value = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES))
    result = parse_range(value, 1000)
    assert isinstance(result, list) and len(result) == MAX_RANGES


_spec = st.one_of(
    st.tuples(st.integers(0, 3000), st.integers(0, 3000)).map(lambda t: f"{min(t)}-{max(t)}"),
    st.integers(0, 3000).map(lambda a: f"{a}-"),
    st.integers(0, 3000).map(lambda n: f"-{n}"),
)


@given(st.lists(_spec, min_size=1, max_size=20), st.integers(0, 2000))
def test_ranges_are_always_within_bounds_and_disjoint(specs: list[str], size: int) -> None:
    result = parse_range("bytes=" + ",".join(specs), size)
    if isinstance(result, list):
        assert 1 <= len(result) <= MAX_RANGES
        for start, end in result:
            assert 0 <= start <= end < size
        ordered = sorted(result)
        assert all(b[0] > a[1] for a, b in pairwise(ordered))


@given(st.text(max_size=60), st.integers(0, 10_000))
def test_parse_range_never_raises(value: str, size: int) -> None:
    result = parse_range(value, size)
    assert result is None or result == "unsatisfiable" or all(0 <= s <= e < size for s, e in result)


def test_content_range_values() -> None:
    assert content_range(0, 499, 1000) == "bytes 0-499/1000"
    assert unsatisfied_range(1000) == "bytes */1000"


def test_multipart_byteranges_body() -> None:
    body = bytes(range(256)) * 4
    payload, ctype = multipart_byteranges(
        lambda s, e: body[s : e + 1], [(0, 9), (500, 509)], "application/octet-stream", len(body)
    )
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=", 1)[1].encode()
    parts = payload.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    for part, (start, end) in zip(parts[1:-1], [(0, 9), (500, 509)], strict=True):
        head, _, data = part.partition(b"\r\n\r\n")
        assert b"Content-Type: application/octet-stream" in head
        assert f"Content-Range: bytes {start}-{end}/{len(body)}".encode() in head
        assert data == body[start : end + 1] + b"\r\n"


def test_multipart_boundaries_differ_and_type_is_optional() -> None:
    a, ctype_a = multipart_byteranges(lambda s, e: b"abcdef"[s : e + 1], [(0, 1), (3, 4)], None, 6)
    _, ctype_b = multipart_byteranges(lambda s, e: b"abcdef"[s : e + 1], [(0, 1), (3, 4)], None, 6)
    assert ctype_a != ctype_b
    assert b"Content-Type" not in a


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-99", "bytes=0-99"),
        ("BYTES= 100-", "bytes=100-"),
        ("bytes=-500", "bytes=-500"),
        ("bytes=0-99,200-299", None),
        ("bytes=-0", None),
        ("bytes=-", None),
        ("bytes=9-1", None),
        ("bytes=a-b", None),
        ("items=0-9", None),
        ("bytes=0-1-2", None),
    ],
)
def test_single_range_is_what_a_range_fill_forwards(value: str, expected: str | None) -> None:
    assert single_range(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1000", (0, 99, 1000)),
        ("bytes 999-999/1000", (999, 999, 1000)),
        ("bytes 0-99/*", None),
        ("bytes */1000", None),
        ("bytes 0-1000/1000", None),
        ("bytes 10-9/1000", None),
        ("items 0-9/10", None),
        ("bytes 0-9", None),
    ],
)
def test_content_range_places_a_206_only_exactly(value: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_content_range(value) == expected


def test_strong_validators_for_combining_parts() -> None:
    date = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert strong_validator('"a"', None, None) == 'etag "a"'
    assert strong_validator('W/"a"', date, date) is None
    assert strong_validator(None, "Sun, 06 Nov 1994 08:48:37 GMT", date) is not None
    assert strong_validator(None, "Sun, 06 Nov 1994 08:48:38 GMT", date) is None
    assert strong_validator(None, "Sun, 06 Nov 1994 08:48:37 UTC", date) is None
    assert strong_validator(None, None, date) is None


@given(st.text(max_size=30))
def test_range_helpers_never_raise(value: str) -> None:
    single_range(value)
    parse_content_range(value)
    single_range("bytes=" + value)
    parse_content_range("bytes " + value)
