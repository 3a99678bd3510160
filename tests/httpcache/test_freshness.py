"""Storage decisions, freshness lifetime, age and HTTP dates."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.dates import format_http_date
from edgecache.httpcache.freshness import StorageDecision, decide_storage, initial_age

T = 1_700_000_000.0
DATE = format_http_date(T)


def decide(
    *headers: tuple[str, str],
    status: int = 200,
    method: str = "GET",
    request: Mapping[str, str] | None = None,
    cache_set_cookie: bool = False,
) -> StorageDecision:
    return decide_storage(
        method=method,
        status=status,
        request_headers=request or {},
        response_headers=[("Date", DATE), *headers],
        now=T,
        response_time=T,
        cache_set_cookie=cache_set_cookie,
    )


def test_max_age_gives_the_lifetime() -> None:
    d = decide(("Cache-Control", "max-age=300"))
    assert d.storable and d.reason == "" and d.freshness_lifetime == 300
    assert not d.must_revalidate and not d.no_cache and not d.auth_ok and d.vary == ()


def test_s_maxage_beats_max_age_and_implies_revalidation_and_auth_reuse() -> None:
    d = decide(("cache-control", "max-age=10, s-maxage=600"))
    assert d.freshness_lifetime == 600 and d.must_revalidate and d.auth_ok


def test_expires_minus_date() -> None:
    d = decide(("Expires", format_http_date(T + 120)))
    assert d.storable and d.freshness_lifetime == 120


def test_expires_without_date_uses_response_time() -> None:
    d = decide_storage(
        method="GET",
        status=200,
        request_headers={},
        response_headers=[("Expires", format_http_date(T + 50))],
        now=T,
        response_time=T,
    )
    assert d.freshness_lifetime == 50


def test_max_age_beats_expires() -> None:
    d = decide(("Expires", format_http_date(T + 9999)), ("Cache-Control", "max-age=5"))
    assert d.freshness_lifetime == 5


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", format_http_date(T - 60)])
def test_invalid_or_past_expires_is_stale(expires: str) -> None:
    assert decide(("Expires", expires)).reason == "no-freshness"
    with_etag = decide(("Expires", expires), ("ETag", '"v1"'))
    assert with_etag.storable and with_etag.freshness_lifetime == 0


def test_heuristic_freshness_from_last_modified() -> None:
    d = decide(("Last-Modified", format_http_date(T - 1000)))
    assert d.storable and d.freshness_lifetime == pytest.approx(100)


def test_heuristic_is_capped_and_configurable() -> None:
    lm = ("Last-Modified", format_http_date(T - 10 * 86400 * 10))
    assert decide(lm).freshness_lifetime == 86400
    d = decide_storage(
        method="GET",
        status=200,
        request_headers={},
        response_headers=[("Date", DATE), ("Last-Modified", format_http_date(T - 1000))],
        now=T,
        response_time=T,
        heuristic_fraction=0.5,
        heuristic_max=300,
    )
    assert d.freshness_lifetime == 300


def test_heuristic_only_for_heuristically_cacheable_statuses_unless_public() -> None:
    lm = ("Last-Modified", format_http_date(T - 1000))
    assert decide(lm, status=404).storable
    assert decide(lm, status=500).reason == "status"
    assert decide(lm, status=302).reason == "status"
    public = decide(lm, ("Cache-Control", "public"), status=500)
    assert public.storable and public.freshness_lifetime == pytest.approx(100)


def test_any_final_status_with_explicit_freshness_is_storable() -> None:
    assert decide(("Cache-Control", "max-age=30"), status=500).storable
    assert decide(("Expires", format_http_date(T + 30)), status=302).storable


@pytest.mark.parametrize("status", [100, 103, 304, 416])
def test_incomplete_or_interim_statuses_are_never_stored(status: int) -> None:
    assert decide(("Cache-Control", "max-age=60"), status=status).reason == "status"


@pytest.mark.parametrize("method", ["HEAD", "POST", "get"])
def test_only_get_is_stored(method: str) -> None:
    assert decide(("Cache-Control", "max-age=60"), method=method).reason == "method"


@pytest.mark.parametrize(
    ("cache_control", "reason"),
    [
        ("no-store, max-age=60", "no-store"),
        ("private, max-age=60", "private"),
        ('private="x", max-age=9', "private"),
    ],
)
def test_no_store_and_private_prevent_storage(cache_control: str, reason: str) -> None:
    assert decide(("Cache-Control", cache_control)).reason == reason


def test_authorization_requires_explicit_permission() -> None:
    auth = {"authorization": "Bearer x"}
    assert decide(("Cache-Control", "max-age=60"), request=auth).reason == "authorization"
    for cc in ("public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"):
        d = decide(("Cache-Control", cc), request=auth)
        assert d.storable and d.auth_ok, cc


def test_set_cookie_prevents_storage_unless_configured() -> None:
    headers = (("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b"))
    assert decide(*headers).reason == "set-cookie"
    assert decide(*headers, cache_set_cookie=True).storable


def test_vary_star_prevents_storage_and_vary_names_are_normalised() -> None:
    assert decide(("Cache-Control", "max-age=60"), ("Vary", "Accept, *")).reason == "vary-star"
    d = decide(
        ("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding, Accept"), ("vary", "accept-encoding,,")
    )
    assert d.vary == ("accept", "accept-encoding")


def test_no_cache_is_stored_for_revalidation_only_with_a_validator() -> None:
    d = decide(("Cache-Control", "no-cache, max-age=60"), ("ETag", '"a"'))
    assert d.storable and d.no_cache
    assert decide(("Cache-Control", "no-cache, max-age=60")).reason == "no-validator"


def test_zero_lifetime_needs_a_validator_or_a_stale_allowance() -> None:
    assert decide(("Cache-Control", "max-age=0")).reason == "no-freshness"
    assert decide(("Cache-Control", "max-age=0"), ("ETag", '"a"')).storable
    sie = decide(("Cache-Control", "max-age=0, stale-if-error=600"))
    assert sie.storable and sie.stale_if_error == 600
    assert (
        decide(("Cache-Control", "max-age=0, must-revalidate, stale-if-error=600")).reason == "no-freshness"
    )


def test_no_freshness_information_at_all_is_not_stored() -> None:
    assert decide().reason == "no-freshness"


def test_cdn_cache_control_wins_over_cache_control_and_expires() -> None:
    d = decide(("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600, stale-while-revalidate=60"))
    assert d.storable and d.freshness_lifetime == 600 and d.stale_while_revalidate == 60
    assert (
        decide(("Cache-Control", "public, max-age=60"), ("CDN-Cache-Control", "no-store")).reason
        == "no-store"
    )
    assert decide(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "private")).reason == "private"
    expires_only = decide(("Expires", format_http_date(T + 60)), ("CDN-Cache-Control", "public"))
    assert expires_only.reason == "no-freshness"


def test_invalid_or_empty_cdn_cache_control_falls_back_to_cache_control() -> None:
    for cdn in ("Max-Age=600", "", "max-age=600,"):
        d = decide(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", cdn))
        assert d.freshness_lifetime == 60, cdn


def test_cdn_cache_control_lines_are_combined() -> None:
    d = decide(("CDN-Cache-Control", "max-age=90"), ("CDN-Cache-Control", "stale-if-error=5"))
    assert d.freshness_lifetime == 90 and d.stale_if_error == 5


def test_header_names_are_case_insensitive_and_lines_combine() -> None:
    d = decide(("CACHE-CONTROL", "max-age=60"), ("cache-control", "must-revalidate"))
    assert d.freshness_lifetime == 60 and d.must_revalidate


def test_initial_age_follows_rfc_9111_4_2_3() -> None:
    assert initial_age(age_header="10", date_header=None, request_time=T - 2, response_time=T) == 12
    apparent = initial_age(
        age_header=None, date_header=format_http_date(T - 30), request_time=T - 1, response_time=T
    )
    assert apparent == 30
    assert initial_age(age_header="bogus", date_header="bogus", request_time=T, response_time=T) == 0
    assert initial_age(age_header="5, 50", date_header=None, request_time=T, response_time=T) == 5
    clock_ahead = initial_age(
        age_header=None, date_header=format_http_date(T + 99), request_time=T, response_time=T
    )
    assert clock_ahead == 0


@pytest.mark.parametrize("status", [299, 418, 499, 599])
def test_an_unknown_status_is_stored_with_explicit_freshness_only(status: int) -> None:
    assert decide(("Cache-Control", "max-age=60"), status=status).storable
    assert decide(("Expires", format_http_date(T + 60)), status=status).storable
    lm = ("Last-Modified", format_http_date(T - 1000))
    assert decide(lm, status=status).reason == "status"


def test_must_understand_stores_only_understood_statuses_and_then_overrides_no_store() -> None:
    cc = ("Cache-Control", "must-understand, no-store, max-age=60")
    assert decide(cc).storable and decide(cc).freshness_lifetime == 60
    assert decide(cc, status=299).reason == "must-understand"
    assert decide(("Cache-Control", "must-understand, max-age=60"), status=499).reason == "must-understand"
    assert decide(("Cache-Control", "no-store, max-age=60")).reason == "no-store"


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.integers(0, 100),
            st.booleans(),
            st.sampled_from(["", "accept", "accept-encoding, origin"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_decisions_remembered_per_outcome_match_each_response(
    responses: list[tuple[int, int, bool, str]],
) -> None:
    # Decisions are shared per distinct outcome: each response still gets exactly its own policy,
    # whichever came before it.
    for max_age, swr, must_revalidate, vary in responses:
        cc = f"max-age={max_age}, stale-while-revalidate={swr}"
        cc += ", must-revalidate" if must_revalidate else ""
        fields = [("Cache-Control", cc), ("ETag", '"v"')] + ([("Vary", vary)] if vary else [])
        d = decide(*fields)
        assert d.storable and d.freshness_lifetime == max_age
        assert (d.stale_while_revalidate, d.must_revalidate) == (swr, must_revalidate)
        assert d.vary == tuple(sorted(v.strip() for v in vary.split(",") if v.strip()))
