Fill = tuple[
    bytes,
    list[str],
    list[str],
    list[str],
    list[str],
    str | None,
    str | None,
    str | None,
    bool,
    bool,
    list[tuple[str, str]],
]
"""(stored head, Cache-Control, CDN-Cache-Control, Expires, Vary values, first Date, first
Last-Modified, first Age, ETag sent, Set-Cookie sent, tag fields): what a fill reads (decision 0024)."""

Response = tuple[int, int, bool, int, Fill]
"""(end of the head, status, keep-alive, Content-Length, what a fill reads): a final head read
without llhttp (``response``)."""

MAX_FIELDS: int
"""Fields a head may have (``origin_conn.MAX_FIELDS``): one with more is read no further."""
MAX_HEAD: int
"""Bytes of names and values a head may have (``origin_conn.MAX_HEAD``)."""

def fields(buf: bytes | bytearray, start: int, /) -> tuple[int, list[tuple[str, str]]]:
    """The head at ``buf[start:]`` (validated by llhttp) as httptools' on_header gives its fields,
    and the offset after it; of a head over ``MAX_FIELDS`` fields, the first ``MAX_FIELDS + 1`` and
    the offset after them."""

def scan(buf: bytes | bytearray, start: int, /) -> tuple[int, int, int, int | None, bool, Fill] | None:
    """(end, fields, bytes of names and values, Content-Length, chunked, what a fill reads), or
    None for a head the Python path takes (see ``_originhead.c``)."""

def response(read: bytes, /) -> Response | None:
    """The final head at the start of an exchange's first read, when it is whole and of the narrow
    shape read without llhttp (every such head llhttp accepts alike; see ``_originhead.c``);
    otherwise None, and llhttp parses the read."""
