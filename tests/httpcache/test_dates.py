"""HTTP-date parsing is exact (RFC 9110 §5.6.7): the three forms parse, everything else does not."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.conditional import evaluate_preconditions
from edgecache.httpcache.dates import format_http_date, parse_http_date
from edgecache.httpcache.freshness import decide_storage

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def imf(t: time.struct_time) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", t)


def rfc850(t: time.struct_time) -> str:
    return (
        f"{LONG_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def asctime(t: time.struct_time) -> str:
    return (
        f"{DAYS[t.tm_wday]} {MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year:04d}"
    )


seconds = st.integers(min_value=-2_000_000_000, max_value=250_000_000_000)
"""1906 to the year 9892: every instant IMF-fixdate and asctime can name."""
near_seconds = st.integers(
    min_value=int(datetime(1977, 1, 1, tzinfo=UTC).timestamp()),
    max_value=int(datetime(2076, 12, 31, tzinfo=UTC).timestamp()),
)
"""The century RFC 850's two-digit years name when read in 2026 (the 50-year rule)."""


def test_the_three_forms_name_the_same_instant() -> None:
    expected = 784111777.0
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == expected
    assert parse_http_date("Sun Nov 06 08:49:37 1994") == expected
    assert parse_http_date(" \tSun, 06 Nov 1994 08:49:37 GMT ") == expected
    assert format_http_date(expected) == "Sun, 06 Nov 1994 08:49:37 GMT"


@given(seconds)
def test_imf_fixdate_round_trips(ts: int) -> None:
    value = format_http_date(ts)
    assert value == imf(time.gmtime(ts))
    assert parse_http_date(value) == ts


@given(seconds)
def test_asctime_parses(ts: int) -> None:
    assert parse_http_date(asctime(time.gmtime(ts))) == ts


@given(near_seconds)
def test_rfc850_parses_within_fifty_years(ts: int) -> None:
    assert parse_http_date(rfc850(time.gmtime(ts)), NOW) == ts


def test_rfc850_years_more_than_fifty_years_ahead_are_in_the_past() -> None:
    fifty_ahead = datetime(2076, 1, 1, tzinfo=UTC).timestamp()
    a_century_before_fifty_one_ahead = datetime(1977, 1, 1, tzinfo=UTC).timestamp()
    assert parse_http_date("Wednesday, 01-Jan-76 00:00:00 GMT", NOW) == fifty_ahead
    assert parse_http_date("Saturday, 01-Jan-77 00:00:00 GMT", NOW) == a_century_before_fifty_one_ahead


MUTATIONS = [
    ("GMT", "UTC"),
    ("GMT", "gmt"),
    ("GMT", "+0000"),
    ("GMT", "GMT+1"),
    (":", "."),
    (":", "-"),
    (" ", "-"),
    (", ", ","),
    (" ", "  "),
    (", ", " "),
]


@given(seconds, st.sampled_from(MUTATIONS), st.integers(min_value=0, max_value=5))
def test_a_mutated_imf_fixdate_is_not_a_date(ts: int, mutation: tuple[str, str], nth: int) -> None:
    value = format_http_date(ts)
    old, new = mutation
    spots = [i for i in range(len(value)) if value.startswith(old, i)]
    i = spots[nth % len(spots)]
    mutated = value[:i] + new + value[i + len(old) :]
    assert parse_http_date(mutated) is None


@given(
    seconds, st.sampled_from(["lower", "upper", "two_digit_year", "one_digit_hour", "weekday", "no_day_name"])
)
def test_other_spellings_are_not_dates(ts: int, how: str) -> None:
    t = time.gmtime(ts)
    value = format_http_date(ts)
    if how == "lower":
        mutated = value.lower()
    elif how == "upper":
        mutated = value.upper()
    elif how == "two_digit_year":
        mutated = value[:12] + value[14:]
    elif how == "one_digit_hour":
        mutated = value[:17] + f"{t.tm_hour % 10}" + value[19:]
    elif how == "weekday":
        mutated = DAYS[(t.tm_wday + 1) % 7] + value[3:]
    else:
        mutated = value[5:]
    assert parse_http_date(mutated) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "-1",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
        "Thu, 18 Aug 2050 02:01:18 +0000",
        "Thu, 18 Aug 2050 02:01:18",
        "Thursday, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18-Aug-50 02:01:18 GMT",
        "Thu Aug 18 02:01:18 50",
        "Thu, 18 Aug 2050 02:01:18 GMT, Fri, 19 Aug 2050 02:01:18 GMT",
        "Sun, 30 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, ٠٦ Nov 1994 08:49:37 GMT",
        "x" * 500,
    ],
)
def test_invalid_dates_are_none(value: str) -> None:
    assert parse_http_date(value) is None


def test_a_leap_second_is_a_date() -> None:
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == datetime(2017, 1, 1, tzinfo=UTC).timestamp()


@given(st.text(max_size=40))
def test_parse_http_date_never_raises(value: str) -> None:
    parse_http_date(value)


def storage(*headers: tuple[str, str]) -> float | None:
    d = decide_storage(
        method="GET",
        status=200,
        request_headers={},
        response_headers=[("Date", format_http_date(NOW)), *headers],
        now=NOW,
        response_time=NOW,
    )
    return d.freshness_lifetime if d.storable else None


def test_a_lenient_expires_is_already_expired() -> None:
    assert storage(("Expires", "Thu, 18 Aug 2050 02:01:18 UTC")) is None
    assert storage(("Expires", "Thu, 18 Aug 2050 02:01:18 UTC"), ("ETag", '"a"')) == 0.0
    assert storage(("Expires", format_http_date(NOW + 60))) == 60


def test_expires_fields_that_disagree_are_invalid_and_equal_ones_are_not() -> None:
    later = format_http_date(NOW + 60)
    assert storage(("Expires", later), ("Expires", format_http_date(NOW + 120))) is None
    assert storage(("Expires", later), ("Expires", later)) == 60


def test_a_lenient_last_modified_gives_no_heuristic_freshness() -> None:
    good = format_http_date(NOW - 1000)
    assert storage(("Last-Modified", good)) == pytest.approx(100)
    assert storage(("Last-Modified", good.replace("GMT", "UTC"))) is None


def test_an_invalid_if_modified_since_is_ignored() -> None:
    lm = format_http_date(NOW - 1000)
    later = format_http_date(NOW)
    assert evaluate_preconditions("GET", {"if-modified-since": later}, None, lm) == 304
    lenient = later.replace("GMT", "UTC")
    assert evaluate_preconditions("GET", {"if-modified-since": lenient}, None, lm) is None
