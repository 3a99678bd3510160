"""The purge path's shortcuts give what the general code they replace gives (decision 0025's
addendum): a UTC time's text on SQLite is SQLAlchemy's, a job id is a version 4 UUID's hex, the
quotas' day turns at UTC midnight, a ledger row's selectors are compact JSON, and the control
listener leaves to aiohttp exactly the heads with a control byte, a non-ASCII byte or a folded
line."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from edgecache.api.control_listener import _fields
from edgecache.config import Quota, Zone
from edgecache.control.purges import new_job_id
from edgecache.control.quotas import QuotaExceeded, QuotaService
from edgecache.db.ledger import compact_json
from edgecache.db.schema import UTCDateTime, sqlite_utc_text

_DIALECT = sqlite.dialect()
_SQLALCHEMY = UTCDateTime().impl.dialect_impl(_DIALECT).bind_processor(_DIALECT)

offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)),
)
aware = st.datetimes(timezones=st.one_of(st.just(UTC), offsets))


def _sqlalchemy_text(value: datetime) -> str:
    assert _SQLALCHEMY is not None
    return str(_SQLALCHEMY(UTCDateTime().process_bind_param(value, _DIALECT)))


@given(st.lists(aware, min_size=1, max_size=4))
def test_a_utc_times_text_on_sqlite_is_sqlalchemys(values: list[datetime]) -> None:
    for value in values + values[::-1]:  # the same value again, and others in between
        try:
            expected = _sqlalchemy_text(value)
        except OverflowError:
            continue  # an instant outside the years 1-9999 once in UTC: neither binds it
        assert sqlite_utc_text(value) == expected


def test_a_naive_time_is_refused_and_none_stays_none() -> None:
    try:
        sqlite_utc_text(datetime(2026, 12, 1, 12, 0))
    except ValueError:
        pass
    else:
        raise AssertionError("a naive time was bound")
    assert sqlite_utc_text(None) is None


def test_job_ids_are_version_4_uuids_hex() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", job_id)
        parsed = uuid.UUID(hex=job_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, job_id)


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_the_daily_quota_turns_at_utc_midnight() -> None:
    zone = Zone(
        id="b" * 32,
        name="example.com",
        hostnames=("example.com",),
        origin="http://127.0.0.1:1",
        quotas={"purge_cache_tag": Quota(batch=10, daily=2)},
    )
    reads: list[datetime] = []

    def count_since(zone_id: str, kind: str, type_: str, since: datetime) -> int:
        reads.append(since)
        return 0

    clock = _Clock(datetime(2026, 12, 1, 23, 59, 59, 999_998, tzinfo=UTC))
    quotas = QuotaService(count_since, clock)
    quotas.charge(zone, {"purge_cache_tag": 1})
    yesterdays = quotas.charge(zone, {"purge_cache_tag": 1})
    clock.now += timedelta(microseconds=1)  # still the same day
    try:
        quotas.charge(zone, {"purge_cache_tag": 1})
    except QuotaExceeded as exc:
        assert exc.kind == "daily"
    else:
        raise AssertionError("a third tag purge passed a daily quota of two")
    clock.now += timedelta(microseconds=1)  # midnight: a new day, its usage read again
    quotas.charge(zone, {"purge_cache_tag": 1})
    yesterdays()  # given back after midnight: yesterday's count, not today's
    quotas.charge(zone, {"purge_cache_tag": 1})
    assert quotas.state(zone, "purge_cache_tag").daily_available == 0
    assert reads == [datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)]


_HEAD = (
    b"POST /client/v4/zones/" + b"b" * 32 + b"/purge_cache HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nX-Extra: %s\r\nContent-Length: 2\r\n\r\n"
)


@given(st.binary(max_size=8).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_a_head_with_an_odd_byte_is_left_to_aiohttp(value: bytes) -> None:
    head = _HEAD % (b"v" + value + b"v")
    odd = any((b < 0x20 and b != 0x09) or b >= 0x7F for b in value)
    assert (_fields(head) is None) == odd


def test_a_folded_line_is_left_to_aiohttp() -> None:
    assert _fields(_HEAD % b"v") is not None
    assert _fields(_HEAD % b"v\r\n folded") is None
    assert _fields(_HEAD % b"v\r\n\tfolded") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_a_ledger_rows_selectors_are_stored_as_compact_json(selectors: dict[str, object]) -> None:
    assert compact_json(selectors) == json.dumps(selectors, separators=(",", ":"))
