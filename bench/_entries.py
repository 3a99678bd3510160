"""The 1 KiB entry the disk-tier benches store: fresh for an hour, stored at sequence 0."""

from __future__ import annotations

import time

from edgecache.store.entry import Entry

HEAD = b"Content-Type: text/plain\r\nCache-Control: max-age=3600\r\n"


def entry(
    key: str,
    *,
    zone: str = "z",
    head: bytes = HEAD,
    tags: tuple[str, ...] = ("bench",),
    length_known: bool = False,
) -> Entry:
    """A 200 response of 1 KiB (``b"x"``) under ``key`` in ``zone``, received now."""
    return Entry(
        zone=zone,
        key=key,
        status=200,
        head=head,
        body=b"x" * 1024,
        tags=tags,
        stored_seq=0,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=3600.0,
        length_known=length_known,
    )
