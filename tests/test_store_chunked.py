"""Large objects in chunks (store/chunked.py): what a LargeWrite sends is what pieces() gives back,
for any body, chunk size and range; a missing chunk ends the stream rather than skipping bytes."""

from __future__ import annotations

from concurrent.futures import Future

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.store.chunked import ChunkedEntry, LargeWrite
from edgecache.store.entry import Entry


class MemorySink:
    """Chunks kept in a dict, committed at once."""

    def __init__(self) -> None:
        self.chunks: dict[tuple[bytes, int], bytes] = {}
        self.dropped: list[bytes] = []

    def write_chunk(self, object_id: bytes, index: int, data: bytes) -> Future[None]:
        self.chunks[(object_id, index)] = data
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def drop_object(self, object_id: bytes) -> None:
        self.dropped.append(object_id)

    def read(self, object_id: bytes, index: int) -> bytes | None:
        return self.chunks.get((object_id, index))


def written(body: bytes, pieces: list[int], chunk_size: int, sink: MemorySink) -> ChunkedEntry:
    write = LargeWrite(sink, chunk_size=chunk_size)
    pos = 0
    for n in pieces:
        assert write.add(body[pos : pos + n])
        pos += n
    assert write.add(body[pos:])
    entry = write.finish(Entry("z", "k", 200, b"", b"", (), 0, 0.0, 0.0, 60.0))
    assert entry is not None and entry.length == len(body)
    entry.read_chunk = sink.read
    return entry


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=5000),
    pieces=st.lists(st.integers(min_value=0, max_value=700), max_size=10),
    chunk_size=st.integers(min_value=1, max_value=1200),
    data=st.data(),
)
def test_pieces_give_back_any_range_of_what_was_written(
    body: bytes, pieces: list[int], chunk_size: int, data: st.DataObject
) -> None:
    sink = MemorySink()
    entry = written(body, pieces, chunk_size, sink)
    first = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    last = data.draw(st.integers(min_value=first, max_value=len(body) - 1))
    got = list(entry.pieces(first, last))
    assert None not in got
    assert b"".join(p for p in got if p is not None) == body[first : last + 1]
    assert all(len(p or b"") <= chunk_size for p in got)


def test_a_missing_chunk_ends_the_stream() -> None:
    sink = MemorySink()
    entry = written(b"abcdefghij", [], 3, sink)
    del sink.chunks[(entry.object_id, 2)]
    assert list(entry.pieces(0, 9)) == [b"abc", b"def", None]


def test_an_abandoned_write_drops_its_chunks_and_stores_nothing() -> None:
    sink = MemorySink()
    write = LargeWrite(sink, chunk_size=4)
    write.add(b"0123456789")
    write.abandon()
    assert sink.dropped == [write.object_id]
    assert not write.add(b"more")
    assert write.finish(Entry("z", "k", 200, b"", b"", (), 0, 0.0, 0.0, 60.0)) is None
