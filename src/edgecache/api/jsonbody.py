"""Request bodies as JSON, read the same way by every dialect.

Rules: a body is accepted only when it is one JSON document that the rest of the control plane can
hold. Two things the standard parser lets through, or fails on with something other than a
``ValueError``, are refused here: nesting deeper than :data:`MAX_DEPTH` (the parser recurses; at
about a thousand levels it raises ``RecursionError``), and strings with a lone surrogate
(``"\\ud800"``), valid JSON escapes that are not Unicode characters, so no database column, cache key
or HTTP field can store them. Callers map :class:`BadJson` onto their own error code.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Deeper than any request of either dialect (CreatePurgeTask nests three levels)."""


class BadJson(ValueError):
    """The body is not one well-formed JSON document; ``str()`` says why."""


def load_json(raw: bytes) -> Any:
    """Parse a request body; an empty (or blank) body is an empty object."""
    if not raw.strip():
        return {}
    # An ASCII byte then a non-NUL one is what json.detect_encoding calls UTF-8 (no BOM starts
    # with an ASCII byte, and UTF-16 and UTF-32 put a NUL in the first two): its Python call spared
    # for every usual body.
    encoding = "utf-8" if 0 < raw[0] < 0x80 and raw[1:2] != b"\0" else json.detect_encoding(raw)
    try:
        # What ``json.loads(raw, parse_constant=_constant)`` does, without building a decoder for
        # every body.
        value = _DECODER.decode(raw.decode(encoding, "surrogatepass"))
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except BadJson:
        raise
    except ValueError as exc:
        raise BadJson(f"not valid JSON: {exc}") from None
    if not _plain(raw, encoding):
        _check(value)
    return value


def _plain(raw: bytes, encoding: str) -> bool:
    """Whether a UTF-8 body certainly passes :func:`_check`, from its bytes alone: a document cannot
    nest deeper than it has opening brackets, and holds a surrogate only through a ``\\u`` escape
    or a surrogate's UTF-8 encoding (lead byte ``0xED``, which ``surrogatepass`` decodes). Searches
    in C of the few hundred bytes of a purge, instead of a walk of the document in Python; a body
    with any escape ``\\u`` or byte ``0xED`` (non-ASCII text may have them) is walked."""
    return (
        encoding == "utf-8"
        and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH
        and b"\\u" not in raw
        and b"\xed" not in raw
    )


def _constant(name: str) -> Any:
    # The parser accepts NaN and Infinity, which RFC 8259 does not.
    raise BadJson(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_constant)


def _check(value: Any) -> None:
    # Iterative, so that checking cannot hit the recursion limit that parsing just escaped.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _unicode(item)
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _unicode(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJson("a JSON string holds a lone surrogate (\\ud800 to \\udfff), not a character") from None
