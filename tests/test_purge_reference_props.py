"""Property test: ``purge.matches`` and the selector constructors agree with the matching rules
written independently in ``purge_reference.covers``, for selectors as users type them (any case,
surrounding spaces, ports, queries, bare hosts, a "?" in a prefix) and keys as the cache builds them.

Selectors are drawn partly from the entry itself (its URL, host, a slice of its path, one of its
tags), so that both answers, covered and not covered, are common.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.purge import Everything, Host, Prefix, Selector, Tag, Url, matches
from purge_reference import KINDS, covers, normal_path

ZONES = ("z1", "z2")
HOSTS = ("a.com", "b.com", "a.com:8080", "www.a.com", "a.co")
SEGMENTS = ("", "a", "ab", "B", "a.b", "%2F")
TAGS = ("blog", "news", "post-1", "x y")


def _random_case(s: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(s), max_size=len(s)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(s, up, strict=True))
    )


def _padded(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, v, b: a + v + b, st.sampled_from(("", " ")), s, st.sampled_from(("", " ")))


path_st = st.lists(st.sampled_from(SEGMENTS), max_size=4).map(lambda segs: "/" + "/".join(segs))
key_st = st.builds(
    lambda scheme, host, path, query, variant: f"{scheme}://{host}{path}{query}{variant}",
    st.sampled_from(("http", "https")),
    st.sampled_from(HOSTS),
    path_st,
    st.sampled_from(("", "?x=1", "?y", "?a/b")),
    st.sampled_from(("", "\x00dt=mobile", "\x00dt=mobile\x00cc=ES")),
)
entry_tags_st = st.lists(st.sampled_from(TAGS), max_size=3, unique=True).map(tuple)


def build(kind: str, value: str) -> Selector:
    """The selector the API layer builds from what the user typed."""
    if kind == "url":
        return Url(value)
    if kind == "tag":
        return Tag(value)
    if kind == "host tag":
        tag_host, _, tag = value.partition(" ")
        return Tag(tag, host=tag_host)
    if kind == "host":
        return Host(value)
    if kind == "prefix":
        return Prefix(value)
    return Everything()


@st.composite
def typed_selector(draw: st.DrawFn, key: str, tags: tuple[str, ...]) -> tuple[str, str]:
    """A selector as a user would type it, about this entry or about something near it."""
    kind = draw(st.sampled_from(KINDS))
    primary = key.split("\x00", 1)[0]
    rest = primary.split("://", 1)[1]
    host, slash, path = rest.partition("/")
    if kind == "url":
        other = draw(key_st)
        return kind, draw(st.sampled_from((key, primary, other, other.split("\x00", 1)[0])))
    if kind == "tag":
        tag = draw(st.sampled_from((*tags, *TAGS))) if tags else draw(st.sampled_from(TAGS))
        return kind, draw(_padded(_random_case(tag)))
    if kind == "host tag":
        tag = draw(st.sampled_from((*tags, *TAGS))) if tags else draw(st.sampled_from(TAGS))
        tag_host = draw(st.sampled_from((host, host, *HOSTS)).flatmap(_random_case))
        return kind, tag_host + " " + draw(_random_case(tag))
    if kind == "host":
        return kind, draw(_padded(st.sampled_from((host, host, *HOSTS)).flatmap(_random_case)))
    if kind == "prefix":
        own = (slash + path).split("?", 1)[0]
        cut = draw(st.integers(0, len(own)))
        tail = draw(st.sampled_from(("", "", "x", "/", "?x=1", "/.", "/..", "/../a", "/./B", "%62", "%2f")))
        # Mostly the entry's own host: the path rules only matter once the host matches.
        host_part = draw(st.sampled_from((host, host, host, *HOSTS)).flatmap(_random_case))
        return kind, draw(_padded(st.just(host_part + own[:cut] + tail)))
    return kind, ""


@settings(max_examples=1500, deadline=None)
@given(st.data(), key_st, entry_tags_st, st.sampled_from(ZONES), st.sampled_from(ZONES))
def test_matches_follows_the_documented_rules(
    data: st.DataObject, key: str, tags: tuple[str, ...], purge_zone: str, entry_zone: str
) -> None:
    kind, value = data.draw(typed_selector(key, tags))
    expected = covers(kind, value, purge_zone, entry_zone, key, tags)
    assert matches(build(kind, value), purge_zone, entry_zone, key, tags) == expected


def test_the_reference_by_example() -> None:
    # The documentation's own examples, so the oracle itself is checked against the promise.
    key = "https://example.com/bar/baz?x=1\x00dt=mobile"
    assert covers("prefix", "example.com/bar", "z", "z", key, ())
    assert covers("prefix", "EXAMPLE.com/ba", "z", "z", key, ())
    assert not covers("prefix", "example.com/Bar", "z", "z", key, ())
    assert not covers("prefix", "example.com/bar?x=1", "z", "z", key, ())
    assert covers("prefix", "example.com", "z", "z", key, ())
    assert not covers("host", "www.example.com", "z", "z", key, ())
    assert covers("url", "https://example.com/bar/baz?x=1", "z", "z", key, ())
    assert not covers("url", "http://example.com/bar/baz?x=1", "z", "z", key, ())
    assert covers("tag", " Shoes ", "z", "z", key, ("shoes",))
    assert covers("host tag", "Example.com shoes", "z", "z", key, ("shoes",))
    assert not covers("host tag", "www.example.com shoes", "z", "z", key, ("shoes",))
    assert not covers("everything", "", "z", "other", key, ())
    assert covers("prefix", "example.com/x/../bar/%62az", "z", "z", key, ())
    # RFC 3986 §5.2.4's own examples.
    assert normal_path("/a/b/c/./../../g") == "/a/g"
    assert normal_path("mid/content=5/../6") == "/mid/6"
    assert normal_path("/%7euser/%2f") == "/~user/%2F"
