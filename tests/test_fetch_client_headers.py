"""A fill's fields as clients are shown them (``Fetch.client_headers``): decoded from the stored
head once, however many of the rare paths (a 206, a conditional request answered from the fill)
read them, and decoded anew when the head changes (a revalidation)."""

from __future__ import annotations

from test_fetch_wait_head import _fetch


def test_the_shown_fields_are_decoded_once_per_head() -> None:
    fetch = _fetch()
    fetch.head_bytes = b'ETag: "a"\r\nContent-Type: text/plain\r\n'
    first = fetch.client_headers
    assert list(first) == [("ETag", '"a"'), ("Content-Type", "text/plain")]
    assert fetch.client_headers is first
    fetch.head_bytes = b'ETag: "b"\r\n'
    assert list(fetch.client_headers) == [("ETag", '"b"')]
