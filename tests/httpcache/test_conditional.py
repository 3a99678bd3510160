"""Conditional requests (RFC 9110 §13) evaluated against a stored response."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.conditional import evaluate_preconditions, if_range_allows
from edgecache.httpcache.dates import format_http_date

LM_TS = 1_700_000_000
LM = format_http_date(LM_TS)
BEFORE = format_http_date(LM_TS - 60)
AFTER = format_http_date(LM_TS + 60)
ETAG = '"v2"'


def check(
    headers: dict[str, str], method: str = "GET", etag: str | None = ETAG, lm: str | None = LM
) -> int | None:
    return evaluate_preconditions(method, headers, etag, lm)


def test_no_conditionals_serves_normally() -> None:
    assert check({}) is None


@pytest.mark.parametrize("inm", ['"v2"', 'W/"v2"', '"v1", "v2"', '"a,b", W/"v2"', "*", ' "v2" '])
def test_if_none_match_uses_weak_comparison(inm: str) -> None:
    assert check({"if-none-match": inm}) == 304
    assert check({"if-none-match": inm}, method="HEAD") == 304


def test_if_none_match_against_weak_stored_etag() -> None:
    assert check({"if-none-match": '"v2"'}, etag='W/"v2"') == 304


@pytest.mark.parametrize("inm", ['"v1"', '"v2-gzip"', '"v1", "a,v2"', "garbage"])
def test_if_none_match_mismatch_serves_normally(inm: str) -> None:
    assert check({"if-none-match": inm}) is None


def test_if_none_match_without_stored_etag() -> None:
    assert check({"if-none-match": '"v2"'}, etag=None) is None
    assert check({"if-none-match": "*"}, etag=None) == 304


def test_if_none_match_match_on_unsafe_method_is_412() -> None:
    assert check({"if-none-match": '"v2"'}, method="POST") == 412


def test_if_modified_since() -> None:
    assert check({"if-modified-since": LM}) == 304
    assert check({"if-modified-since": AFTER}) == 304
    assert check({"if-modified-since": BEFORE}) is None
    assert check({"if-modified-since": "not a date"}) is None
    assert check({"if-modified-since": LM}, lm=None) is None
    assert check({"if-modified-since": LM}, method="POST") is None


def test_if_modified_since_accepts_obsolete_date_forms() -> None:
    assert check({"if-modified-since": "Sun Nov  6 08:49:37 1994"}, lm="Sun, 06 Nov 1994 08:49:37 GMT") == 304


def test_if_none_match_makes_if_modified_since_ignored() -> None:
    assert check({"if-none-match": '"other"', "if-modified-since": AFTER}) is None


def test_if_match_uses_strong_comparison() -> None:
    assert check({"if-match": '"v2"'}) is None
    assert check({"if-match": '"v1", "v2"'}) is None
    assert check({"if-match": "*"}) is None
    assert check({"if-match": 'W/"v2"'}) == 412
    assert check({"if-match": '"v2"'}, etag='W/"v2"') == 412
    assert check({"if-match": '"v1"'}) == 412
    assert check({"if-match": '"v2"'}, etag=None) == 412


def test_if_unmodified_since_only_without_if_match() -> None:
    assert check({"if-unmodified-since": BEFORE}) == 412
    assert check({"if-unmodified-since": LM}) is None
    assert check({"if-unmodified-since": "nonsense"}) is None
    assert check({"if-unmodified-since": BEFORE}, lm=None) is None
    assert check({"if-match": '"v2"', "if-unmodified-since": BEFORE}) is None


def test_failed_if_match_wins_over_matching_if_none_match() -> None:
    assert check({"if-match": '"v1"', "if-none-match": '"v2"'}) == 412


def test_methods_without_a_selected_representation_ignore_conditionals() -> None:
    assert check({"if-match": '"nope"'}, method="OPTIONS") is None


etags = st.sampled_from(['"v2"', 'W/"v2"', '"v1"', "*", '"v1", "v2"'])
dates = st.sampled_from([BEFORE, LM, AFTER, "bogus"])


@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
    st.none() | etags,
    st.none() | dates,
    st.none() | etags,
    st.none() | dates,
)
def test_evaluation_order_of_rfc_9110_13_2_2(
    method: str, im: str | None, ius: str | None, inm: str | None, ims: str | None
) -> None:
    headers = {
        k: v
        for k, v in (
            ("if-match", im),
            ("if-unmodified-since", ius),
            ("if-none-match", inm),
            ("if-modified-since", ims),
        )
        if v is not None
    }
    result = check(headers, method=method)
    alone = {k: check({k: v}, method=method) for k, v in headers.items()}
    if_match_failed = im is not None and alone["if-match"] == 412
    if if_match_failed or (im is None and ius is not None and alone["if-unmodified-since"] == 412):
        assert result == 412
    elif inm is not None:
        assert result == alone["if-none-match"]
    elif ims is not None:
        assert result == alone["if-modified-since"]
    else:
        assert result is None


def test_if_range_with_entity_tag_needs_a_strong_match() -> None:
    assert if_range_allows('"v2"', ETAG, LM)
    assert not if_range_allows('"v1"', ETAG, LM)
    assert not if_range_allows('W/"v2"', 'W/"v2"', LM)
    assert not if_range_allows('"v2"', 'W/"v2"', LM)
    assert not if_range_allows('"v2"', None, LM)


def test_if_range_with_date_needs_an_exact_match() -> None:
    assert if_range_allows(LM, ETAG, LM)
    assert not if_range_allows(AFTER, ETAG, LM)
    assert not if_range_allows(LM, ETAG, None)
    assert not if_range_allows("garbage", ETAG, LM)
