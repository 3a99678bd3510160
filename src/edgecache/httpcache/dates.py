"""HTTP-date (RFC 9110 §5.6.7): parsed exactly, formatted as IMF-fixdate.

Rules of this module:
- Exactly three forms are dates: IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) and the obsolete
  RFC 850 (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime (``Sun Nov  6 08:49:37 1994``) forms that
  a recipient must accept. Names are case-sensitive (``%s`` in the grammar), digits are ASCII and
  fixed in number, separators are single spaces; the zone is the literal ``GMT``. Anything else
  (``UTC``, numeric zones, two-digit years outside RFC 850, dashes or dots elsewhere, one-digit
  hours) is not a date, and the caller applies its field's rule for invalid dates (an invalid
  Expires means already expired, RFC 9111 §5.3; an invalid If-Modified-Since is ignored, §13.1.3).
- A date must exist: hours 00-23, minutes 00-59, seconds 00-60 (the grammar's leap second), a real
  calendar day, and the day name of that day. A day name that contradicts the date shows a broken
  formatter, and trusting either half would be a guess.
- RFC 850's two-digit year is resolved by the 50-year rule of §5.6.7 against ``now``: a year more
  than 50 years ahead is the most recent past year with those two digits. Without ``now`` the clock
  is read, which happens only for this obsolete form.
- Parsing is memoised: validators and If-Modified-Since values repeat on every conditional hit. In
  front of that memo, the last value parsed and its result are kept as they are (unless the value
  is in the RFC 850 form, whose result depends on ``now``): an origin's Date changes once a second,
  so consecutive fills read the same one, and an equal string is then one comparison away.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from functools import lru_cache

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_WEEKDAYS = {name: i for names in (_DAYS, _LONG_DAYS) for i, name in enumerate(names)}

_DAY = "|".join(_DAYS)
_MONTH = "|".join(_MONTH_NAMES)
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(rf"({_DAY}), ([0-9]{{2}}) ({_MONTH}) ([0-9]{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"({'|'.join(_LONG_DAYS)}), ([0-9]{{2}})-({_MONTH})-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME = re.compile(rf"({_DAY}) ({_MONTH}) ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")

_MAX_DATE_LEN = 64
"""Longer than any HTTP-date form; longer values are rejected before parsing or caching."""

_TwoDigitYear = tuple[int, int, int, int, int, int, int]
"""An RFC 850 date before its century is known: (yy, month, day, hour, minute, second, weekday)."""


def parse_http_date(value: str, now: float | None = None) -> float | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7) to POSIX seconds; None when it is not one.

    ``now`` (POSIX seconds) resolves the two-digit year of the RFC 850 form; the clock when omitted.
    Surrounding spaces and tabs (the field's optional whitespace) are ignored; nothing else is.
    """
    global _last
    last = _last
    if value == last[0]:
        return last[1]
    stripped = value.strip(" \t")
    if len(stripped) > _MAX_DATE_LEN:
        return None
    parsed = _parse(stripped)
    if parsed is None or isinstance(parsed, float):
        # One tuple, swapped whole: a reader in another thread sees a value with its own result.
        _last = (value, parsed)
        return parsed
    yy, month, day, hour, minute, second, weekday = parsed
    this_year = time.gmtime(time.time() if now is None else now).tm_year
    year = this_year - this_year % 100 + yy
    if year > this_year + 50:
        year -= 100
    return _instant(year, month, day, hour, minute, second, weekday)


_last: tuple[str, float | None] = ("", None)
"""The last value ``parse_http_date`` read whose result does not depend on ``now``, and that result."""


@lru_cache(maxsize=1024)
def _parse(value: str) -> float | _TwoDigitYear | None:
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        wd, day, month, year, hour, minute, second = m.groups()
        return _instant(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), _WEEKDAYS[wd]
        )
    m = _ASCTIME.fullmatch(value)
    if m is not None:
        wd, month, day, hour, minute, second, year = m.groups()
        return _instant(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), _WEEKDAYS[wd]
        )
    m = _RFC850.fullmatch(value)
    if m is not None:
        wd, day, month, yy, hour, minute, second = m.groups()
        return (int(yy), _MONTHS[month], int(day), int(hour), int(minute), int(second), _WEEKDAYS[wd])
    return None


def _instant(
    year: int, month: int, day: int, hour: int, minute: int, second: int, weekday: int
) -> float | None:
    """POSIX seconds of a UTC calendar time, None if it does not exist or is not on ``weekday``."""
    if not (hour < 24 and minute < 60 and second <= 60):
        return None
    try:
        midnight = datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None
    if midnight.weekday() != weekday:
        return None
    return midnight.timestamp() + hour * 3600 + minute * 60 + second


def format_http_date(ts: float) -> str:
    """Format POSIX seconds as an IMF-fixdate (RFC 9110 §5.6.7), the only form a sender may generate."""
    return _format_second(int(ts // 1))


@lru_cache(maxsize=8)
def _format_second(second: int) -> str:
    # A server formats the current second over and over: a tiny memo turns that into a lookup.
    t = time.gmtime(second)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTH_NAMES[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
