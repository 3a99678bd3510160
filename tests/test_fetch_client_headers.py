"""A fill's fields as clients are shown them (``Fetch.client_headers``): decoded from the stored
head once, however many of the rare paths (a 206, a conditional request answered from the fill)
read them. A fetch's head is set once (its response's, or after a 304 the freshened stored one's):
a revalidation is a fetch of its own."""

from __future__ import annotations

from test_fetch_wait_head import _fetch


def test_the_shown_fields_are_decoded_once_per_head() -> None:
    fetch = _fetch()
    fetch.head_bytes = b'ETag: "a"\r\nContent-Type: text/plain\r\n'
    first = fetch.client_headers
    assert list(first) == [("ETag", '"a"'), ("Content-Type", "text/plain")]
    assert fetch.client_headers is first


def test_each_fetch_shows_its_own_head() -> None:
    one, other = _fetch(), _fetch()
    one.head_bytes = b'ETag: "a"\r\n'
    other.head_bytes = b'ETag: "b"\r\n'
    assert list(one.client_headers) == [("ETag", '"a"')]
    assert list(other.client_headers) == [("ETag", '"b"')]
