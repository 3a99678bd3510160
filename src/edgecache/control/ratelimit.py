"""Per-account rate limits and per-request item limits for purges (and the general API).

Rules:
- Token buckets, one per (account, bucket name), in memory; the clock is injectable (monotonic
  seconds) so tests do not sleep. Each process limits on its own: with N worker processes an
  account gets up to N times its rate (a shared limiter would need the database on every call).
- ``take`` answers None (allowed, tokens spent) or the seconds until the request would be allowed
  (nothing spent); ``retry_after`` turns that into the whole seconds of a ``Retry-After`` header.
  ``refund`` gives tokens back for a request that was refused after it paid (its quota, or a
  failed write): the bucket limits purges performed (the reference's validation order charges it
  after every check of the request), so a refused one costs nothing.
- The defaults are Cloudflare's published per-plan numbers (reference ``cloudflare-api.md`` §2.4,
  §2.5 and §1.6); ``limits_for`` lets the caller override them per account.
- Thread-safe (one lock): the API layer may call from its event loop or from worker threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from edgecache.config import Account, Plan


class Bucket(StrEnum):
    FLEX_PURGE = "flex_purge"
    """Purges by tag, host, prefix and purge everything; cost 1 per request."""
    SINGLE_FILE_PURGE = "single_file_purge"
    """Purges by URL; cost = the number of URLs in the request."""
    API = "api"
    """Every control-plane API request of an account; cost 1."""


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """Everything that limits one account's purges and API use."""

    flex_purge: Rate
    single_file_purge: Rate
    files_per_request: int
    """Most URLs in one ``files`` purge."""
    flex_items_per_request: int
    """Most tags, hosts or prefixes in one purge."""
    api: Rate = field(default_factory=lambda: Rate(1200 / 300, 1200))
    """§1.6: 1200 requests per 5 minutes. Cloudflare counts in fixed windows; a bucket of 1200
    refilled at 4/s allows the same sustained rate without the cliff at a window's end."""

    def __post_init__(self) -> None:
        # A request within the item limit must be able to pass eventually.
        if self.single_file_purge.burst < self.files_per_request:
            raise ValueError("single_file_purge.burst must be at least files_per_request")

    def rate(self, bucket: str) -> Rate:
        if bucket == Bucket.FLEX_PURGE:
            return self.flex_purge
        if bucket == Bucket.SINGLE_FILE_PURGE:
            return self.single_file_purge
        if bucket == Bucket.API:
            return self.api
        raise KeyError(f"unknown rate-limit bucket {bucket!r}")

    def with_overrides(self, **changes: object) -> PlanLimits:
        """A copy with some fields replaced, e.g. ``flex_purge=Rate(100, 1000)``."""
        return replace(self, **changes)  # type: ignore[arg-type]


# Cloudflare's current numbers (reference cloudflare-api.md; docs plans data `cache.purge_limits`,
# `cache.single_file_purge`):
# - flex purge refill / bucket (§2.5): Free 5 per minute / 25, Pro 5/s / 25, Business 10/s / 50,
#   Enterprise 50/s / 500;
# - single-file purge (§2.5): Free 800 URLs/s, Pro 1,500, Business 1,500, Enterprise 3,000. Cloudflare
#   uses a moving average and publishes no bucket size: we allow one second's worth as the burst;
# - per request (§2.4): 100 tags/hosts/prefixes on every plan; 100 URLs, 500 on Enterprise.
PLAN_LIMITS: Mapping[Plan, PlanLimits] = {
    "free": PlanLimits(Rate(5 / 60, 25), Rate(800, 800), files_per_request=100, flex_items_per_request=100),
    "pro": PlanLimits(Rate(5, 25), Rate(1500, 1500), files_per_request=100, flex_items_per_request=100),
    "business": PlanLimits(Rate(10, 50), Rate(1500, 1500), files_per_request=100, flex_items_per_request=100),
    "enterprise": PlanLimits(
        Rate(50, 500), Rate(3000, 3000), files_per_request=500, flex_items_per_request=100
    ),
}


