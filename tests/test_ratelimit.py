"""Token-bucket rate limits per account, with Cloudflare's per-plan defaults (reference §2.4, §2.5)."""

from __future__ import annotations

import pytest

from edgecache.control.ratelimit import (
    PLAN_LIMITS,
    Bucket,
    PlanLimits,
    Rate,
    RateLimiter,
    TokenBucket,
    limits_by_account,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limiter(plan: str = "pro", **plans: str) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(limits_by_account(plans, default=plan), clock=clock), clock  # type: ignore[arg-type]


def test_plan_defaults_match_the_reference() -> None:
    flex = {p: (lim.flex_purge.per_second, lim.flex_purge.burst) for p, lim in PLAN_LIMITS.items()}
    assert flex == {"free": (5 / 60, 25), "pro": (5, 25), "business": (10, 50), "enterprise": (50, 500)}
    urls = {p: lim.single_file_purge.per_second for p, lim in PLAN_LIMITS.items()}
    assert urls == {"free": 800, "pro": 1500, "business": 1500, "enterprise": 3000}
    files = {p: lim.files_per_request for p, lim in PLAN_LIMITS.items()}
    assert files == {"free": 100, "pro": 100, "business": 100, "enterprise": 500}
    assert {lim.flex_items_per_request for lim in PLAN_LIMITS.values()} == {100}
    assert PLAN_LIMITS["free"].api == Rate(4, 1200)


def test_burst_then_refill() -> None:
    rl, clock = limiter("pro")
    assert all(rl.take("acct", Bucket.FLEX_PURGE) is None for _ in range(25))
    wait = rl.take("acct", Bucket.FLEX_PURGE)
    assert wait == pytest.approx(0.2)  # one token at 5/s
    clock.t += 0.1
    assert rl.take("acct", Bucket.FLEX_PURGE) == pytest.approx(0.1)  # a refusal spends nothing
    clock.t += 0.1
    assert rl.take("acct", Bucket.FLEX_PURGE) is None
    assert rl.take("acct", Bucket.FLEX_PURGE) is not None
    clock.t += 3600  # refills to the bucket size, not beyond
    assert sum(rl.take("acct", Bucket.FLEX_PURGE) is None for _ in range(30)) == 25


def test_free_plan_is_per_minute() -> None:
    rl, clock = limiter("free")
    for _ in range(25):
        assert rl.take("acct", Bucket.FLEX_PURGE) is None
    wait = rl.take("acct", Bucket.FLEX_PURGE)
    assert wait is not None and wait == pytest.approx(12.0)
    assert retry_after(wait) == 12
    clock.t += 11.9
    assert rl.take("acct", Bucket.FLEX_PURGE) is not None
    clock.t += 0.1
    assert rl.take("acct", Bucket.FLEX_PURGE) is None


def test_single_file_purges_cost_one_per_url() -> None:
    rl, _ = limiter("enterprise")
    for _ in range(6):
        assert rl.take("acct", Bucket.SINGLE_FILE_PURGE, cost=500) is None
    wait = rl.take("acct", Bucket.SINGLE_FILE_PURGE, cost=500)
    assert wait is not None and wait == pytest.approx(500 / 3000)
    assert retry_after(wait) == 1
    assert rl.take("acct", Bucket.FLEX_PURGE) is None  # buckets are independent
    with pytest.raises(ValueError, match="could never pass"):
        rl.take("acct", Bucket.SINGLE_FILE_PURGE, cost=3001)


def test_accounts_are_isolated() -> None:
    rl, _ = limiter("pro", small="free")
    for _ in range(25):
        assert rl.take("small", Bucket.FLEX_PURGE) is None
    assert rl.take("small", Bucket.FLEX_PURGE) == pytest.approx(12.0)
    assert rl.take("other", Bucket.FLEX_PURGE) is None
    assert all(rl.take("other", Bucket.FLEX_PURGE) is None for _ in range(24))
    assert rl.take("other", Bucket.FLEX_PURGE) == pytest.approx(0.2)  # pro: 5/s


def test_overrides_and_changed_limits() -> None:
    big = PLAN_LIMITS["free"].with_overrides(flex_purge=Rate(1, 2))
    current = {"acct": big}
    clock = Clock()
    rl = RateLimiter(lambda account: current[account], clock=clock)
    assert rl.take("acct", Bucket.FLEX_PURGE) is None
    # Limits changed (say, a configuration reload): the token left is kept, not refilled.
    current["acct"] = big.with_overrides(flex_purge=Rate(1, 10))
    assert rl.take("acct", Bucket.FLEX_PURGE) is None
    assert rl.take("acct", Bucket.FLEX_PURGE) == pytest.approx(1.0)
    lookup = limits_by_account({"a": "free"}, overrides={"b": big})
    assert lookup("a") is PLAN_LIMITS["free"]
    assert lookup("b") is big
    assert lookup("c") is PLAN_LIMITS["enterprise"]
    with pytest.raises(KeyError):
        rl.take("acct", "no-such-bucket")


def test_plan_limits_validation() -> None:
    with pytest.raises(ValueError):
        PlanLimits(Rate(1, 1), Rate(10, 10), files_per_request=100, flex_items_per_request=100)
    with pytest.raises(ValueError):
        Rate(0, 10)


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0.0001, 1), (0.2, 1), (1.0, 1), (1.2, 2), (2.0000000000000004, 2), (12.000001, 13), (59.5, 60)],
)
def test_retry_after_rounds_up(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_token_bucket_directly() -> None:
    b = TokenBucket(rate_per_s=2, burst=4, now=0.0)
    assert b.take(4, now=0.0) is None
    assert b.take(1, now=0.0) == pytest.approx(0.5)
    assert b.take(1, now=-5.0) == pytest.approx(0.5)  # a clock going back adds nothing
    assert b.available(now=1.0) == pytest.approx(2)
    assert b.take(3, now=1.0) == pytest.approx(0.5)
