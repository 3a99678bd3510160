"""Byte range requests served from stored responses, and the partial responses the cache stores
(RFC 9110 §14, RFC 9111 §3.3, §3.4).

Rules of this module:
- Only the ``bytes`` unit is understood (compared case-insensitively, §14.1); any other unit, or a
  syntactically invalid range set, means the Range field is ignored and the full response is served.
- Ranges are inclusive ``(first, last)`` pairs, clamped to the representation and returned in the order
  requested. A range that starts at or past the end is unsatisfiable; when all are, the answer is 416.
- To resist abuse (§14.2 permits ignoring such requests), a set with more than 16 ranges or with
  overlapping satisfiable ranges is treated as invalid: the full response is served once.
- A 206 can be stored only when its Content-Range places it exactly: one ``bytes first-last/length``
  with a known complete length (§14.4). A multipart/byteranges 206 is relayed, never stored.
- Two partial responses are combined only when they share a strong validator (RFC 9111 §3.4): a
  strong ETag, or, without an ETag, a Last-Modified at least 60 seconds older than the response's
  Date (RFC 9110 §8.8.2.2).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Literal

from edgecache.httpcache.dates import parse_http_date

MAX_RANGES = 16
_HUGE = 10**18
"""Stands in for positions too long for int() to parse; past any representation we could store."""


def _position(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    return _HUGE if len(text) > 18 else int(text)


def parse_range(value: str, size: int) -> list[tuple[int, int]] | Literal["unsatisfiable"] | None:
    """Parse a Range field against a representation of ``size`` bytes (RFC 9110 §14.1.1, §14.1.2, §14.2).

    Returns the satisfiable ranges, "unsatisfiable" when there is none (→ 416), or None when the field
    is to be ignored (→ 200 with the full representation).
    """
    v = value.strip()
    if v[:6].lower() != "bytes=":
        return None
    specs = [s.strip() for s in v[6:].split(",")]
    specs = [s for s in specs if s]
    if not specs or len(specs) > MAX_RANGES:
        return None
    out: list[tuple[int, int]] = []
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if not first_text:
            suffix = _position(last_text)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                out.append((max(0, size - suffix), size - 1))
            continue
        first = _position(first_text)
        if first is None:
            return None
        if last_text:
            last = _position(last_text)
            if last is None or last < first:
                return None
        else:
            last = size - 1
        if first < size:
            out.append((first, min(last, size - 1)))
    if not out:
        return "unsatisfiable"
    ordered = sorted(out)
    for (_, prev_last), (first, _) in pairwise(ordered):
        if first <= prev_last:
            return None
    return out


def single_range(value: str) -> str | None:
    """The Range field to send to the origin for a client's Range, when it asks for one range.

    ``bytes=first-last``, ``bytes=first-`` and ``bytes=-suffix`` are passed on normalised (unit
    case, whitespace); anything else (several ranges, other units, invalid syntax) is None.
    """
    v = value.strip()
    if v[:6].lower() != "bytes=":
        return None
    spec = v[6:].strip()
    first_text, dash, last_text = spec.partition("-")
    if not dash or "," in spec:
        return None
    first = _position(first_text) if first_text else None
    last = _position(last_text) if last_text else None
    if (first_text and first is None) or (last_text and last is None):
        return None
    if first is None and not last:
        return None
    if first is not None and last is not None and last < first:
        return None
    return f"bytes={first_text}-{last_text}"


def parse_content_range(value: str) -> tuple[int, int, int] | None:
    """(first, last, complete length) of a Content-Range that places a 206's body (RFC 9110 §14.4).

    None for anything the cache cannot place: an unknown complete length (``*``), a range outside
    the representation, another unit, or invalid syntax.
    """
    v = value.strip()
    if v[:6].lower() != "bytes ":
        return None
    span, slash, complete = v[6:].strip().partition("/")
    first_text, dash, last_text = span.partition("-")
    if not (slash and dash):
        return None
    first, last, length = _position(first_text), _position(last_text), _position(complete)
    if first is None or last is None or length is None or not first <= last < length < _HUGE:
        return None
    return first, last, length


def strong_validator(etag: str | None, last_modified: str | None, date: str | None) -> str | None:
    """The strong validator two partial responses must share to be combined (RFC 9111 §3.4).

    A strong ETag; without an ETag, a Last-Modified that is at least 60 seconds older than the Date
    (RFC 9110 §8.8.2.2). None when the response has no strong validator, so it is never combined.
    """
    if etag is not None:
        tag = etag.strip()
        return "etag " + tag if tag[:1] == '"' else None
    if last_modified is None or date is None:
        return None
    modified, sent = parse_http_date(last_modified), parse_http_date(date)
    if modified is None or sent is None or sent - modified < 60:
        return None
    return f"lm {modified:.0f}"


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range value for one satisfied range (RFC 9110 §14.4)."""
    return f"bytes {start}-{end}/{size}"


def unsatisfied_range(size: int) -> str:
    """The Content-Range value of a 416 response (RFC 9110 §14.4, §15.5.17)."""
    return f"bytes */{size}"


def multipart_byteranges(
    slice_of: Callable[[int, int], bytes],
    ranges: Sequence[tuple[int, int]],
    content_type: str | None,
    size: int,
) -> tuple[bytes, str]:
    """The body and Content-Type of a multipart/byteranges 206 response (RFC 9110 §14.6).

    ``slice_of(first, last)`` gives the representation's bytes first..last (inclusive), from a full
    entry or from stored parts. The boundary is 128 random bits, so it cannot be predicted by whoever
    chose the content and a collision with it is negligible.
    """
    boundary = secrets.token_hex(16)
    type_line = f"Content-Type: {content_type}\r\n" if content_type else ""
    chunks: list[bytes] = []
    for start, end in ranges:
        part_head = f"--{boundary}\r\n{type_line}Content-Range: {content_range(start, end, size)}\r\n\r\n"
        chunks.append(part_head.encode("latin-1"))
        chunks.append(slice_of(start, end))
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), f"multipart/byteranges; boundary={boundary}"