def limits_by_account(
    plans: Mapping[str, Plan],
    overrides: Mapping[str, PlanLimits] | None = None,
    default: Plan = "enterprise",
) -> Callable[[str], PlanLimits]:
    """A ``limits_for`` function: an account's override if any, else its plan's defaults
    (``default`` for accounts not in ``plans``)."""
    extra = dict(overrides or {})
    table = dict(plans)

    def limits_for(account_id: str) -> PlanLimits:
        found = extra.get(account_id)
        return found if found is not None else PLAN_LIMITS[table.get(account_id, default)]

    return limits_for


def retry_after(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1 (the reference §1.6)."""
    # The epsilon absorbs float noise such as 2.0000000000000004 for an exact 2-second wait.
    return max(1, math.ceil(wait - 1e-9))


class TokenBucket:
    """Holds up to ``burst`` tokens, refilled continuously at ``rate_per_s``; starts full."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, now: float | None = None) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        # max(): a clock that steps back (it should not, being monotonic) must not remove tokens.
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        self._stamp = max(self._stamp, now)

    def take(self, cost: float = 1, now: float | None = None) -> float | None:
        """Spend ``cost`` tokens and return None, or return the seconds until that will be possible.

        ``now`` is a reading of the caller's monotonic clock (``time.monotonic()`` when omitted)."""
        if now is None:
            now = time.monotonic()
        if cost > self.burst:
            raise ValueError(f"cost {cost} exceeds the bucket size {self.burst}: it could never pass")
        self._refill(now)
        # The epsilon forgives float noise in the refill (e.g. 11.9 s + 0.1 s of a 12 s wait).
        if self._tokens >= cost - 1e-9:
            self._tokens = max(0.0, self._tokens - cost)
            return None
        return (cost - self._tokens) / self.rate_per_s

    def refund(self, cost: float, now: float | None = None) -> None:
        """Give back ``cost`` tokens taken by :meth:`take` (never above ``burst``)."""
        self._refill(time.monotonic() if now is None else now)
        self._tokens = min(self.burst, self._tokens + cost)

    def available(self, now: float | None = None) -> float:
        self._refill(time.monotonic() if now is None else now)
        return self._tokens

    def set_tokens(self, tokens: float) -> None:
        self._tokens = max(0.0, min(self.burst, tokens))


class RateLimiter:
    """Token buckets per (account, bucket name), sized by ``limits_for(account_id)``."""

    def __init__(
        self,
        limits_for: Callable[[str], PlanLimits],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits_for = limits_for
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, account_id: str, bucket: str, cost: float = 1) -> float | None:
        """None when allowed (and counted); else seconds until allowed (nothing counted)."""
        rate = self._limits_for(account_id).rate(bucket)
        key = (account_id, str(bucket))
        with self._lock:
            now = self._clock()
            b = self._buckets.get(key)
            if b is None or (b.rate_per_s, b.burst) != (rate.per_second, rate.burst):
                # A new account starts full. When limits change (configuration reload) the tokens
                # left are kept, capped at the new size, so a reload is not a free refill.
                fresh = TokenBucket(rate.per_second, rate.burst, now)
                if b is not None:
                    fresh.set_tokens(b.available(now))
                b = self._buckets[key] = fresh
            return b.take(cost, now)

    def refund(self, account_id: str, bucket: str, cost: float = 1) -> None:
        """Give back what a successful :meth:`take` spent, for a request refused afterwards."""
        with self._lock:
            b = self._buckets.get((account_id, str(bucket)))
            if b is not None:
                b.refund(cost, self._clock())


def account_limits(account: Account) -> PlanLimits:
    """An account's purge limits: its plan's published numbers, with its configured overrides."""
    limits = PLAN_LIMITS[account.plan]
    changes: dict[str, object] = {}
    if account.flex_purge is not None:
        changes["flex_purge"] = Rate(account.flex_purge.per_second, account.flex_purge.burst)
    if account.single_file_purge is not None:
        changes["single_file_purge"] = Rate(
            account.single_file_purge.per_second, account.single_file_purge.burst
        )
    if account.files_per_request is not None:
        changes["files_per_request"] = account.files_per_request
    if account.flex_items_per_request is not None:
        changes["flex_items_per_request"] = account.flex_items_per_request
    return limits.with_overrides(**changes) if changes else limits
