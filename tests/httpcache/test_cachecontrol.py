"""Cache-Control and CDN-Cache-Control parsing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache import cachecontrol
from edgecache.httpcache.cachecontrol import (
    DELTA_MAX,
    MEMO_MAX,
    CacheControl,
    parse_cache_control,
    parse_cdn_cache_control,
)


def test_common_response_directives() -> None:
    cc = parse_cache_control(["public, max-age=3600, stale-while-revalidate=30, stale-if-error=600"])
    assert cc == CacheControl(max_age=3600, public=True, stale_while_revalidate=30, stale_if_error=600)


def test_names_are_case_insensitive_and_arguments_may_be_quoted() -> None:
    cc = parse_cache_control(['Max-Age="60", S-MAXAGE=120, No-Transform, IMMUTABLE'])
    assert (cc.max_age, cc.s_maxage, cc.no_transform, cc.immutable) == (60, 120, True, True)


def test_several_field_lines_form_one_list() -> None:
    cc = parse_cache_control(["max-age=60", "must-revalidate", "proxy-revalidate"])
    assert (cc.max_age, cc.must_revalidate, cc.proxy_revalidate) == (60, True, True)


def test_qualified_no_cache_and_private_count_and_do_not_split_the_list() -> None:
    cc = parse_cache_control(['no-cache="Set-Cookie, X-User", max-age=10'])
    assert cc.no_cache and cc.max_age == 10
    cc = parse_cache_control(['private="x-a,x-b", s-maxage=5'])
    assert cc.private and cc.s_maxage == 5


def test_escaped_quote_inside_argument_does_not_end_it() -> None:
    cc = parse_cache_control(['no-cache="a\\", max-age=1", max-age=7'])
    assert cc.no_cache and cc.max_age == 7


def test_invalid_max_age_makes_the_response_stale() -> None:
    for bad in ("max-age=abc", "max-age=-5", "max-age", "max-age=1.5", "max-age=", "max-age=+3", "max-age=٣"):
        assert parse_cache_control([bad]).max_age == 0, bad
    assert parse_cache_control(["s-maxage=soon"]).s_maxage == 0


def test_invalid_stale_extensions_are_ignored_not_zeroed() -> None:
    cc = parse_cache_control(["stale-while-revalidate=-1, stale-if-error=x"])
    assert cc.stale_while_revalidate is None and cc.stale_if_error is None


def test_first_occurrence_of_a_duplicate_wins() -> None:
    assert parse_cache_control(["max-age=60, max-age=0"]).max_age == 60
    assert parse_cache_control(["max-age=60", "max-age=0"]).max_age == 60


def test_huge_values_clamp_to_2_pow_31() -> None:
    assert parse_cache_control(["max-age=99999999999999999999"]).max_age == DELTA_MAX
    assert parse_cache_control(["max-age=" + "9" * 5000]).max_age == DELTA_MAX
    assert parse_cache_control(["max-age=2147483647"]).max_age == 2147483647


def test_empty_and_garbage_give_no_directives() -> None:
    assert parse_cache_control([]) == CacheControl()
    assert parse_cache_control([" , ,, "]) == CacheControl()
    assert parse_cache_control(["=60, ="]) == CacheControl()


@given(st.lists(st.text(max_size=80), max_size=4))
def test_parse_never_raises_and_numbers_stay_in_range(lines: list[str]) -> None:
    cc = parse_cache_control(lines)
    for v in (cc.max_age, cc.s_maxage, cc.stale_while_revalidate, cc.stale_if_error):
        assert v is None or 0 <= v <= DELTA_MAX


@given(
    st.lists(st.sampled_from(["max-age", "s-maxage", "no-store", "private", "x-y"]), min_size=1, max_size=6)
)
def test_directive_order_within_a_line_does_not_change_flags(names: list[str]) -> None:
    forward = parse_cache_control([", ".join(f"{n}=1" if "age" in n else n for n in names)])
    backward = parse_cache_control([", ".join(f"{n}=1" if "age" in n else n for n in reversed(names))])
    assert forward == backward


def test_cdn_cache_control_integers_and_bare_booleans() -> None:
    cc = parse_cdn_cache_control("max-age=600, stale-while-revalidate=30, must-revalidate")
    assert cc == CacheControl(max_age=600, stale_while_revalidate=30, must_revalidate=True)
    no_store = parse_cdn_cache_control("no-store")
    assert no_store is not None and no_store.no_store


def test_cdn_cache_control_false_boolean_is_absent() -> None:
    cc = parse_cdn_cache_control("no-store=?0, max-age=5")
    assert cc is not None and not cc.no_store and cc.max_age == 5


def test_cdn_cache_control_qualified_forms_are_strings() -> None:
    cc = parse_cdn_cache_control('private="set-cookie", no-cache="x"')
    assert cc is not None and cc.private and cc.no_cache


def test_cdn_cache_control_wrongly_typed_directive_is_ignored() -> None:
    for value in ("max-age=1.5", 'max-age="60"', "max-age=-1", "max-age=?1", "max-age=abc", "max-age=(1 2)"):
        cc = parse_cdn_cache_control(value + ", public")
        assert cc is not None and cc.max_age is None and cc.public, value


def test_cdn_cache_control_that_is_not_a_dictionary_is_ignored() -> None:
    for value in (
        "Max-Age=60",
        "max-age=60,",
        "max-age=60;",
        "max-age=(1 2",
        'x="unterminated',
        "max-age 60",
        "",
    ):
        assert parse_cdn_cache_control(value) is None, value


def test_cdn_cache_control_accepts_parameters_inner_lists_and_other_types() -> None:
    cc = parse_cdn_cache_control(
        'max-age=60;a=1;b="x", x=(a "b" 1 ?0);p=:aGk=:, d=@1659578233, s=%"caf%c3%a9", t=tok/en:1, n=-1.25'
    )
    assert cc is not None and cc.max_age == 60


def test_cdn_cache_control_last_duplicate_wins_and_clamps() -> None:
    cc = parse_cdn_cache_control("max-age=5, max-age=999999999999999")
    assert cc is not None and cc.max_age == DELTA_MAX


@given(st.text(max_size=80))
def test_cdn_parse_never_raises(value: str) -> None:
    cc = parse_cdn_cache_control(value)
    assert cc is None or cc.max_age is None or 0 <= cc.max_age <= DELTA_MAX


@given(st.text(max_size=300), st.text(max_size=300))
def test_a_remembered_value_parses_as_it_did_the_first_time(first: str, second: str) -> None:
    # The memo is keyed by the field value: a second origin sending another value, or the same
    # value again, gets the same directives as a parse of that value alone.
    for value in (first, second, first):
        assert parse_cache_control([value]) == parse_cache_control((value, ""))
        assert parse_cdn_cache_control(value) == parse_cdn_cache_control(value + " ")


def test_the_memo_stays_bounded_whatever_an_origin_sends() -> None:
    for i in range(3 * MEMO_MAX):
        parse_cache_control([f"max-age={i}"])
        parse_cdn_cache_control(f"max-age={i}")
    assert len(cachecontrol._CC_MEMO) <= MEMO_MAX and len(cachecontrol._CDN_MEMO) <= MEMO_MAX
    assert parse_cache_control([f"max-age={3 * MEMO_MAX - 1}"]).max_age == 3 * MEMO_MAX - 1
