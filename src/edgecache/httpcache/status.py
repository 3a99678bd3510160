"""How a response was served: RFC 9211 Cache-Status and Cloudflare's CF-Cache-Status.

Rules of this module:
- Cache-Status is a Structured Fields List with one member per cache; ours is the token ``edgecache``
  with parameters in the order RFC 9211 §2 defines them (hit, fwd, fwd-status, ttl, stored, collapsed,
  detail). Boolean parameters appear bare when true and are omitted when false.
- ttl is an integer number of seconds, rounded down, so a response served stale by a fraction of a
  second already shows a negative ttl (§2.4).
- detail is always an sf-string; characters an sf-string cannot carry are replaced by "?".
"""

from __future__ import annotations

import math
from enum import StrEnum

CACHE_NAME = "edgecache"

FWD_REASONS = frozenset({"uri-miss", "vary-miss", "miss", "request", "stale", "bypass", "method"})
"""The fwd values we emit (RFC 9211 §2.2)."""


class CfStatus(StrEnum):
    """Values of the CF-Cache-Status response field, as Cloudflare documents them."""

    HIT = "HIT"
    MISS = "MISS"
    EXPIRED = "EXPIRED"
    STALE = "STALE"
    REVALIDATED = "REVALIDATED"
    UPDATING = "UPDATING"
    BYPASS = "BYPASS"
    DYNAMIC = "DYNAMIC"


def cache_status_hit(ttl: float, tier: str = "") -> str:
    """Cache-Status for a response served from cache (RFC 9211 §2.1, §2.4); ``tier`` names the
    tier below memory that answered (a token: ``disk``, ``reserve``) as its detail."""
    out = f"{CACHE_NAME}; hit; ttl={math.floor(ttl)}"
    return out + "; detail=" + tier if tier else out


def _sf_string(text: str) -> str:
    """Serialise an sf-string (RFC 8941 §4.1.6)."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status_fwd(
    fwd: str,
    *,
    fwd_status: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    ttl: float | None = None,
    detail: str | None = None,
) -> str:
    """Cache-Status for a response forwarded to the origin (RFC 9211 §2.2-§2.8).

    Raises ValueError for a ``fwd`` that is not one of :data:`FWD_REASONS`.
    """
    if fwd not in FWD_REASONS:
        raise ValueError(f"unknown Cache-Status fwd reason {fwd!r}")
    out = f"{CACHE_NAME}; fwd={fwd}"
    if fwd_status is not None:
        out += f"; fwd-status={fwd_status}"
    if ttl is not None:
        out += f"; ttl={math.floor(ttl)}"
    if stored:
        out += "; stored"
    if collapsed:
        out += "; collapsed"
    if detail is not None:
        out += "; detail=" + _sf_string(detail)
    return out
