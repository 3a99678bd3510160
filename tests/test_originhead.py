"""The origin head read in C (``edge/_originhead.c``, decision 0024) against the Python path it
replaced: httptools' ``on_header`` per field, the connection's framing loop, and the fill's field
pass with ``encode_head``. Every head llhttp accepts must give the same fields, framing, stored head
and storage-decision inputs, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest
from httptools import HttpParserError, HttpResponseParser
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgecache.edge._originhead import fields as head_fields
from edgecache.edge._originhead import scan
from edgecache.edge.fetch import _KIND_BY_NAME, _field_pass

KNOWN = [*sorted(_KIND_BY_NAME), "content-type", "close", "x-a", "server"]


class _Collect:
    """What origin_conn did before decision 0024: one (name, value) per on_header, latin-1."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.complete = True


def _old_framing(fields: list[tuple[str, str]]) -> tuple[int | None, bool] | None:
    """The connection's framing loop as it was; None where it failed the exchange."""
    length: int | None = None
    chunked = False
    for name, value in fields:
        if name.lower() == "transfer-encoding":
            if chunked or value.strip().lower() != "chunked":
                return None
            chunked = True
        elif name.lower() == "content-length":
            length = int(value)
    return length, chunked


def _accepted(head: bytes) -> list[tuple[str, str]] | None:
    proto = _Collect()
    try:
        HttpResponseParser(proto).feed_data(head)
    except HttpParserError:
        return None
    return proto.fields if proto.complete else None


def _case(name: str, flips: list[bool]) -> str:
    flips = (flips + [False] * len(name))[: len(name)]
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


_value_bytes = st.binary(max_size=24).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c <= 126 or c >= 128)
)
_token_values = st.lists(
    st.sampled_from([*KNOWN, "chunked", "gzip", "", " ", "\xa0keep-alive", "X-A "]), max_size=4
).map(lambda parts: ",".join(parts).encode("latin-1"))
_lengths = st.sampled_from([b"0", b"12", b"007", b"18446744073709551615", b"1 ", b"  5", b"x"])
_names = st.one_of(
    st.sampled_from(KNOWN),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12),
)


@st.composite
def _field_lines(draw: Any) -> bytes:
    name = draw(_names)
    name = _case(name, draw(st.lists(st.booleans(), max_size=len(name))))
    lowered = name.lower()
    if lowered == "content-length":
        value = draw(_lengths)
    elif lowered in ("connection", "transfer-encoding"):
        value = draw(_token_values)
    else:
        value = draw(st.one_of(_value_bytes, _token_values))
    ows = draw(st.sampled_from([b"", b" ", b"  ", b"\t", b" \t "]))
    return name.encode("latin-1") + b":" + ows + value + b"\r\n"


_heads = st.tuples(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 206 Partial Content",
            b"HTTP/1.0 404 Not Found",
            b"HTTP/1.1 304",
            b"HTTP/1.1 200 \xe9t\xe9",
        ]
    ),
    st.lists(_field_lines(), max_size=14),
).map(lambda t: t[0] + b"\r\n" + b"".join(t[1]) + b"\r\n")


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    head=_heads,
    before=st.sampled_from([b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]),
    body=st.sampled_from([b"", b"ok", b"\r\n\r\nA: b\r\n"]),
)
def test_the_c_head_is_the_python_head(head: bytes, before: bytes, body: bytes) -> None:
    old = _accepted(head)
    assume(old is not None)
    assert old is not None
    raw = before + head + body
    start = len(before)
    for buf in (raw, bytearray(raw)):
        assert head_fields(buf, start) == (start + len(head), old)
        framing = (
            _old_framing(old)
            if all(n.lower() != "content-length" or v.strip(" \t").isdigit() for n, v in old)
            else None
        )
        result = scan(buf, start)
        if result is None:
            # Left to Python: a framing error, a Content-Length of over 18 digits, or a Connection
            # field that names a field the fill reads (what the Python pass is for).
            named = {t.strip().lower() for n, v in old if n.lower() == "connection" for t in v.split(",")}
            long_length = any(n.lower() == "content-length" and len(v.strip()) > 18 for n, v in old)
            assert framing is None or long_length or named & set(_KIND_BY_NAME)
            continue
        end, count, field_bytes, length, chunked, fill = result
        assert framing is not None
        assert (end, count, field_bytes) == (
            start + len(head),
            len(old),
            sum(len(n) + len(v) for n, v in old),
        )
        assert (length, chunked) == framing
        assert fill == _field_pass(old)


@pytest.mark.parametrize("name", sorted(_KIND_BY_NAME))
def test_every_field_the_fill_reads_is_read_alike(name: str) -> None:
    """The C table of names (hop-by-hop, tags, what the decision reads) is the Python one."""
    value = "chunked" if name == "transfer-encoding" else "7" if name == "content-length" else "v, w"
    for spelt in (name, name.upper(), name.title()):
        head = f"HTTP/1.1 200 OK\r\n{spelt}: {value}\r\nX-Other: 1\r\n\r\n".encode()
        old = _accepted(head)
        assert old is not None
        result = scan(head, 0)
        assert result is not None
        assert result[5] == _field_pass(old)


def test_a_connection_field_drops_the_fields_it_names() -> None:
    head = b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nx-private: s\r\nX-Kept: k\r\n\r\n"
    result = scan(head, 0)
    assert result is not None
    assert result[5][0] == b"X-Kept: k\r\n"
