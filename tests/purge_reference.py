"""What a purge covers, written from the documented rules alone (``edgecache.purge.selectors``'s
module docstring, Cloudflare's purge documentation, RFC 3986 for paths), without ``purge.matches``
or the selector classes: the oracle the property tests hold the engine against.

A selector is given as the user typed it, ``(kind, value)``; this module does its own
normalisation, so a rule the selector constructors or ``matches`` drop shows up as a difference.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

from edgecache.purge import Everything, Host, Prefix, Selector, Tag, Url

KINDS = ("url", "tag", "host tag", "host", "prefix", "everything")
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, step by step as the RFC writes it (input buffer, output buffer)."""
    given, out = path, ""
    while given:
        if given.startswith("../"):
            given = given[3:]
        elif given.startswith("./"):
            given = given[2:]
        elif given.startswith("/./"):
            given = "/" + given[3:]
        elif given == "/.":
            given = "/"
        elif given.startswith("/../") or given == "/..":
            given = "/" + given[4:]
            out = out[: out.rfind("/")] if "/" in out else ""
        elif given in (".", ".."):
            given = ""
        else:
            end = given.find("/", 1)
            end = len(given) if end < 0 else end
            out, given = out + given[:end], given[end:]
    return out


def normal_path(path: str) -> str:
    """RFC 3986 §6.2.2: percent-encodings in upper case, unreserved characters decoded (§6.2.2.1,
    §6.2.2.2), then dot-segments removed (§6.2.2.3); an empty path is "/" (§6.2.3)."""

    def escape(m: re.Match[str]) -> str:
        char = chr(int(m[1], 16))
        return char if char in UNRESERVED else "%" + m[1].upper()

    decoded = re.sub(r"%([0-9A-Fa-f]{2})", escape, path)
    return _remove_dot_segments(decoded if decoded.startswith("/") else "/" + decoded) or "/"


def _entry_url(key: str) -> tuple[str, str, str]:
    """(host with its port, path without the query, the primary key) of a cache key."""
    primary = key.split("\x00", 1)[0]
    parts = urlsplit(primary, allow_fragments=False)
    return parts.netloc, parts.path or "/", primary


def covers(kind: str, value: str, purge_zone: str, entry_zone: str, key: str, tags: tuple[str, ...]) -> bool:
    """Whether a purge of ``kind``/``value`` in ``purge_zone`` covers the entry ``key`` of
    ``entry_zone`` carrying ``tags`` (stored lower-cased and trimmed)."""
    # A purge never reaches into another zone.
    if purge_zone != entry_zone:
        return False
    host, path, primary = _entry_url(key)
    if kind == "everything":
        return True
    if kind == "url":
        # A URL without variant parts covers all its variants; with them, exactly that variant.
        return value in (primary, key)
    if kind == "tag":
        # Tags are case-insensitive and trimmed.
        return value.strip().lower() in tags
    if kind == "host tag":
        # EdgeOne's CacheTag.Domains: "host tag", the tag on exactly that host (any case) only.
        tag_host, _, tag = value.partition(" ")
        return tag.strip().lower() in tags and tag_host.strip().lower() == host
    if kind == "host":
        # The exact host (port included when not the default), any case; not a suffix.
        return value.strip().lower() == host
    if kind == "prefix":
        # host/path without a scheme: the host exactly, the path as a case-sensitive string prefix
        # of the entry's path (every query string); a bare host means all of it; a "?" in the
        # prefix matches nothing. The prefix's path is normalised as keys are (every spelling of
        # a path is one prefix).
        wanted = value.strip()
        if "?" in wanted:
            return False
        wanted_host, slash, wanted_path = wanted.partition("/")
        return wanted_host.lower() == host and path.startswith(
            normal_path("/" + wanted_path) if slash else "/"
        )
    raise ValueError(f"unknown selector kind {kind!r}")


def typed(selector: Selector) -> tuple[str, str]:
    """A selector object back as ``(kind, value)``, to ask ``covers`` about it."""
    match selector:
        case Url(key=k):
            return ("url", k)
        case Tag(tag=t, host=None):
            return ("tag", t)
        case Tag(tag=t, host=str(h)):
            return ("host tag", f"{h} {t}")
        case Host(host=h):
            return ("host", h)
        case Prefix(prefix=p):
            return ("prefix", p)
        case Everything():
            return ("everything", "")
    raise TypeError(f"not a selector: {selector!r}")
