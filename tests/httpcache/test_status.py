"""Cache-Status (RFC 9211) and CF-Cache-Status values."""

from __future__ import annotations

import pytest

from edgecache.httpcache.status import CfStatus, cache_status_fwd, cache_status_hit


def test_hit() -> None:
    assert cache_status_hit(59.7) == "edgecache; hit; ttl=59"
    assert cache_status_hit(0) == "edgecache; hit; ttl=0"


def test_stale_hit_has_negative_ttl() -> None:
    assert cache_status_hit(-0.2) == "edgecache; hit; ttl=-1"
    assert cache_status_hit(-30) == "edgecache; hit; ttl=-30"


def test_forward_minimal_and_full() -> None:
    assert cache_status_fwd("uri-miss") == "edgecache; fwd=uri-miss"
    assert (
        cache_status_fwd(
            "stale", fwd_status=304, stored=True, collapsed=True, ttl=120.9, detail="revalidated"
        )
        == 'edgecache; fwd=stale; fwd-status=304; ttl=120; stored; collapsed; detail="revalidated"'
    )


def test_detail_is_a_valid_sf_string() -> None:
    value = cache_status_fwd("bypass", detail='say "hi" \\ café\n')
    assert value == 'edgecache; fwd=bypass; detail="say \\"hi\\" \\\\ caf??"'


def test_unknown_fwd_reason_is_refused() -> None:
    with pytest.raises(ValueError):
        cache_status_fwd("hit")


def test_cf_cache_status_values() -> None:
    assert [str(s) for s in CfStatus] == [
        "HIT",
        "MISS",
        "EXPIRED",
        "STALE",
        "REVALIDATED",
        "UPDATING",
        "BYPASS",
        "DYNAMIC",
    ]
    assert f"{CfStatus.HIT}" == "HIT"
