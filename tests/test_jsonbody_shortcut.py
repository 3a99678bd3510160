"""The body check's shortcut (``api/jsonbody.py: _plain``): bodies it lets through without walking
the document are exactly those the walk accepts."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.api import jsonbody


def _walked(raw: bytes) -> object:
    """What ``load_json`` answers when every document is walked (the shortcut's reference)."""
    try:
        value = jsonbody._DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        return "too deep"
    except ValueError:
        return "invalid"
    try:
        jsonbody._check(value)
    except jsonbody.BadJson as exc:
        return str(exc)
    return value


_JSON_PIECES = st.sampled_from(
    [
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        '"',
        "\\",
        "\\ud800",
        "\\uDC00",
        "\\u00e9",
        "\\ud83d\\ude00",
        "a",
        "1",
        "\ud800",
        "é",
        "\\\\ud800",
        " ",
    ]
)


def _answers_as_the_walk(raw: bytes) -> None:
    """``load_json`` gives the reference walk's document, or refuses where the walk refuses."""
    expected = _walked(raw)
    try:
        got: object = jsonbody.load_json(raw)
    except jsonbody.BadJson as exc:
        got = str(exc)
    if isinstance(expected, str) and expected in ("too deep", "invalid"):
        assert isinstance(got, str)
    else:
        assert got == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(_JSON_PIECES, max_size=80), st.sampled_from([0, 1, 2, 63, 64, 65, 66]))
def test_the_body_checks_shortcut_answers_as_the_walk(pieces: list[str], depth: int) -> None:
    """Bodies the shortcut lets through unwalked (a UTF-8 body without a surrogate's escape or
    encoding, and with no more opening brackets than the depth allowed) are exactly those the walk
    accepts: the same document, the same refusals."""
    texts = (
        "".join(pieces),
        "[" * depth + '"' + "".join(p for p in pieces if p not in '[]{}"') + '"' + "]" * depth,
    )
    # Every encoding RFC 8259's detection reads: only UTF-8 may skip the walk (a UTF-16 body's raw
    # surrogate has no 0xED byte).
    encodings = ("utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
    for raw in (text.encode(encoding, "surrogatepass") for text in texts for encoding in encodings):
        if raw.strip():
            _answers_as_the_walk(raw)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00", b" ", b"{", b"["]),
    st.binary(max_size=8),
    st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]),
)
def test_any_body_is_read_in_the_encoding_json_detects(lead: bytes, noise: bytes, encoding: str) -> None:
    """Whatever its first bytes (a BOM, a NUL, ASCII, anything), a body is decoded as
    ``json.detect_encoding`` says (the shortcut for an ASCII byte then a non-NUL one included): the
    same document, or a refusal where the reference refuses."""
    for raw in (lead + noise, lead + '{"tags": ["a"]}'.encode(encoding), noise + b'["x"]'):
        if raw.strip():
            _answers_as_the_walk(raw)
