"""The origin latency histogram of the data plane's counters (``edge/stats.py``): each observation
lands in the first bucket whose bound is at or above it, as Prometheus' ``le`` buckets read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecache.edge.stats import ORIGIN_BUCKETS, EdgeStats


@given(st.lists(st.one_of(st.sampled_from(ORIGIN_BUCKETS[:-1]), st.floats(0.0, 1e6)), max_size=50))
def test_each_origin_latency_is_counted_in_the_first_bucket_at_or_above_it(seconds: list[float]) -> None:
    stats = EdgeStats()
    for s in seconds:
        stats.observe_origin(s)
    expected = [0] * len(ORIGIN_BUCKETS)
    for s in seconds:
        expected[next(i for i, bound in enumerate(ORIGIN_BUCKETS) if s <= bound)] += 1
    assert stats.origin_buckets == expected
    assert stats.origin_count == len(seconds)


def test_a_latency_on_a_bound_is_in_that_bucket() -> None:
    stats = EdgeStats()
    for s in (0.0, 0.001, 0.0011, 10.0, 10.5):
        stats.observe_origin(s)
    assert stats.origin_buckets[:3] == [2, 1, 0]
    assert stats.origin_buckets[-2:] == [1, 1]
