"""Byte range requests served from a stored full response (RFC 9110 §14).

Rules of this module:
- Only the ``bytes`` unit is understood (compared case-insensitively, §14.1); any other unit, or a
  syntactically invalid range set, means the Range field is ignored and the full response is served.
- Ranges are inclusive ``(first, last)`` pairs, clamped to the representation and returned in the order
  requested. A range that starts at or past the end is unsatisfiable; when all are, the answer is 416.
- To resist abuse (§14.2 permits ignoring such requests), a set with more than 16 ranges or with
  overlapping satisfiable ranges is treated as invalid: the full response is served once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

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


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range value for one satisfied range (RFC 9110 §14.4)."""
    return f"bytes {start}-{end}/{size}"


def unsatisfied_range(size: int) -> str:
    """The Content-Range value of a 416 response (RFC 9110 §14.4, §15.5.17)."""
    return f"bytes */{size}"


def multipart_byteranges(
    body: bytes, ranges: Sequence[tuple[int, int]], content_type: str | None, size: int
) -> tuple[bytes, str]:
    """The body and Content-Type of a multipart/byteranges 206 response (RFC 9110 §14.6).

    ``body`` is the full representation. The boundary is 128 random bits, so it cannot be predicted by
    whoever chose the content and a collision with it is negligible.
    """
    boundary = secrets.token_hex(16)
    type_line = f"Content-Type: {content_type}\r\n" if content_type else ""
    chunks: list[bytes] = []
    for start, end in ranges:
        part_head = f"--{boundary}\r\n{type_line}Content-Range: {content_range(start, end, size)}\r\n\r\n"
        chunks.append(part_head.encode("latin-1"))
        chunks.append(body[start : end + 1])
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), f"multipart/byteranges; boundary={boundary}"
