"""Surrogate keys (cache tags): the names a response is filed under for purge-by-tag.

Rules of this module:
- Four response fields carry tags: Cache-Tag and Edge-Cache-Tag (comma-separated), Surrogate-Key
  (space-separated) and xkey (space- or comma-separated).
- Tags are trimmed and lower-cased on both sides (store and purge), so purging ``Blog`` hits ``blog``.
- Limits follow Cloudflare: a tag longer than 1024 characters is dropped; once the tags kept so far
  would exceed 16 KiB in aggregate (UTF-8 bytes plus one separator each), later tags are not added.
  Duplicates are removed, keeping first-seen order across all fields; they count once.
- Parsing is memoised per distinct list of tag fields that is short, in fields and in characters
  of names and values together (every fill parses its response's tags, and many responses carry
  the same few), as ``cachecontrol`` memoises its values: the result is a tuple of strings, so
  sharing it is safe, and the memo is bounded and emptied when full (``edgecache.httpcache.memo``),
  so an origin cannot grow it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from edgecache.httpcache.memo import remember

TAG_HEADERS = frozenset({"cache-tag", "surrogate-key", "xkey", "edge-cache-tag"})
MAX_TAG_LENGTH = 1024
MAX_AGGREGATE_BYTES = 16 * 1024
MEMO_MAX = 1024
"""Distinct lists of tag fields remembered before the memo is emptied."""
MEMO_VALUE_MAX = 256
"""Lists whose names and values add up to more characters are parsed each time."""
MEMO_FIELDS_MAX = 8
"""Lists of more fields are parsed each time (each would hold a key of that many tuples)."""
_MEMO: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = {}


def normalise_tag(tag: str) -> str:
    """The canonical form of a tag, as stored and as matched by a purge."""
    return tag.strip().lower()


def _split(name: str, value: str) -> list[str]:
    if name == "surrogate-key":
        return value.split()
    if name == "xkey":
        return value.replace(",", " ").split()
    return value.split(",")


def parse_tags(response_headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The normalised tags of a response, in first-seen order, within the length limits."""
    fields = tuple(response_headers)
    tags = _MEMO.get(fields)
    if tags is None:
        tags = _parse(fields)
        if len(fields) <= MEMO_FIELDS_MAX and sum(len(n) + len(v) for n, v in fields) <= MEMO_VALUE_MAX:
            remember(_MEMO, fields, tags, MEMO_MAX)
    return tags


def _parse(response_headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    kept: dict[str, None] = {}
    total = 0
    for name, value in response_headers:
        n = name.lower()
        if n not in TAG_HEADERS:
            continue
        for raw in _split(n, value):
            tag = raw.strip().lower()
            if not tag or tag in kept or len(tag) > MAX_TAG_LENGTH:
                continue
            cost = (len(tag) if tag.isascii() else len(tag.encode())) + 1
            if total + cost > MAX_AGGREGATE_BYTES:
                return tuple(kept)
            total += cost
            # Interned: a cache holds the same few tags on many entries; one string each saves
            # ~50 bytes per tag per entry and makes the tier's tag index share them too.
            kept[sys.intern(tag)] = None
    return tuple(kept)
