"""Whether a shared cache may store a response, for how long it is fresh, and how old it already is.

Rules of this module:
- We are a shared cache (RFC 9111 §3) and a CDN (RFC 9213): CDN-Cache-Control, when present, valid and
  non-empty, replaces Cache-Control *and* Expires entirely for this response (RFC 9213 §2.2); the
  directives below (no-store, private, no-cache, max-age, stale-*) are then read from it.
- Only GET responses are stored; HEAD is answered from a stored GET, never stored itself.
- Never 1xx, 304 or 416 (which answers the request's Range, not the URL). A 206 is judged like any
  response here; whether its body can be placed in the representation (Content-Range) is the
  caller's question (RFC 9111 §3.3).
- A stored response must be usable: one with zero freshness, no validator and no permission to be served
  stale ("no-freshness"), or one marked no-cache that has no validator ("no-validator"), would cost a
  write and then be refetched in full on every use, so it is not stored.
- Times are POSIX seconds (floats) passed in by the caller; nothing here reads the clock.
- HTTP dates are parsed exactly (``dates``). An Expires that is not a date, or several Expires fields
  that disagree, mean "already expired" (RFC 9111 §5.3); an invalid Date counts as the response time,
  an invalid Last-Modified as none.
- A decision that reads no time (a lifetime from s-maxage or max-age, or a refusal made before the
  dates) is remembered per the fields that decide it; every other one is made afresh. Either way
  it is the same decision (``decide_from_fields``, ``_reads_no_time``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from edgecache.httpcache.cachecontrol import (
    DELTA_MAX,
    MEMO_VALUE_MAX,
    CacheControl,
    parse_cache_control,
    parse_cdn_cache_control,
)
from edgecache.httpcache.dates import parse_http_date
from edgecache.httpcache.memo import remember

HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""Status codes that are heuristically cacheable by default (RFC 9110 §15.1)."""

UNDERSTOOD_STATUSES = frozenset(
    {*range(200, 207), *range(300, 306), 307, 308, *range(400, 418), 421, 422, 426, *range(500, 506)}
)
"""The final status codes whose semantics RFC 9110 §15 defines and this cache honours; only these
may be stored under ``must-understand`` (RFC 9111 §5.2.2.3). Without it, any final code is stored
with explicit freshness or ``public``; only ``HEURISTIC_STATUSES`` are heuristically cacheable."""


@dataclass(frozen=True, slots=True)
class StorageDecision:
    """The outcome of :func:`decide_storage`: whether to store, and the policy to store with."""

    storable: bool
    reason: str
    """A short token saying why the response is not storable; "" when it is."""
    freshness_lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    must_revalidate: bool
    """must-revalidate, proxy-revalidate or s-maxage: never served stale (RFC 9111 §4.2.4, §5.2.2.10)."""
    no_cache: bool
    """Stored, but validated with the origin before every use (RFC 9111 §5.2.2.4)."""
    auth_ok: bool
    """May be reused for requests carrying Authorization (RFC 9111 §3.5)."""
    vary: tuple[str, ...]
    """Lower-cased field names from Vary, deduplicated and sorted."""


@cache
def _refuse(reason: str) -> StorageDecision:
    # One object per reason (a handful of constants): refusals are immutable and repeat.
    return StorageDecision(False, reason, 0.0, 0.0, 0.0, False, False, False, ())


