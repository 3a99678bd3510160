"""Hop-by-hop removal, 304 merging and the stored head encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.headers import decode_head, encode_head, merge_304, strip_hop_by_hop


def test_strip_hop_by_hop_and_connection_named_fields() -> None:
    headers = [
        ("Content-Type", "text/html"),
        ("Connection", "keep-alive, X-Trace"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("x-trace", "abc"),
        ("Proxy-Authenticate", "Basic"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert strip_hop_by_hop(headers) == [
        ("Content-Type", "text/html"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_merge_304_replaces_fields_in_place_and_appends_new_ones() -> None:
    stored = [
        ("Content-Type", "text/html"),
        ("Cache-Control", "max-age=60"),
        ("ETag", '"v1"'),
        ("cache-control", "public"),
        ("Content-Length", "10"),
    ]
    fresh = [
        ("Cache-Control", "max-age=120"),
        ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("Content-Length", "0"),
        ("Connection", "close"),
    ]
    assert merge_304(stored, fresh) == [
        ("Content-Type", "text/html"),
        ("Cache-Control", "max-age=120"),
        ("ETag", '"v1"'),
        ("Content-Length", "10"),
        ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
    ]


def test_merge_304_keeps_every_line_of_a_repeated_new_field() -> None:
    merged = merge_304([("Link", "</a>"), ("X", "1")], [("link", "</b>"), ("link", "</c>")])
    assert merged == [("link", "</b>"), ("link", "</c>"), ("X", "1")]


def test_merge_304_ignores_fields_named_in_its_connection() -> None:
    assert merge_304([("A", "1")], [("Connection", "x-hop"), ("X-Hop", "2")]) == [("A", "1")]


def test_encode_head_format() -> None:
    assert (
        encode_head([("Content-Type", "text/html"), ("X", "é")]) == b"Content-Type: text/html\r\nX: \xe9\r\n"
    )
    assert encode_head([]) == b""
    assert decode_head(b"") == []


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: evil=1", "a\nb", "a\rb"])
def test_encode_head_refuses_line_breaks(value: str) -> None:
    with pytest.raises(ValueError):
        encode_head([("X", value)])


_name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)


@given(st.lists(st.tuples(_name, _value), max_size=20))
def test_decode_head_inverts_encode_head(headers: list[tuple[str, str]]) -> None:
    assert decode_head(encode_head(headers)) == headers
