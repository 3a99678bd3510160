"""Conditional requests answered from a stored response (RFC 9110 §13).

Rules of this module:
- Preconditions are evaluated in exactly the order of RFC 9110 §13.2.2; a later step never overrides
  an earlier one.
- If-Match and If-Range use strong comparison, If-None-Match weak comparison (§8.8.3.2).
- A date field that is not a valid HTTP-date is ignored, as is a date condition when the stored response
  has no Last-Modified (§13.1.3, §13.1.4): we cannot prove the condition false, so we serve normally.
- Entity-tag lists are scanned quote-aware (an opaque-tag may contain commas); a malformed member is
  compared as the raw text, so it can only match an equally malformed stored ETag.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from edgecache.httpcache.dates import parse_http_date

_NO_PRECONDITIONS = frozenset({"CONNECT", "OPTIONS", "TRACE"})


def _split_etag(tag: str) -> tuple[bool, str]:
    """(weak, opaque-tag) of one entity-tag (RFC 9110 §8.8.3)."""
    tag = tag.strip()
    if tag[:2] == "W/":
        return True, tag[2:]
    return False, tag


def _etag_list(value: str) -> Iterator[tuple[bool, str]]:
    """The (weak, opaque-tag) members of an entity-tag list (RFC 9110 §13.1.1, §13.1.2)."""
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t,":
            i += 1
            continue
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i < n and value[i] == '"':
            # etagc excludes DQUOTE, so the next one closes the tag.
            j = value.find('"', i + 1)
            end = n if j < 0 else j + 1
            yield weak, value[i:end]
            i = end
        else:
            j = value.find(",", i)
            end = n if j < 0 else j
            yield weak, value[i:end].strip()
            i = end


def _matches(value: str, etag: str | None, *, strong: bool) -> bool:
    """Whether any member of an entity-tag list matches ``etag`` (RFC 9110 §8.8.3.2)."""
    if etag is None:
        return False
    stored_weak, stored = _split_etag(etag)
    if strong and stored_weak:
        return False
    return any(opaque == stored and not (strong and weak) for weak, opaque in _etag_list(value))


def _date_condition(value: str, last_modified: str | None) -> float | None:
    """Last-Modified minus the field's date, or None when either is missing or invalid."""
    if last_modified is None:
        return None
    since = parse_http_date(value)
    if since is None:
        return None
    modified = parse_http_date(last_modified)
    return None if modified is None else modified - since


def evaluate_preconditions(
    method: str, headers: Mapping[str, str], etag: str | None, last_modified: str | None
) -> int | None:
    """Evaluate If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since against a stored response.

    RFC 9110 §13.2.2, in order: (1) If-Match false → 412; (2) else If-Unmodified-Since false → 412;
    (3) If-None-Match false → 304 for GET/HEAD, 412 otherwise; (4) for GET/HEAD without If-None-Match,
    If-Modified-Since false → 304. Returns None when the request is to be served normally. "*" in
    If-Match / If-None-Match matches because a stored response is a current representation.
    """
    if method in _NO_PRECONDITIONS:
        return None
    if_match = headers.get("if-match")
    if if_match is not None:
        if if_match.strip() != "*" and not _matches(if_match, etag, strong=True):
            return 412
    else:
        ius = headers.get("if-unmodified-since")
        if ius is not None:
            delta = _date_condition(ius, last_modified)
            if delta is not None and delta > 0:
                return 412
    get_or_head = method == "GET" or method == "HEAD"
    inm = headers.get("if-none-match")
    if inm is not None:
        if inm == etag or inm.strip() == "*" or _matches(inm, etag, strong=False):
            return 304 if get_or_head else 412
        return None
    if get_or_head:
        ims = headers.get("if-modified-since")
        if ims is not None:
            delta = _date_condition(ims, last_modified)
            if delta is not None and delta <= 0:
                return 304
    return None


def if_range_allows(value: str, etag: str | None, last_modified: str | None) -> bool:
    """Whether an If-Range condition holds, so the Range may be honoured (RFC 9110 §13.1.5).

    An entity-tag must match strongly (a weak tag never does); an HTTP-date must equal Last-Modified.
    """
    v = value.strip()
    if v[:1] == '"' or v[:2] == "W/":
        if etag is None or v[:2] == "W/":
            return False
        stored_weak, stored = _split_etag(etag)
        return not stored_weak and v == stored
    if last_modified is None:
        return False
    since = parse_http_date(v)
    return since is not None and since == parse_http_date(last_modified)