def decide_storage(
    *,
    method: str,
    status: int,
    request_headers: Mapping[str, str],
    response_headers: Sequence[tuple[str, str]],
    now: float,
    response_time: float,
    cache_set_cookie: bool = False,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> StorageDecision:
    """Decide whether a shared cache may store a response, and compute its freshness policy.

    RFC 9111 §3 (storing responses), §3.5 (Authorization), §4.1 (Vary: * never matches), §4.2.1
    (freshness lifetime: s-maxage, max-age, Expires - Date), §4.2.2 (heuristic freshness, only for the
    heuristically cacheable statuses of RFC 9110 §15.1 or with ``public``), RFC 9213 (CDN-Cache-Control
    takes precedence), RFC 5861 (stale-while-revalidate, stale-if-error).

    ``now`` is when the decision is made: an Expires at or before it gives a lifetime of 0. A missing or
    invalid Date counts as ``response_time``. ``Set-Cookie`` prevents storage unless ``cache_set_cookie``.
    """
    if method != "GET":
        return _refuse("method")
    cc_lines: list[str] = []
    cdn_lines: list[str] = []
    expires: list[str] = []
    date = last_modified = None
    etag = False
    vary_lines: list[str] = []
    set_cookie = False
    for name, value in response_headers:
        n = name.lower()
        if n == "cache-control":
            cc_lines.append(value)
        elif n == "cdn-cache-control":
            cdn_lines.append(value)
        elif n == "expires":
            expires.append(value)
        elif n == "date":
            date = value if date is None else date
        elif n == "last-modified":
            last_modified = value if last_modified is None else last_modified
        elif n == "etag":
            etag = True
        elif n == "vary":
            vary_lines.append(value)
        elif n == "set-cookie":
            set_cookie = True
    return decide_from_fields(
        status,
        cache_control=cc_lines,
        cdn_cache_control=cdn_lines,
        expires=expires,
        date=date,
        last_modified=last_modified,
        etag=etag,
        vary=vary_lines,
        set_cookie=set_cookie,
        authorization="authorization" in request_headers,
        now=now,
        response_time=response_time,
        cache_set_cookie=cache_set_cookie,
        heuristic_fraction=heuristic_fraction,
        heuristic_max=heuristic_max,
    )


def decide_from_fields(
    status: int,
    cache_control: list[str],
    cdn_cache_control: list[str],
    expires: list[str],
    date: str | None,
    last_modified: str | None,
    etag: bool,
    vary: list[str],
    set_cookie: bool,
    authorization: bool,
    now: float,
    response_time: float,
    cache_set_cookie: bool,
    heuristic_fraction: float,
    heuristic_max: float,
) -> StorageDecision:
    """:func:`decide_storage` for a GET, from the response fields it reads, already gathered by a
    caller that passes over the fields anyway (the fill does): every Cache-Control, CDN-Cache-Control,
    Expires and Vary line, the first Date and Last-Modified, whether an ETag or a Set-Cookie was
    sent; ``authorization`` says whether the request carried one. Not keyword-only: the fill calls
    it positionally (keywords cost more on every miss)."""
    # An origin sends the same Cache-Control on every response, and most decisions read no time:
    # a lifetime from s-maxage or max-age, or a refusal before the dates. Those are remembered per
    # the fields that do decide them (the shape below: one Cache-Control line, at most one Vary
    # line, no CDN-Cache-Control or Set-Cookie), so a repeat skips the parses and the arithmetic.
    if len(cache_control) == 1 and not cdn_cache_control and not set_cookie and len(vary) < 2:
        key = (cache_control[0], vary[0] if vary else None, status, etag, authorization)
        decision = _TIMELESS.get(key)
        if decision is None:
            decision = _decide(
                status, cache_control, cdn_cache_control, expires, date, last_modified, etag, vary,
                set_cookie, authorization, now, response_time, cache_set_cookie, heuristic_fraction,
                heuristic_max,
            )  # fmt: skip
            if _reads_no_time(decision, parse_cache_control(cache_control), etag) and all(
                len(part) <= MEMO_VALUE_MAX for part in cache_control + vary
            ):
                remember(_TIMELESS, key, decision, _DECISIONS_MAX)
        return decision
    return _decide(
        status, cache_control, cdn_cache_control, expires, date, last_modified, etag, vary,
        set_cookie, authorization, now, response_time, cache_set_cookie, heuristic_fraction,
        heuristic_max,
    )  # fmt: skip


_EARLY_REFUSALS = frozenset({"must-understand", "no-store", "private", "authorization", "vary-star"})
"""The refusals ``_decide`` makes before it reads Date, Last-Modified, Expires or the clock."""


def _reads_no_time(decision: StorageDecision, cc: CacheControl, etag: bool) -> bool:
    """Whether ``_decide`` reached ``decision`` for a response of the memo's shape without what the
    memo's key leaves out: Expires, Date, Last-Modified, the clock, the heuristic's settings.

    Sound, not complete (a decision it does not vouch for is made again each time): an early
    refusal; or a lifetime from s-maxage or max-age (Expires and the heuristic are then not read)
    where Last-Modified's only use, as a validator, cannot matter: an ETag was sent, or the
    response is stored with a positive lifetime and no no-cache, which the validator's two
    refusals (no-validator, no-freshness) both need.
    """
    if not decision.storable:
        return decision.reason in _EARLY_REFUSALS
    if cc.s_maxage is None and cc.max_age is None:
        return False
    return etag or (not decision.no_cache and decision.freshness_lifetime > 0)


def _decide(
    status: int,
    cache_control: list[str],
    cdn_cache_control: list[str],
    expires: list[str],
    date: str | None,
    last_modified: str | None,
    etag: bool,
    vary: list[str],
    set_cookie: bool,
    authorization: bool,
    now: float,
    response_time: float,
    cache_set_cookie: bool,
    heuristic_fraction: float,
    heuristic_max: float,
) -> StorageDecision:
    """:func:`decide_from_fields` without its memo: every rule, every time."""
    if status < 200 or status == 304 or status == 416:
        return _refuse("status")
    cdn = parse_cdn_cache_control(", ".join(cdn_cache_control)) if cdn_cache_control else None
    cc: CacheControl = cdn if cdn is not None else parse_cache_control(cache_control)

    if cc.must_understand:
        # RFC 9111 §5.2.2.3: store only a status we understand, and then no-store (which origins
        # send alongside for caches that do not know must-understand) is ignored.
        if status not in UNDERSTOOD_STATUSES:
            return _refuse("must-understand")
    elif cc.no_store:
        return _refuse("no-store")
    if cc.private:
        return _refuse("private")
    auth_ok = cc.public or cc.s_maxage is not None or cc.must_revalidate
    if authorization and not auth_ok:
        return _refuse("authorization")
    if set_cookie and not cache_set_cookie:
        return _refuse("set-cookie")
    names = _vary_names(vary)
    if "*" in names:
        return _refuse("vary-star")

    date_value = parse_http_date(date, now) if date is not None else None
    if date_value is None:
        date_value = response_time
    lm_value = parse_http_date(last_modified, now) if last_modified is not None else None

    lifetime: float
    if cc.s_maxage is not None:
        lifetime = cc.s_maxage
    elif cc.max_age is not None:
        lifetime = cc.max_age
    elif expires and cdn is None:
        lifetime = _expires_lifetime(expires, date_value, now)
    elif status in HEURISTIC_STATUSES or cc.public:
        lifetime = heuristic_lifetime(date_value, lm_value, heuristic_fraction, heuristic_max)
    else:
        return _refuse("status")

    has_validator = etag or lm_value is not None
    must_revalidate = cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None
    if cc.no_cache and not has_validator:
        return _refuse("no-validator")
    swr = float(cc.stale_while_revalidate or 0)
    sie = float(cc.stale_if_error or 0)
    may_serve_stale = not must_revalidate and not cc.no_cache and (swr > 0 or sie > 0)
    if lifetime <= 0 and not has_validator and not may_serve_stale:
        return _refuse("no-freshness")
    # Decisions repeat (an origin sends the same directives on every response) and are immutable:
    # one object per distinct outcome rather than a frozen dataclass built on every miss.
    outcome = (float(lifetime), swr, sie, must_revalidate, cc.no_cache, auth_ok, names)
    decision = _DECISIONS.get(outcome)
    if decision is None:
        decision = StorageDecision(True, "", *outcome)
        if len(_DECISIONS) >= _DECISIONS_MAX:
            _DECISIONS.clear()
        _DECISIONS[outcome] = decision
    return decision


_DECISIONS: dict[tuple[float, float, float, bool, bool, bool, tuple[str, ...]], StorageDecision] = {}
_DECISIONS_MAX = 1024
_TIMELESS: dict[tuple[str, str | None, int, bool, bool], StorageDecision] = {}
"""``decide_from_fields``' memo: (Cache-Control, Vary or None, status, ETag sent, Authorization
sent) → the decision, for the decisions ``_reads_no_time`` vouches for."""


def _vary_names(lines: list[str]) -> tuple[str, ...]:
    """Vary field names (RFC 9110 §12.5.5), lower-cased, deduplicated and sorted."""
    if not lines:
        return ()
    names = {part.strip().lower() for line in lines for part in line.split(",")}
    names.discard("")
    return tuple(sorted(names))


def _expires_lifetime(expires: list[str], date_value: float, now: float) -> float:
    """Expires - Date (RFC 9111 §4.2.1); an invalid Expires, or one already past, means stale (§5.3).

    Expires is a singleton field (RFC 9110 §5.5): several fields with different values are invalid.
    """
    if any(value.strip(" \t") != expires[0].strip(" \t") for value in expires):
        return 0.0
    value = parse_http_date(expires[0], now)
    if value is None or value <= now:
        return 0.0
    return min(max(0.0, value - date_value), float(DELTA_MAX))


def heuristic_lifetime(
    date_value: float, last_modified: float | None, fraction: float, maximum: float
) -> float:
    """A fraction of the time since Last-Modified, capped (RFC 9111 §4.2.2); 0 without Last-Modified."""
    if last_modified is None:
        return 0.0
    return min(max(0.0, (date_value - last_modified) * fraction), maximum)


def initial_age(
    age_header: str | None, date_header: str | None, request_time: float, response_time: float
) -> float:
    """corrected_initial_age of RFC 9111 §4.2.3, computed once when the response is received.

    The Age value is the first member if the field was repeated; an invalid Age counts as 0 and an
    invalid or missing Date gives no apparent age. Not keyword-only: the fill calls it positionally,
    and its maxima are comparisons rather than ``max()`` calls (each costs more on every miss).
    """
    age_value = 0
    if age_header:
        first = age_header.split(",", 1)[0].strip()
        if first.isascii() and first.isdigit():
            age_value = DELTA_MAX if len(first) > 10 else min(int(first), DELTA_MAX)
    apparent_age = 0.0
    if date_header:
        date_value = parse_http_date(date_header, response_time)
        if date_value is not None and response_time - date_value > 0.0:
            apparent_age = response_time - date_value
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay if response_delay > 0.0 else age_value + 0.0
    return corrected_age_value if corrected_age_value > apparent_age else apparent_age
