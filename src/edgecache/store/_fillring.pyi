import mmap

from typing_extensions import Buffer

from edgecache.store.entry import Entry

HARDWARE: bool
"""Whether ``crc32c`` (and the appender's seal) uses the CPU's CRC-32C instruction (SSE 4.2)."""

def crc32c(data: Buffer, /) -> int:
    """The CRC-32C of ``data``, as a record is sealed."""

def crc32c_portable(data: Buffer, /) -> int:
    """The CRC-32C of ``data`` by tables alone (what ``crc32c`` is without the instruction)."""

def checked(ring: Buffer, start: int, size: int, crc: int, /) -> bytes | None:
    """The ``size`` bytes at ``start`` of ``ring``, copied, when their CRC-32C is ``crc``; else None."""

class Appender:
    """The appending side of one fill ring, in C (fillring.PyAppender is its Python twin)."""

    def __init__(self, ring: mmap.mmap) -> None: ...
    def append(self, payload: bytes, flags: int, /) -> int: ...
    def append_entry(self, entry: Entry, reserve: bool, max_record: int, /) -> int: ...
    def release(self) -> None: ...
    @property
    def head(self) -> int: ...
    @property
    def appended(self) -> int: ...
