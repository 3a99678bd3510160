"""The bounded memo the field parsers share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.memo import remember


@given(st.lists(st.integers(), max_size=60), st.integers(min_value=1, max_value=8))
def test_a_memo_never_holds_more_than_its_limit_and_keeps_the_latest(keys: list[int], limit: int) -> None:
    memo: dict[int, str] = {}
    for k in keys:
        remember(memo, k, str(k), limit)
        assert len(memo) <= limit
        assert memo[k] == str(k)
    assert all(memo[k] == str(k) for k in memo)
