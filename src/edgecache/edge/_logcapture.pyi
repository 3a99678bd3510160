from collections.abc import Callable

from edgecache.edge.http1 import Request

MAX_BATCH: int
"""The largest batch, header included."""
MAX_FIELD: int
"""A request's read is copied whole up to this size; else its values, each cut to it."""

class Capture:
    """The writing side of one access-log ring (decision 0017)."""

    def __init__(self, ring: object, capacity: int, on_batch: Callable[[], object] | None) -> None: ...
    def hit(self, req: Request, data: bytes, /) -> None: ...
    def add(
        self,
        req: Request,
        end: float,
        start: float,
        head_at: float,
        cache: bytes,
        sent: int,
        status: bytes,
        /,
    ) -> None: ...
    def flush(self) -> None: ...
    def release(self) -> None: ...
    @property
    def head(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def pending(self) -> int: ...

def checksum(data: bytes, crc: int = 0, /) -> int:
    """The CRC-32C of ``data``, continuing ``crc`` (the check of a batch)."""

def split(payload: bytes, count: int, /) -> list[bytes] | None:
    """A batch's payload as its ``count`` records, or None if it does not hold exactly those."""
