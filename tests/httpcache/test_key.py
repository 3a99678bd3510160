"""Cache keys: URL normalisation, variants, and the key format other components rely on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.httpcache.key import (
    KeyOptions,
    device_type,
    fill_target,
    host_and_path,
    key_and_target,
    normalise_accept_language,
    normalise_host,
    origin_target,
    primary_key,
    split_key,
    url_key,
    variant_suffix,
    vary_suffix,
)

PLAIN = KeyOptions()

# --- strategies -------------------------------------------------------------------------------------

_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
hosts = st.lists(_label, min_size=1, max_size=3).map(".".join)
_path_char = st.sampled_from(list("abcXYZ019-._~!$&'()*+,;=:@/")) | st.builds(
    lambda a, b: "%" + a + b,
    st.sampled_from("0123456789abcdefABCDEF"),
    st.sampled_from("0123456789abcdefABCDEF"),
)
path_parts = st.lists(_path_char, max_size=12)
paths = path_parts.map(lambda cs: "/" + "".join(cs))
_param = st.tuples(_label, _label).map("=".join)
queries = st.lists(_param, max_size=4).map("&".join)
schemes = st.sampled_from(["http", "https"])
query_modes = st.sampled_from(["include", "ignore", "sort"])


def _target(path: str, query: str) -> str:
    return path + ("?" + query if query else "")


# --- primary key ------------------------------------------------------------------------------------


def test_primary_key_format() -> None:
    assert primary_key("https", "Example.COM", "/a/b?x=1", PLAIN) == "https://example.com/a/b?x=1"
    assert primary_key("http", "example.com", "", PLAIN) == "http://example.com/"
    assert primary_key("http", "example.com", "/?", PLAIN) == "http://example.com/"


def test_host_normalisation() -> None:
    for host in (
        "EXAMPLE.com",
        "example.com.",
        "example.com:443",
        "example.com.:443",
        "example.com:",
        "Example.com:0443",
    ):
        assert primary_key("https", host, "/", PLAIN) == "https://example.com/", host
    assert primary_key("https", "example.com:80", "/", PLAIN) == "https://example.com:80/"
    assert primary_key("http", "[::1]:80", "/", PLAIN) == "http://[::1]/"
    assert primary_key("http", "[::1]:8080", "/", PLAIN) == "http://[::1]:8080/"


def test_percent_encoding_normalisation_keeps_reserved_escapes() -> None:
    key = primary_key("http", "h", "/%7euser/%41%2f%2Fb%zz%4", PLAIN)
    assert key == "http://h/~user/A%2F%2Fb%zz%4"


def test_dot_segments_are_removed_but_slashes_kept() -> None:
    assert primary_key("http", "h", "/a/../b/./c/", PLAIN) == "http://h/b/c/"
    for spelling in (
        "/c/a/../gap",
        "/c/./gap",
        "/c/%2e/gap",
        "/c/x/%2E%2E/gap",
        "/../c/gap",
        "/c/.%2e/c/gap",
    ):
        assert primary_key("http", "h", spelling, PLAIN) == "http://h/c/gap", spelling
    assert primary_key("http", "h", "/a/b/..", PLAIN) == "http://h/a/"
    assert primary_key("http", "h", "/.well-known/x", PLAIN) == "http://h/.well-known/x"
    assert primary_key("http", "h", "/a", PLAIN) != primary_key("http", "h", "/a/", PLAIN)
    assert primary_key("http", "h", "/a//b", PLAIN) != primary_key("http", "h", "/a/b", PLAIN)


def test_origin_target_is_the_keyed_path_with_the_query_as_sent() -> None:
    assert origin_target("/c/x/%2E%2E/g%61p?b=2&a=/../1") == "/c/gap?b=2&a=/../1"
    assert origin_target("/a#frag") == "/a"


_target_piece = st.sampled_from(
    ["a", "B", "/", ".", "..", "/./", "/../", "%2e", "%2E", "%2e%2E", "%41", "%7e", "%7E", "%2F", "%2f",
     "%25", "%c3%a9", "%", "%g1", "%4", "?", "&", "=", "#", "x.y", "..a", "~", ";", ":"]
)  # fmt: skip
raw_targets = st.lists(_target_piece, max_size=14).map("".join)
odd_hosts = st.builds(
    lambda name, port, dot: name + dot + port,
    st.sampled_from(["example.com", "EXAMPLE.com", "Example.COM", "a" * 600]),
    st.sampled_from(["", ":", ":80", ":080", ":443", ":8080"]),
    st.sampled_from(["", "."]),
)


@settings(deadline=None)
@given(odd_hosts, raw_targets, query_modes)
def test_key_and_target_is_the_key_and_the_origin_target_in_one_pass(host: str, tail: str, mode: str) -> None:
    """The miss path's one-pass key and target (``Proxy._lookup_in``) are exactly what the key and
    the origin's target were, for any spelling: %-escapes valid or not, dot-segments, empty,
    repeated or odd queries, fragments, hosts with ports, dots or of any case and length."""
    opts = KeyOptions(query=mode)  # type: ignore[arg-type]
    for target in ("/" + tail, "//" + tail, "/" + tail + "?", "/?" + tail):
        assert key_and_target(host, target, opts) == (
            primary_key("http", host, target, opts),
            fill_target(target, opts),
        )


@given(odd_hosts, raw_targets, query_modes)
def test_a_fill_asks_the_origin_for_exactly_what_it_is_keyed_under(host: str, tail: str, mode: str) -> None:
    """Whatever the query option, the target a fill sends is the key's own path and query: a query
    the key ignores (or sorts) never reaches the origin as sent, so no client can choose by its
    query what every other client of the key receives."""
    opts = KeyOptions(query=mode)  # type: ignore[arg-type]
    for target in ("/" + tail, "/" + tail + "?", "/?" + tail, "/p?" + tail):
        asked = fill_target(target, opts)
        assert primary_key("http", host, target, opts) == "http://" + normalise_host("http", host) + asked


def test_a_fill_target_follows_the_query_option() -> None:
    target = "/p?b=2&a=1&b=1"
    assert fill_target(target, KeyOptions(query="include")) == "/p?b=2&a=1&b=1"
    assert fill_target(target, KeyOptions(query="ignore")) == "/p"
    assert fill_target(target, KeyOptions(query="sort")) == "/p?a=1&b=2&b=1"
    assert fill_target("/x?", KeyOptions(query="include")) == "/x"
    # A request the cache does not store is passed on as received.
    assert origin_target(target) == target


def test_fragment_is_dropped() -> None:
    assert primary_key("http", "h", "/a?b=1#frag", PLAIN) == "http://h/a?b=1"


def test_query_modes() -> None:
    target = "/p?b=2&a=1&b=1"
    assert primary_key("http", "h", target, KeyOptions(query="include")) == "http://h/p?b=2&a=1&b=1"
    assert primary_key("http", "h", target, KeyOptions(query="ignore")) == "http://h/p"
    assert primary_key("http", "h", target, KeyOptions(query="sort")) == "http://h/p?a=1&b=2&b=1"


def test_absolute_form_host_wins_but_connection_scheme_stays() -> None:
    assert primary_key("http", "ignored", "http://Other.com:80/x?q", PLAIN) == "http://other.com/x?q"
    # A plain-HTTP client must not be able to file a response under the https key.
    assert primary_key("http", "h", "https://h/x", PLAIN) == "http://h/x"
    assert primary_key("http", "h", "http://user@other.com?q=1", PLAIN) == "http://other.com/?q=1"


def test_url_key_for_purge_urls() -> None:
    assert url_key("https://Example.com/a?b", PLAIN) == "https://example.com/a?b"
    assert url_key("Example.com:80/a", PLAIN) == "http://example.com/a"
    assert url_key("//example.com", PLAIN) == "http://example.com/"
    assert url_key("example.com/x?next=http://y/", PLAIN) == "http://example.com/x?next=http://y/"
    with pytest.raises(ValueError):
        url_key("/just/a/path", PLAIN)


def test_host_and_path() -> None:
    assert host_and_path("https://example.com:8443/a?b") == ("example.com:8443", "/a?b")
    assert host_and_path(url_key("https://example.com:443/", PLAIN)) == ("example.com", "/")


@given(schemes, hosts, paths, queries, query_modes)
def test_normalisation_is_idempotent(scheme: str, host: str, path: str, query: str, mode: str) -> None:
    opts = KeyOptions(query=mode)  # type: ignore[arg-type]
    key = primary_key(scheme, host, _target(path, query), opts)
    assert url_key(key, opts) == key
    h, p = host_and_path(key)
    assert primary_key(scheme, h, p, opts) == key


@given(schemes, hosts, path_parts, queries, st.data())
def test_equivalent_urls_share_a_key(
    scheme: str, host: str, parts: list[str], query: str, data: st.DataObject
) -> None:
    port = {"http": "80", "https": "443"}[scheme]
    base = primary_key(scheme, host, _target("/" + "".join(parts), query), PLAIN)
    spelled = data.draw(
        st.sampled_from([host.upper(), host + ".", f"{host}:{port}", f"{host.title()}.:{port}"])
    )
    # Escape every unreserved character and lower-case every existing escape: the same URI per RFC 3986.
    respelled = "/" + "".join(
        f"%{ord(p):02x}" if len(p) == 1 and (p.isalnum() or p in "-._~") else p.lower() for p in parts
    )
    assert primary_key(scheme, spelled, _target(respelled, query), PLAIN) == base


@given(hosts, st.text(alphabet="abcdefXYZ/", min_size=1, max_size=10))
def test_path_case_matters(host: str, path: str) -> None:
    path = "/" + path
    if path.swapcase() != path:
        assert primary_key("http", host, path, PLAIN) != primary_key("http", host, path.swapcase(), PLAIN)


@given(schemes, hosts, paths, queries, query_modes)
def test_url_key_agrees_with_primary_key(scheme: str, host: str, path: str, query: str, mode: str) -> None:
    opts = KeyOptions(query=mode)  # type: ignore[arg-type]
    target = _target(path, query)
    assert url_key(f"{scheme}://{host.upper()}{target}", opts) == primary_key(scheme, host, target, opts)


@given(st.lists(_param, min_size=2, max_size=6))
def test_sorted_query_is_order_insensitive_across_names(params: list[str]) -> None:
    names = [p.partition("=")[0] for p in params]
    if len(set(names)) == len(names):
        opts = KeyOptions(query="sort")
        assert primary_key("http", "h", "/?" + "&".join(params), opts) == primary_key(
            "http", "h", "/?" + "&".join(reversed(params)), opts
        )


# --- variants ---------------------------------------------------------------------------------------


def test_no_variant_configured_is_the_empty_suffix() -> None:
    assert variant_suffix({"user-agent": "iPhone", "cf-ipcountry": "fr"}, PLAIN) == ""


def test_variant_parts_in_fixed_order() -> None:
    opts = KeyOptions(device_type=True, country=True, language=True, origin=True, extra_headers=("X-Tenant",))
    headers = {
        "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
        "cf-ipcountry": "fr",
        "accept-language": "fr-CH;q=0.9, en;q=1",
        "origin": "HTTPS://Shop.Example.com",
        "x-tenant": "  acme ",
    }
    assert variant_suffix(headers, opts) == (
        "\x00dt=mobile\x00cc=\x00lang=fr-ch\x00origin=https://shop.example.com\x00h:x-tenant=acme"
    )
    assert "\x00cc=FR\x00" in variant_suffix(headers, opts, frozenset({"cf-ipcountry"}))


def test_missing_headers_are_empty_but_present() -> None:
    opts = KeyOptions(country=True, language=True, origin=True, extra_headers=("x-a",))
    assert variant_suffix({}, opts) == "\x00cc=\x00lang=\x00origin=\x00h:x-a="
    assert variant_suffix({"accept-language": "*"}, KeyOptions(language=True)) == "\x00lang="


def test_custom_country_header() -> None:
    opts = KeyOptions(country=True, country_header="X-Country")
    assert variant_suffix({"x-country": "de"}, opts, frozenset({"x-country"})) == "\x00cc=DE"
    # Not trusted: the client's value does not choose the variant.
    assert variant_suffix({"x-country": "de"}, opts) == "\x00cc="
    assert variant_suffix({"x-country": "de"}, opts, frozenset({"cf-ipcountry"})) == "\x00cc="


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 11_0 like Mac OS X) Version/11.0 Mobile/15A5341f Safari/604.1", "tablet"),
        ("Mozilla/5.0 (Linux; Android 13; Pixel 7) Chrome/120.0 Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X700) Chrome/120.0 Safari/537.36", "tablet"),
        ("Mozilla/5.0 (Linux; U; en-us; KFTT Build/IML74K) Silk/3.68 like Chrome/39 Safari/537.36", "tablet"),
        ("Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119", "mobile"),
        ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) Edge/15.14977", "mobile"),
        ("Mozilla/5.0 (BlackBerry; U; BlackBerry 9900; en) AppleWebKit/534.11+", "mobile"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            "desktop",
        ),
        ("curl/8.4.0", "desktop"),
        ("", "desktop"),
    ],
)
def test_device_type(ua: str, expected: str) -> None:
    assert device_type(ua) == expected


def test_explicit_device_type_header_wins_when_valid_and_trusted() -> None:
    opts = KeyOptions(device_type=True)
    trusted = frozenset({"cf-device-type"})
    assert (
        variant_suffix({"cf-device-type": "Tablet", "user-agent": "iPhone"}, opts, trusted) == "\x00dt=tablet"
    )
    assert (
        variant_suffix({"cf-device-type": "robot", "user-agent": "iPhone"}, opts, trusted) == "\x00dt=mobile"
    )
    # Untrusted (the default): the User-Agent decides, whatever the client claims.
    assert variant_suffix({"cf-device-type": "Tablet", "user-agent": "iPhone"}, opts) == "\x00dt=mobile"


def test_vary_suffix_collapses_list_whitespace() -> None:
    names = ("accept", "accept-encoding")
    a = vary_suffix(names, {"accept-encoding": "gzip,  br ", "accept": "text/html"})
    b = vary_suffix(names, {"accept-encoding": "gzip , br", "accept": " text/html"})
    assert a == b == "\x00v:accept=text/html\x00v:accept-encoding=gzip,br"
    assert vary_suffix(names, {"accept-encoding": "br"}) != a


def test_accept_language_normal_form() -> None:
    same = ["de-CH, fr;q=0.5, en", "en,de-ch,FR;q=0.50", " EN , de-ch ; q=1.0 ,fr;q=0.500"]
    assert {normalise_accept_language(v) for v in same} == {"de-ch,en,fr;q=0.5"}
    assert normalise_accept_language("fr;q=0.5, en") != normalise_accept_language("fr, en;q=0.5")
    assert normalise_accept_language("da;q=x,  en") == "da;q=x,en"
    names = ("accept-language",)
    assert vary_suffix(names, {"accept-language": "en, DE"}) == vary_suffix(
        names, {"accept-language": "de,en"}
    )


@given(
    st.lists(st.tuples(st.sampled_from(["en", "de-CH", "fr", "*"]), st.sampled_from(["", ";q=0.5", ";q=1"])))
)
def test_accept_language_normalisation_is_idempotent_and_order_blind(items: list[tuple[str, str]]) -> None:
    value = ", ".join(tag + q for tag, q in items)
    normal = normalise_accept_language(value)
    assert normalise_accept_language(normal) == normal
    assert normalise_accept_language(", ".join(tag + q for tag, q in reversed(items))) == normal


_values = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12)


@given(
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(["x-a", "x-b", "x-c"]), max_size=3, unique=True),
    st.lists(st.sampled_from(["accept", "accept-encoding", "x-v"]), max_size=3, unique=True),
    st.dictionaries(
        st.sampled_from(
            ["user-agent", "cf-ipcountry", "accept-language", "origin", "x-a", "x-b", "accept", "x-v"]
        ),
        _values,
    ),
)
def test_split_key_inverts_the_variant_suffix(
    dt: bool,
    cc: bool,
    lang: bool,
    origin: bool,
    extra: list[str],
    vary: list[str],
    headers: dict[str, str],
) -> None:
    opts = KeyOptions(device_type=dt, country=cc, language=lang, origin=origin, extra_headers=tuple(extra))
    primary = primary_key("https", "example.com", "/a?b=c", opts)
    suffix = variant_suffix(headers, opts) + vary_suffix(tuple(sorted(vary)), headers)
    got_primary, parts = split_key(primary + suffix)
    assert got_primary == primary
    expected_names = (
        (["dt"] if dt else [])
        + (["cc"] if cc else [])
        + (["lang"] if lang else [])
        + (["origin"] if origin else [])
        + ["h:" + h for h in extra]
        + ["v:" + v for v in sorted(vary)]
    )
    assert list(parts) == expected_names
    assert "".join(f"\x00{name}={value}" for name, value in parts.items()) == suffix
