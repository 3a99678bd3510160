"""One path, many spellings: the key, the purge selectors and the origin target agree on every one.

The data plane accepts a path however it is spelled (dot-segments, ``%2e``, escaped unreserved
characters, either case of hex digits); RFC 3986 §6.2.2 says these are one resource. A purge of the
normal URL must cover every spelling, and what the origin is asked for must be that same resource.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecache.httpcache.key import KeyOptions, fill_target, normalise_path, primary_key, url_key
from edgecache.purge.selectors import Prefix, Url, matches

PLAIN = KeyOptions()
ZONE = "z"
HOST = "example.com"

_unreserved = "abcXYZ019-._~"
_char = st.sampled_from(list(_unreserved + "!$&'()*+,;=:@")) | st.sampled_from(
    ["%2F", "%3F", "%25", "%C3%A9"]
)
segments = st.lists(st.lists(_char, max_size=5).map("".join), min_size=1, max_size=5)
NOISE = [["."], ["%2e"], ["%2E"], ["zz", ".."], ["q", "%2E%2e"], ["q", ".%2E"], ["q", "r", "..", ".."]]


def _respell_segment(segment: str, draw: st.DrawFn) -> str:
    out = []
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            esc = segment[i : i + 3]
            out.append(esc.lower() if draw(st.booleans()) else esc)
            i += 3
            continue
        c = segment[i]
        if c in _unreserved and draw(st.booleans()):
            hex_ = f"{ord(c):02x}"
            out.append("%" + (hex_.upper() if draw(st.booleans()) else hex_))
        else:
            out.append(c)
        i += 1
    return "".join(out)


@st.composite
def spelled_paths(draw: st.DrawFn) -> tuple[str, str]:
    """(normal path, another spelling of it)."""
    normal = normalise_path("/" + "/".join(draw(segments)))
    parts: list[str] = []
    for segment in normal[1:].split("/"):
        if draw(st.booleans()):
            parts += draw(st.sampled_from(NOISE))
        parts.append(_respell_segment(segment, draw))
    return normal, "/" + "/".join(parts)


@given(spelled_paths(), st.sampled_from(["", "?a=1", "?a=/../b"]))
def test_a_purged_url_covers_every_spelling_the_data_plane_accepts(pair: tuple[str, str], query: str) -> None:
    normal, spelled = pair
    data_plane_key = primary_key("http", HOST, spelled + query, PLAIN)
    purge = Url(url_key(f"http://{HOST}{normal}{query}", PLAIN))
    assert matches(purge, ZONE, ZONE, data_plane_key, ())
    # The purge may itself be spelled any way.
    assert Url(url_key(f"http://{HOST}{spelled}{query}", PLAIN)) == purge


@given(spelled_paths())
def test_a_prefix_covers_every_spelling_below_it(pair: tuple[str, str]) -> None:
    normal, spelled = pair
    key = primary_key("http", HOST, spelled, PLAIN)
    assert matches(Prefix(HOST + normal), ZONE, ZONE, key, ())
    assert Prefix(HOST + spelled) == Prefix(HOST + normal)


@given(spelled_paths(), st.sampled_from(["", "?a=1", "?a=/../b"]))
def test_the_origin_is_asked_for_the_object_the_key_names(pair: tuple[str, str], query: str) -> None:
    normal, spelled = pair
    sent = fill_target(spelled + query, PLAIN)
    assert sent == normal + query
    assert primary_key("http", HOST, sent, PLAIN) == primary_key("http", HOST, spelled + query, PLAIN)


@given(st.text(max_size=30))
def test_normalisation_is_idempotent_on_any_text(path: str) -> None:
    once = normalise_path(path)
    assert once.startswith("/") and normalise_path(once) == once
