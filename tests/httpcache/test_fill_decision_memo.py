"""The fill's head step without repeated work: the storage decision's memo, Age by comparisons and
the last Date parsed kept, each equal to the computation it replaces for any field values and any
order of responses (a memo warmed by one response must not answer for another)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.httpcache import dates, freshness
from edgecache.httpcache.cachecontrol import DELTA_MAX
from edgecache.httpcache.dates import format_http_date, parse_http_date
from edgecache.httpcache.freshness import decide_from_fields, initial_age

T = 1_700_000_000
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf(ts: int) -> str:
    return format_http_date(ts)


def rfc850(ts: int) -> str:
    t = time.gmtime(ts)
    return (
        f"{LONG_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def asctime(ts: int) -> str:
    t = time.gmtime(ts)
    return (
        f"{DAYS[t.tm_wday]} {MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year:04d}"
    )


FORMS = {"imf": imf, "rfc850": rfc850, "asctime": asctime}
instants = st.integers(min_value=T - 40 * 365 * 86400, max_value=T + 40 * 365 * 86400)
clocks = st.integers(min_value=0, max_value=4_000_000_000)
"""1970 to 2096: RFC 850's two-digit years resolve to different centuries across it."""


@st.composite
def date_values(draw: st.DrawFn) -> str:
    """An HTTP-date in one of its three forms, with optional whitespace around it, or garbage."""
    kind = draw(st.sampled_from([*FORMS, "garbage"]))
    if kind == "garbage":
        return draw(
            st.sampled_from(["", "0", "-1", "yesterday", imf(T).replace("GMT", "UTC")]) | st.text(max_size=30)
        )
    # Instants a second or a minute apart too: strings that differ only in their last digits.
    value = FORMS[kind](draw(st.sampled_from([T, T + 1, T + 60, T + 3600]) | instants))
    return draw(st.sampled_from(["", " ", "\t"])) + value + draw(st.sampled_from(["", " "]))


def expected_date(value: str, now: float) -> float | None:
    """RFC 9110 §5.6.7, independently of ``dates``: the value read in each form (RFC 850's year by
    the 50-year rule against ``now``) is a date when it is exactly how that form writes the instant
    read (which checks digits, spacing, names and the weekday)."""
    value = value.strip(" \t")
    for form, pattern in _PATTERNS.items():
        try:
            parsed = datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        if form == "rfc850":
            this_year = time.gmtime(now).tm_year
            year = this_year - this_year % 100 + parsed.year % 100
            try:
                parsed = parsed.replace(year=year if year <= this_year + 50 else year - 100)
            except ValueError:
                return None
        instant = parsed.timestamp()
        return instant if FORMS[form](int(instant)) == value else None
    return None


_PATTERNS = {
    "imf": "%a, %d %b %Y %H:%M:%S GMT",
    "rfc850": "%A, %d-%b-%y %H:%M:%S GMT",
    "asctime": "%a %b %d %H:%M:%S %Y",
}


@given(st.data())
@settings(max_examples=300)
def test_a_date_parsed_after_others_is_its_own(data: st.DataObject) -> None:
    # A few values, read in any order and under clocks of different centuries: the kept last
    # value answers only for an equal string, and never for RFC 850, whose year depends on now.
    pool = data.draw(st.lists(date_values(), min_size=1, max_size=4))
    for _ in range(data.draw(st.integers(1, 12))):
        value = data.draw(st.sampled_from(pool))
        now = data.draw(clocks)
        assert parse_http_date(value, now) == expected_date(value, now), (value, now)


def test_an_rfc850_date_read_twice_under_two_centuries_gives_two_instants() -> None:
    value = "Thursday, 01-Jan-70 00:00:00 GMT"
    in_1990 = datetime(1990, 6, 1, tzinfo=UTC).timestamp()
    in_2030 = datetime(2030, 6, 1, tzinfo=UTC).timestamp()
    assert parse_http_date(value, in_1990) == 0.0
    assert parse_http_date(value, in_2030) is None  # 2070-01-01 is a Wednesday
    assert parse_http_date(value, in_1990) == 0.0


def reference_initial_age(
    age_header: str | None, date_header: str | None, request_time: float, response_time: float
) -> float:
    """RFC 9111 §4.2.3 as ``initial_age`` computed it before it compared instead of calling max()."""
    age_value = 0
    if age_header:
        first = age_header.split(",", 1)[0].strip()
        if first.isascii() and first.isdigit():
            age_value = DELTA_MAX if len(first) > 10 else min(int(first), DELTA_MAX)
    date_value = expected_date(date_header, response_time) if date_header else None
    apparent_age = max(0.0, response_time - date_value) if date_value is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


ages = st.none() | st.sampled_from(["0", "10", "5, 50", " 7 ", "-3", "x", "", "99999999999", "٣"])


@given(st.data())
@settings(max_examples=300)
def test_age_is_the_rfc_9111_corrected_initial_age(data: st.DataObject) -> None:
    pool = data.draw(st.lists(st.none() | date_values(), min_size=1, max_size=3))
    for _ in range(data.draw(st.integers(1, 8))):
        age, date = data.draw(ages), data.draw(st.sampled_from(pool))
        response_time = float(data.draw(clocks)) + data.draw(st.sampled_from([0.0, 0.25, 0.999]))
        request_time = response_time - data.draw(st.sampled_from([0.0, 0.5, 3.0, -1.0]))
        got = initial_age(age, date, request_time, response_time)
        expected = reference_initial_age(age, date, request_time, response_time)
        assert got == expected and type(got) is type(expected), (age, date, request_time)


