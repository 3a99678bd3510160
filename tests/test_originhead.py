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

from edgecache.edge import origin_conn
from edgecache.edge._originhead import MAX_FIELDS, scan
from edgecache.edge._originhead import fields as head_fields
from edgecache.edge.fetch import _CONNECTION, _HOP_BY_HOP, _KIND_BY_NAME, _field_pass

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


def _left_to_python(fields: list[tuple[str, str]]) -> bool:
    """Whether ``scan`` leaves this head to the Python path, by the rules the module states: over
    ``MAX_FIELDS`` fields; a Transfer-Encoding other than one "chunked"; a Content-Length not of 1 to 18
    digits; a Connection field naming a field the fill reads, more than 16 other names (repeats
    count), or one of 64 bytes or more."""
    if len(fields) > MAX_FIELDS or _old_framing(fields) is None:
        return True
    named = 0
    for name, value in fields:
        lowered = name.lower()
        if lowered == "content-length":
            digits = value.strip()
            if not 1 <= len(digits) <= 18 or digits.strip("0123456789"):
                return True
        elif lowered == "connection":
            for token in (t.strip() for t in value.split(",")):
                if not token or not token.isascii():
                    continue  # names no field
                kind = _KIND_BY_NAME.get(token.lower())
                if kind is None:
                    named += 1
                    if named > 16 or len(token) >= 64:
                        return True
                elif kind not in (_HOP_BY_HOP, _CONNECTION):
                    return True
    return False


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


_status_lines = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 206 Partial Content",
            b"HTTP/1.0 404 Not Found",
            b"HTTP/1.1 304",
            b"HTTP/1.1 200 \xe9t\xe9",
        ]
    ),
    # A reason phrase with a colon looks like a field line: it must never be read as one.
    st.tuples(
        st.sampled_from([b"200", b"404"]),
        st.lists(st.sampled_from([b"a", b":", b" ", b"\t", b"Cache-Control", b"no-store", b"\xff"])),
    ).map(lambda t: b"HTTP/1.1 " + t[0] + b" " + b"".join(t[1])),
)
_heads = st.tuples(_status_lines, st.lists(_field_lines(), max_size=14)).map(
    lambda t: t[0] + b"\r\n" + b"".join(t[1]) + b"\r\n"
)
_blank = st.text(alphabet="\r\n", max_size=6).map(lambda s: s.encode())
"""What llhttp skips before a status line: any CR and LF, before the first head and after an
interim one."""
_INTERIM = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    head=_heads,
    lead=_blank,
    interim=st.booleans(),
    blank=_blank,
    body=st.sampled_from([b"", b"ok", b"\r\n\r\nA: b\r\n"]),
)
def test_the_c_head_is_the_python_head(
    head: bytes, lead: bytes, interim: bool, blank: bytes, body: bytes
) -> None:
    old = _accepted(head)
    assume(old is not None)
    assert old is not None
    # Where the connection starts reading a head: the exchange's first byte, or the end of the
    # interim head before it; blank lines may follow either (llhttp skips them).
    before = lead + _INTERIM if interim else b""
    start = len(before)
    assert _accepted(before + blank + head) == ([("Link", "</a>")] if interim else []) + old
    raw = before + blank + head + body
    end = start + len(blank) + len(head)
    for buf in (raw, bytearray(raw)):
        if interim:
            assert head_fields(buf, 0) == (start, [("Link", "</a>")])
        assert head_fields(buf, start) == (end, old)
        _check_scan(buf, start, end, old)


def _check_scan(buf: bytes | bytearray, start: int, end: int, old: list[tuple[str, str]]) -> None:
    """``scan`` leaves a head to Python exactly in the documented cases, and otherwise reads it as
    the old framing loop and field pass did."""
    result = scan(buf, start)
    assert (result is None) == _left_to_python(old)
    if result is None:
        return
    framing = _old_framing(old)
    end_, count, field_bytes, length, chunked, fill = result
    assert framing is not None
    assert (end_, count, field_bytes) == (end, len(old), sum(len(n) + len(v) for n, v in old))
    assert (length, chunked) == framing
    assert fill == _field_pass(old)


@settings(max_examples=300, deadline=None)
@given(
    line=_field_lines(),
    lines=st.sampled_from([60, 63, 64, 65, 70, 255, 256, 257, 258, 1100]),
    names=st.lists(
        st.one_of(
            st.sampled_from(["close", "X-A", "keep-alive", "upgrade", ""]),
            st.integers(min_value=60, max_value=70).map(lambda n: "x" * n),
        ),
        min_size=14,
        max_size=20,
    ),
    connections=st.integers(min_value=1, max_value=3),
)
def test_the_heads_left_to_python(line: bytes, lines: int, names: list[str], connections: int) -> None:
    """The fallbacks' edges: around 64 lines (where scan's table leaves the stack) and MAX_FIELDS
    (where a head is refused, and read no further by either function), 16 names in Connection
    (repeats count: "close" seventeen times is seventeen names), names of 64 bytes and more; the
    head's Connection list split over several fields."""
    parts = [names[i::connections] for i in range(connections)]
    connection = b"".join(b"Connection: " + ", ".join(p).encode() + b"\r\n" for p in parts)
    head = b"HTTP/1.1 200 OK\r\n" + connection + line * (lines - connections) + b"\r\n"
    old = _accepted(head)
    assume(old is not None)
    assert old is not None and len(old) == lines
    if lines > MAX_FIELDS:
        read = old[: MAX_FIELDS + 1]
        end = len(head) - 2 - (lines - MAX_FIELDS - 1) * len(line)
        assert head_fields(head, 0) == (end, read)
        assert scan(head, 0) is None
        return
    assert head_fields(head, 0) == (len(head), old)
    _check_scan(head, 0, len(head), old)


def test_a_head_over_the_field_limit_is_read_no_further() -> None:
    """Refused by its caller (``origin_conn.MAX_FIELDS``, the same limit) once the count passes the
    limit: the lines after are not looked at, so a long head costs no more than one just over it
    (here they are not even a head's; scanned whole, they were an error)."""
    assert MAX_FIELDS == origin_conn.MAX_FIELDS
    over = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_FIELDS + 1))
    head = b"HTTP/1.1 200 OK\r\n" + over + b"no colon, no end\r\n" * 1000
    assert scan(head, 0) is None
    end, read = head_fields(head, 0)
    assert (end, len(read)) == (len(b"HTTP/1.1 200 OK\r\n" + over), MAX_FIELDS + 1)
    assert read[-1] == (f"X-F{MAX_FIELDS}", "v")


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


def test_a_nul_where_a_known_name_ends_is_not_that_name() -> None:
    """``fields``/``scan`` are callable on any bytes: a name that is a known one, a NUL, then more
    (the next known name, as the table may lie next in memory) is no known name: it is stored as
    sent and decides nothing."""
    names = [name for name, _ in sorted(_KIND_BY_NAME.items())]
    for known in names:
        for after in [*names, "x"]:
            name = f"{known}\0{after}"
            result = scan(f"HTTP/1.1 200 OK\r\n{name}: 1\r\n\r\n".encode("latin-1"), 0)
            assert result is not None, name
            shown = f"{name}: 1\r\n".encode("latin-1")
            assert result[5] == (shown, [], [], [], [], None, None, None, False, False, [])
