"""Objects larger than the memory tier's limit: kept on disk only, in chunks, and streamed from it.

Rules of this module (argued in docs/decisions/0009-persistent-tier.md, "Large objects"):
- A large object is one record in the disk cache like any other (the same indexes, purges and
  eviction), read as a :class:`ChunkedEntry`: its body is empty and its record holds a *manifest*
  (the length, the chunk size, the object id) instead of the bytes. The bytes are in the store's
  ``chunks`` database under ``object id + chunk number``, ``CHUNK_BYTES`` each (the last shorter), so
  no value is huge and a reader never holds more than one chunk.
- A :class:`LargeWrite` writes the chunks as the origin sends them, each through the disk writer's
  queue, and the record last, after every chunk. A reader therefore finds the record only once all
  of its chunks are committed: an interrupted write (origin error, client gone, ``kill -9``) leaves
  chunks that no record points to, never a record with missing bytes. Such orphans are dropped at
  once when the write knows it failed, and otherwise swept (``DiskStore.sweep_orphans``) once they
  are ``ORPHAN_AGE`` old: an object id starts with the time it was made, so the sweep never takes a
  write still under way in another process.
- A record's removal (delete, purge, eviction, clear) removes its chunks in the same transaction.
- A reader reads one chunk per read transaction and checks its length; a chunk that is gone (the
  object was replaced, purged or evicted meanwhile) ends the stream, so an answer never mixes the
  bytes of two objects: the proxy aborts the connection rather than send a short body.
- Large objects are never promoted into memory (that is what made them large) and never enter the
  Cache Reserve.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from edgecache.store.entry import Entry, init_values

CHUNK_BYTES = 1 << 20
"""Bytes per chunk: a commit (and its fsync) per MiB written, and at most a MiB read per step."""
MAX_PENDING = 32 << 20
"""Chunk bytes a write may have queued for the disk writer; past this the disk is falling behind
the origin, and the write gives up (the client's stream is not affected)."""
ORPHAN_AGE = 600.0
"""Seconds after which chunks no record points to are swept: far longer than any write takes."""

MANIFEST = struct.Struct("<QI16s")
"""length, chunk size, object id: the body of a large object's record."""
_INDEX = struct.Struct(">I")


def new_object_id() -> bytes:
    """16 bytes: the time in nanoseconds (big-endian, so ids sort by age) and 8 random bytes."""
    return struct.pack(">Q", time.time_ns()) + os.urandom(8)


def object_age(object_id: bytes, now: float) -> float:
    """Seconds since the object id was made."""
    made: int = struct.unpack_from(">Q", object_id)[0]
    return now - made / 1e9


def chunk_key(object_id: bytes, index: int) -> bytes:
    """The key of one chunk (after its object's bare id, which maps to the record's handle)."""
    return object_id + _INDEX.pack(index)


ChunkReader = Callable[[bytes, int], bytes | None]
"""``read(object_id, index)``: one chunk's bytes, or None when it is gone."""


def _no_reader(object_id: bytes, index: int) -> bytes | None:
    return None


@dataclass(slots=True, eq=False)
class ChunkedEntry(Entry):
    """A stored response whose body is on disk in chunks (``body`` is empty)."""

    length: int = 0
    object_id: bytes = b""
    chunk_size: int = CHUNK_BYTES
    read_chunk: ChunkReader = _no_reader
    """Set by the store that read the record."""

    @property
    def manifest(self) -> bytes:
        """What the record keeps in place of the body."""
        return MANIFEST.pack(self.length, self.chunk_size, self.object_id)

    def pieces(self, first: int, last: int) -> Iterator[bytes | None]:
        """The bytes ``first..last`` (inclusive) chunk by chunk, read as they are asked for; a
        None means the object is gone and the bytes so far are all there will be."""
        size = self.chunk_size
        index = first // size
        pos = first
        while pos <= last:
            data = self.read_chunk(self.object_id, index)
            start = index * size
            if data is None or len(data) != min(size, self.length - start):
                yield None
                return
            lo, hi = pos - start, min(last - start + 1, len(data))
            yield data if lo == 0 and hi == len(data) else data[lo:hi]
            pos = start + hi
            index += 1


def chunked_from(entry: Entry, manifest: bytes | memoryview) -> ChunkedEntry:
    """The large-object entry of a decoded record: ``entry`` with the manifest's fields."""
    length, chunk_size, object_id = MANIFEST.unpack(manifest)
    return _chunked(entry, length, object_id, chunk_size)


def _chunked(entry: Entry, length: int, object_id: bytes, chunk_size: int) -> ChunkedEntry:
    values = init_values(entry)
    values["body"] = b""
    return ChunkedEntry(**values, length=length, object_id=object_id, chunk_size=chunk_size)


class ChunkSink(Protocol):
    """Where a large write sends its chunks (``DiskStore``)."""

    def write_chunk(self, object_id: bytes, index: int, data: bytes) -> Future[None]:
        """Queue one chunk for the writer."""
        ...

    def drop_object(self, object_id: bytes) -> None:
        """Queue the removal of every chunk of an object no record points to."""
        ...


class LargeWrite:
    """One large object on its way to disk: chunks as they arrive, then :meth:`finish`."""

    def __init__(self, sink: ChunkSink, chunk_size: int = CHUNK_BYTES) -> None:
        self.object_id = new_object_id()
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._index = 0
        self.length = 0
        self._queued: list[tuple[Future[None], int]] = []
        self.abandoned = False

    def add(self, data: bytes) -> bool:
        """Take the next bytes of the body; False once the write has given up (the disk fell more
        than ``MAX_PENDING`` behind, or a chunk failed)."""
        if self.abandoned:
            return False
        self.length += len(data)
        self._buffer.append(data)
        self._buffered += len(data)
        while self._buffered >= self._chunk_size:
            joined = b"".join(self._buffer)
            self._send(joined[: self._chunk_size])
            rest = joined[self._chunk_size :]
            self._buffer = [rest] if rest else []
            self._buffered = len(rest)
        if self._pending() > MAX_PENDING:
            self.abandon()
        return not self.abandoned

    def finish(self, entry: Entry) -> ChunkedEntry | None:
        """Send the last chunk and return the entry to store (its record must be queued after the
        chunks, by the caller); None when the write had given up."""
        if self.abandoned:
            return None
        if self._buffered:
            self._send(b"".join(self._buffer))
            self._buffer = []
            self._buffered = 0
        return _chunked(entry, self.length, self.object_id, self._chunk_size)

    def abandon(self) -> None:
        """Give up: the chunks written so far are removed (no record will point to them)."""
        if not self.abandoned:
            self.abandoned = True
            self._buffer = []
            self._sink.drop_object(self.object_id)

    def _send(self, data: bytes) -> None:
        self._queued.append((self._sink.write_chunk(self.object_id, self._index, data), len(data)))
        self._index += 1

    def _pending(self) -> int:
        failed = any(f.done() and f.exception() is not None for f, _ in self._queued)
        if failed:
            return MAX_PENDING + 1
        self._queued = [(f, n) for f, n in self._queued if not f.done()]
        return sum(n for _, n in self._queued)
