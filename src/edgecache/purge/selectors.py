"""What a purge covers: selectors, modes, and the reference matching semantics.

Rules of this module:
- A purge belongs to one zone and covers entries of that zone only; zones never see each other's
  purges.
- ``Url(key)``: ``key`` is a cache key as built by ``edgecache.httpcache.key`` (``scheme://host/path
  [?query]`` then variant parts, each after "\\x00"). A primary key (no NUL) covers every variant of
  that URL; a full key with variant parts covers only the entry with exactly that key. The scheme is
  part of the key: ``http://`` and ``https://`` entries are different URLs (Cloudflare keys on the
  scheme too).
- ``Tag(tag)``: covers every entry carrying the tag. Tags are case-insensitive: the selector stores
  the same normal form as ``edgecache.httpcache.tags.normalise_tag`` (trimmed, lower-cased), which is
  also the form entries store, so matching is plain equality. ``Tag(tag, host)`` covers only those
  entries whose key has exactly this host (matched like ``Host``): EdgeOne's ``CacheTag.Domains``
  limits a tag purge to some hostnames of the zone, one selector per hostname.
- ``Host(host)``: covers every entry whose key has exactly this host (any scheme, path, query,
  variant). Exact match, not a suffix: ``example.com`` does not cover ``www.example.com``. A
  non-default port is part of the host in the key (``example.com:8080``), so it must be in the
  selector too.
- ``Prefix(prefix)``: ``host/path`` without a scheme; the host is matched exactly (lower-cased), the
  path as a case-sensitive string prefix of the entry's path, without its query: ``example.com/bar``
  covers ``/bar``, ``/bar/x``, ``/barbaz`` and ``/bar?x=1`` (every query string), but not ``/ba``.
  A bare host (``example.com``) means ``example.com/``, every path on that host. A prefix that itself
  contains "?" matches nothing, as at Cloudflare ("purging ``foo.com/bar?good=bad`` itself will not
  work"). The prefix's path is normalised the way keys are (``normalise_path``: percent-encodings,
  dot-segments), so ``example.com/a/../b`` and ``example.com/%62`` are ``example.com/b``.
- ``Everything()``: every entry of the zone.
- ``Mode.DELETE`` removes matched entries (the next request is a miss); ``Mode.INVALIDATE`` marks them
  stale from the purge's time ``at``, so they are revalidated with the origin (and may still be
  served stale where stale-while-revalidate / stale-if-error allow).
- Selector constructors normalise their argument (idempotently), so a selector built from user input
  and one built from already-normal input are equal and hash the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgecache.httpcache.key import VARIANT_SEP, host_and_path, normalise_path
from edgecache.httpcache.tags import normalise_tag


class Mode(StrEnum):
    """How a purge treats the entries it covers."""

    DELETE = "delete"
    """Hard: the entry is gone; the next request goes to the origin."""
    INVALIDATE = "invalidate"
    """Soft: the entry is stale from the purge's time on and is revalidated with the origin."""


@dataclass(frozen=True, slots=True)
class Url:
    """One URL (all its variants, for a primary key) or one variant (for a full key)."""

    key: str


@dataclass(frozen=True, slots=True)
class Tag:
    """Every entry carrying this cache tag (case-insensitive), on one host or on every host."""

    tag: str
    host: str | None = None
    """None: every host of the zone; else only entries whose key has exactly this host."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", normalise_tag(self.tag))
        if self.host is not None:
            object.__setattr__(self, "host", self.host.strip().lower())


@dataclass(frozen=True, slots=True)
class Host:
    """Every entry whose key has exactly this host."""

    host: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", self.host.strip().lower())


@dataclass(frozen=True, slots=True)
class Prefix:
    """Every entry whose ``host/path`` starts with this string (host matched exactly)."""

    prefix: str
    """Canonical form: lower-cased host, then "/" and the case-sensitive path prefix (maybe empty)."""

    def __post_init__(self) -> None:
        p = self.prefix.strip()
        host, slash, path = p.partition("/")
        # A bare host means its whole path space; the "/" also keeps "example.com" from covering
        # "example.community" under string-prefix semantics.
        # The path is normalised as keys are (RFC 3986 §6.2.2), so every spelling is one prefix.
        object.__setattr__(self, "prefix", host.lower() + (normalise_path("/" + path) if slash else "/"))

    @property
    def host(self) -> str:
        """The host part (before the first "/")."""
        return self.prefix[: self.prefix.find("/")]

    @property
    def path(self) -> str:
        """The path part, starting with "/"."""
        return self.prefix[self.prefix.find("/") :]


@dataclass(frozen=True, slots=True)
class Everything:
    """Every entry of the zone."""


Selector = Url | Tag | Host | Prefix | Everything


@dataclass(frozen=True, slots=True)
class Purge:
    """One accepted purge, as the ledger ordered it."""

    seq: int
    """Ledger sequence number (1, 2, ...); covers entries whose ``stored_seq`` is lower."""
    zone: str
    mode: Mode
    selectors: tuple[Selector, ...]
    at: float
    """Wall-clock seconds when the purge was accepted; soft-purged entries are stale from then."""


def matches(selector: Selector, zone_of_purge: str, entry_zone: str, key: str, tags: tuple[str, ...]) -> bool:
    """Whether ``selector`` (of a purge in ``zone_of_purge``) covers an entry: the reference semantics.

    Deliberately plain (no index, no cleverness): tests hold :class:`~edgecache.purge.index.EpochIndex`
    against it, and the reclaimer can use it to double-check an entry before removing it. ``tags`` are
    the entry's normalised tags, as stored.
    """
    if zone_of_purge != entry_zone:
        return False
    primary = key.split(VARIANT_SEP, 1)[0]
    match selector:
        case Everything():
            return True
        case Url(key=k):
            return k in (primary, key)
        case Tag(tag=t, host=h):
            return t in tags and (h is None or host_and_path(primary)[0] == h)
        case Host(host=h):
            return host_and_path(primary)[0] == h
        case Prefix(prefix=p):
            host, path = host_and_path(primary)
            return (host + path.split("?", 1)[0]).startswith(p)
    return False  # pragma: no cover - the match above is exhaustive
