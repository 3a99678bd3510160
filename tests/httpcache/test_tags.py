"""Surrogate keys (cache tags) taken from response headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache import tags as tags_module
from edgecache.httpcache.tags import (
    MAX_AGGREGATE_BYTES,
    MAX_TAG_LENGTH,
    TAG_HEADERS,
    normalise_tag,
    parse_tags,
)


def test_each_header_syntax() -> None:
    assert parse_tags([("Cache-Tag", "blog, post-1 ,Home")]) == ("blog", "post-1", "home")
    assert parse_tags([("Edge-Cache-Tag", "a,b")]) == ("a", "b")
    assert parse_tags([("Surrogate-Key", "a  b\tc")]) == ("a", "b", "c")
    assert parse_tags([("xkey", "a b,c , d")]) == ("a", "b", "c", "d")


def test_cache_tag_is_comma_separated_only() -> None:
    assert parse_tags([("cache-tag", "two words,x")]) == ("two words", "x")


def test_duplicates_across_headers_keep_first_seen_order() -> None:
    headers = [("Surrogate-Key", "b A"), ("Content-Type", "text/html"), ("Cache-Tag", "a,C,b"), ("XKey", "c")]
    assert parse_tags(headers) == ("b", "a", "c")


def test_empty_and_overlong_tags_are_dropped() -> None:
    long_tag = "x" * (MAX_TAG_LENGTH + 1)
    assert parse_tags([("Cache-Tag", f",, {long_tag}, ok, " + "y" * MAX_TAG_LENGTH)]) == (
        "ok",
        "y" * MAX_TAG_LENGTH,
    )


def test_aggregate_limit_stops_adding() -> None:
    tags = [f"tag-{i:05d}" for i in range(3000)]  # 9 chars + 1 separator each
    result = parse_tags([("Cache-Tag", ",".join(tags))])
    assert len(result) == MAX_AGGREGATE_BYTES // 10
    assert result == tuple(tags[: len(result)])


def test_aggregate_counts_utf8_bytes() -> None:
    tag = "é" * 1000  # 2000 bytes in UTF-8
    result = parse_tags([("Cache-Tag", ",".join(f"{tag}{i}" for i in range(20)))])
    assert len(result) == MAX_AGGREGATE_BYTES // 2002


def test_normalise_tag_matches_stored_form() -> None:
    assert normalise_tag("  Blog ") == "blog"
    assert parse_tags([("Cache-Tag", " Blog ")]) == (normalise_tag("BLOG"),)


_header = st.tuples(
    st.sampled_from([*TAG_HEADERS, "Cache-Tag", "X-Other"]),
    st.lists(st.sampled_from([*"abcABé ,\t", "x" * 300, "y" * 700]), max_size=60).map("".join),
)


@given(st.lists(_header, max_size=40))
def test_limits_always_hold(headers: list[tuple[str, str]]) -> None:
    tags = parse_tags(headers)
    assert len(set(tags)) == len(tags)
    assert all(t and t == normalise_tag(t) and len(t) <= MAX_TAG_LENGTH for t in tags)
    assert sum(len(t.encode()) + 1 for t in tags) <= MAX_AGGREGATE_BYTES


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Cache-Tag", "xkey", "Surrogate-Key", "Edge-Cache-Tag", "Vary"]),
            st.text(max_size=40),
        ),
        max_size=4,
    )
)
def test_a_remembered_parse_is_the_parse(fields: list[tuple[str, str]]) -> None:
    first = parse_tags(fields)
    assert parse_tags(list(fields)) == first == tags_module._parse(fields)


def test_the_memo_is_bounded_and_skips_long_values() -> None:
    for i in range(2 * tags_module.MEMO_MAX + 5):
        assert parse_tags([("Cache-Tag", f"t{i}")]) == (f"t{i}",)
    assert len(tags_module._MEMO) <= tags_module.MEMO_MAX
    long_value = ",".join(f"tag{i}" for i in range(100))
    assert parse_tags([("Cache-Tag", long_value)]) == tuple(f"tag{i}" for i in range(100))
    assert (("Cache-Tag", long_value),) not in tags_module._MEMO


def test_the_memo_skips_lists_of_many_fields_or_long_names() -> None:
    """Nine short fields are too many to remember (eight are not), and so is one long name."""
    many = [("Cache-Tag", f"m{i}") for i in range(9)]
    assert parse_tags(many) == tuple(f"m{i}" for i in range(len(many)))
    assert tuple(many) not in tags_module._MEMO
    long_name = [("Cache-Tag" + " " * 256, "n")]
    assert parse_tags(long_name) == ()
    assert tuple(long_name) not in tags_module._MEMO
    few = [("Cache-Tag", f"f{i}") for i in range(8)]
    parse_tags(few)
    assert tuple(few) in tags_module._MEMO