CC_ITEMS = [
    "public",
    "private",
    'private="x-secret"',
    "no-store",
    "no-cache",
    'no-cache="set-cookie"',
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "immutable",
    "max-age=0",
    "max-age=60",
    "max-age=-1",
    "max-age=abc",
    'max-age="30"',
    "max-age=99999999999",
    "s-maxage=0",
    "s-maxage=120",
    "stale-while-revalidate=30",
    "stale-if-error=600",
    "stale-while-revalidate=x",
    "",
    " ",
    "junk",
    "=",
    "max-age",
]
cc_lines = st.lists(st.sampled_from(CC_ITEMS), max_size=4).map(", ".join) | st.text(max_size=12)
vary_lines = st.sampled_from(["accept-encoding", "Accept-Encoding, Origin", "*", "", " , ", "origin"])
cdn_lines = st.sampled_from(["max-age=60", "no-store", "", "max-age=x", "s-maxage=5, public", "private"])
statuses = st.sampled_from([100, 200, 203, 204, 206, 299, 302, 304, 404, 416, 418, 500, 501, 599])


@given(st.data())
@settings(max_examples=400)
def test_every_decision_equals_the_rules_made_afresh(data: st.DataObject) -> None:
    # Responses that share their Cache-Control, Vary, status, ETag and Authorization (the memo's
    # key) but differ in everything else: dates in any form or none, Expires, Last-Modified, the
    # clock, CDN-Cache-Control, Set-Cookie and the zone's settings.
    cc_pool = data.draw(st.lists(cc_lines, min_size=1, max_size=3))
    status_pool = data.draw(st.lists(statuses, min_size=1, max_size=2))
    vary_pool = data.draw(
        st.lists(st.lists(vary_lines, max_size=1) | st.lists(vary_lines, max_size=2), min_size=1, max_size=3)
    )
    date_pool = data.draw(st.lists(date_values(), min_size=1, max_size=3))
    rarely = st.sampled_from([False, False, False, True])
    for _ in range(data.draw(st.integers(1, 16))):
        cache_control = data.draw(
            st.lists(st.sampled_from(cc_pool), min_size=1, max_size=1)
            | st.lists(st.sampled_from(cc_pool), max_size=2)
        )
        dated = st.sampled_from(date_pool)
        now = float(data.draw(st.integers(T - 10**6, T + 10**6)))
        args = (
            data.draw(st.sampled_from(status_pool)),
            cache_control,
            data.draw(st.lists(cdn_lines, max_size=2)) if data.draw(rarely) else [],
            data.draw(st.lists(dated, max_size=2)),
            data.draw(st.none() | dated),
            data.draw(st.none() | dated),
            data.draw(st.booleans()),
            data.draw(st.sampled_from(vary_pool)),
            data.draw(st.booleans()),
            data.draw(rarely),
            now,
            now - data.draw(st.sampled_from([0.0, 1.0, 100.0])),
            data.draw(st.booleans()),
            data.draw(st.sampled_from([0.1, 0.5])),
            data.draw(st.sampled_from([86400.0, 300.0])),
        )
        # _decide is the rules as decide_from_fields applied them before it had a memo.
        assert decide_from_fields(*args) == freshness._decide(*args), args


def fill(cache_control: str, last_modified: str | None, etag: bool = False) -> freshness.StorageDecision:
    now = float(T)
    return decide_from_fields(
        200,
        [cache_control],
        [],
        [],
        imf(T),
        last_modified,
        etag,
        [],
        False,
        False,
        now,
        now,
        False,
        0.1,
        86400.0,
    )


def test_a_decision_a_validator_decides_is_made_for_each_response() -> None:
    good, bad = imf(T - 1000), "not a date"
    assert fill("max-age=0, public", None, etag=True).storable
    assert fill("max-age=0, public", None).reason == "no-freshness"
    assert fill("max-age=0", good).storable
    assert fill("max-age=0", bad).reason == "no-freshness"
    assert fill("max-age=0", good).storable
    # Each order: a decision the validator made, remembered, would answer the other one wrongly.
    assert fill("no-cache, max-age=60", good).storable
    assert fill("no-cache, max-age=60", bad).reason == "no-validator"
    assert fill("no-cache, max-age=60", good).storable
    assert fill("public", good).freshness_lifetime == 100
    assert fill("public", imf(T - 5000)).freshness_lifetime == 500


def test_a_decision_read_from_the_fields_alone_is_the_same_for_every_date() -> None:
    first = fill("public, max-age=3600", imf(T - 1000))
    assert first.storable and first.freshness_lifetime == 3600
    assert fill("public, max-age=3600", "not a date") == first
    assert fill("public, max-age=3600", None, etag=True) == first
    assert fill("private, max-age=60", imf(T)).reason == "private"


def test_a_decision_read_from_the_fields_alone_is_remembered_and_the_last_date_kept() -> None:
    freshness._TIMELESS.clear()
    assert fill("public, max-age=7200", imf(T - 1000)).storable
    assert ("public, max-age=7200", None, 200, False, False) in freshness._TIMELESS
    assert fill("max-age=0", imf(T - 1000)).storable
    assert ("max-age=0", None, 200, False, False) not in freshness._TIMELESS
    assert dates.parse_http_date(imf(T)) == T and dates._last == (imf(T), T)
