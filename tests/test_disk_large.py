"""Objects larger than the memory tier's max_object_bytes: stored on disk in chunks, streamed from
it, answered in ranges, purged like any other, never served truncated (store/chunked.py)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.config import Storage
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.purge.selectors import Mode, Purge, Tag
from edgecache.store.chunked import CHUNK_BYTES, ChunkedEntry, LargeWrite
from edgecache.store.disk import DiskStore, WriteView
from edgecache.store.entry import Entry

LIMIT = 256 * 1024
BIG = bytes(range(256)) * (5 * CHUNK_BYTES // 256) + b"tail of the object"
"""Five chunks and a bit: several MiB, far above the memory tier's limit."""


@pytest.fixture
def big() -> Iterator[Stack]:
    s = Stack(storage=Storage(max_object_bytes=LIMIT))
    s.origin.routes["/big"] = Route(
        body=BIG, headers={"Cache-Control": "max-age=600", "Cache-Tag": "video"}, chunks=40
    )
    try:
        yield s
    finally:
        s.close()


def flush(stack: Stack) -> None:
    stack.run(stack.node.reclaimer.drain())
    assert stack.node.disk is not None
    assert stack.node.disk.flush(20)


def chunk_rows(stack: Stack) -> int:
    disk = stack.node.disk
    assert disk is not None
    with disk.env.begin(db=disk._chunks) as txn:
        return int(txn.stat(disk._chunks)["entries"])


def test_a_large_object_is_a_disk_hit_with_identical_bytes(big: Stack) -> None:
    status, headers, body = big.request("/big")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", BIG)
    flush(big)
    for _ in range(2):
        status, headers, body = big.request("/big")
        assert status == 200 and body == BIG
        assert headers["cf-cache-status"] == "HIT"
        # Never promoted into memory: every hit streams from disk and says so.
        assert headers["cache-status"].endswith("; detail=disk")
        assert headers["content-length"] == str(len(BIG))
    assert big.origin.hits["/big"] == 1
    assert big.call(lambda: big.node.store.keys_with_prefix("http://test.example/big")) == []


def test_a_large_object_without_content_length_is_stored_too(big: Stack) -> None:
    big.origin.routes["/chunked"] = Route(
        body=BIG, headers={"Cache-Control": "max-age=600"}, chunked=True, chunks=30
    )
    assert big.request("/chunked")[2] == BIG
    flush(big)
    status, headers, body = big.request("/chunked")
    assert (status, headers["cf-cache-status"], body) == (200, "HIT", BIG)
    assert big.origin.hits["/chunked"] == 1


def test_a_large_object_survives_a_restart(big: Stack) -> None:
    big.request("/big")
    flush(big)
    big.restart()
    status, headers, body = big.request("/big")
    assert (status, body) == (200, BIG)
    assert headers["cache-status"].endswith("; detail=disk")
    assert big.origin.hits["/big"] == 1


def test_ranges_of_a_large_object_are_answered_from_disk(big: Stack) -> None:
    big.request("/big")
    flush(big)
    first, last = CHUNK_BYTES - 10, 3 * CHUNK_BYTES + 5  # across four chunks
    status, headers, body = big.request("/big", headers={"Range": f"bytes={first}-{last}"})
    assert status == 206 and body == BIG[first : last + 1]
    assert headers["content-range"] == f"bytes {first}-{last}/{len(BIG)}"
    assert headers["cf-cache-status"] == "HIT"
    status, headers, body = big.request("/big", headers={"Range": "bytes=-18"})
    assert (status, body) == (206, b"tail of the object")
    status, headers, _ = big.request("/big", headers={"Range": f"bytes={len(BIG)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(BIG)}"
    # Several ranges: the whole object (a multipart body would be built in memory).
    status, _, body = big.request("/big", headers={"Range": "bytes=0-1,5-9"})
    assert (status, body) == (200, BIG)
    assert big.origin.hits["/big"] == 1


def test_head_and_conditionals_on_a_large_object(big: Stack) -> None:
    big.origin.routes["/big"].headers["ETag"] = '"v1"'
    big.request("/big")
    flush(big)
    status, headers, body = big.request("/big", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(BIG)))
    status, _, body = big.request("/big", headers={"If-None-Match": '"v1"'})
    assert (status, body) == (304, b"")


def purge_tag(stack: Stack, tag: str, mode: Mode = Mode.DELETE) -> None:
    purge = Purge(stack.node.index.position + 1, ZONE_ID, mode, (Tag(tag),), time.time())
    LedgerStore(stack.node.database).append(
        NewPurge(
            zone_id=ZONE_ID,
            mode=mode.value,
            selectors={"tags": [tag]},
            principal="test",
            dialect="cli",
            job_id="b" * 32,
            created_at=datetime.now(UTC),
        )
    )
    stack.call(lambda: stack.node.apply_purge(purge))


def test_a_purge_makes_it_a_miss_and_removes_its_chunks(big: Stack) -> None:
    big.request("/big")
    flush(big)
    assert chunk_rows(big) == 6 + 1  # its chunks, and its object id's row
    purge_tag(big, "video")
    status, headers, body = big.request("/big")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", BIG)
    assert big.origin.hits["/big"] == 2
    flush(big)
    # The refill's chunks only: the purged object's went with its record.
    assert chunk_rows(big) == 6 + 1
    big.restart()
    assert big.request("/big")[1]["cache-status"].endswith("; detail=disk")


def test_a_replaced_object_drops_the_old_chunks(big: Stack) -> None:
    big.origin.routes["/big"].headers["Cache-Control"] = "max-age=1"
    big.request("/big")
    flush(big)
    time.sleep(2.1)
    status, headers, body = big.request("/big")
    assert (status, body) == (200, BIG) and headers["cf-cache-status"] != "HIT"
    flush(big)
    assert chunk_rows(big) == 6 + 1
    disk = big.node.disk
    assert disk is not None
    used, count = disk.usage()
    assert count == 1 and used > len(BIG)


def test_a_client_gone_mid_fill_leaves_no_object_and_no_chunks(big: Stack) -> None:
    big.origin.routes["/slow"] = Route(
        body=BIG, headers={"Cache-Control": "max-age=600"}, chunks=40, chunk_delay=0.05
    )
    conn = http.client.HTTPConnection("127.0.0.1", big.node.data_port, timeout=10)
    conn.request("GET", "/slow", headers={"Host": "test.example"})
    resp = conn.getresponse()
    resp.read(2 * CHUNK_BYTES)
    conn.close()
    time.sleep(1.0)
    flush(big)
    assert chunk_rows(big) == 0
    status, headers, body = big.request("/slow")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", BIG)


def test_orphan_chunks_are_swept(big: Stack) -> None:
    disk = big.node.disk
    assert disk is not None
    write = LargeWrite(disk)
    write.add(b"x" * (2 * CHUNK_BYTES))
    flush(big)
    assert chunk_rows(big) == 2
    disk.sweep_orphans(older_than=3600).result(10)
    assert chunk_rows(big) == 2, "a write that may still be under way is kept"
    disk.sweep_orphans(older_than=0).result(10)
    assert chunk_rows(big) == 0


def test_a_player_asking_for_bytes_0_stores_the_whole_object(big: Stack) -> None:
    big.origin.routes["/video"] = Route(
        body=BIG, headers={"Cache-Control": "max-age=600", "ETag": '"v"'}, ranges=True, chunks=40
    )
    status, headers, body = big.request("/video", headers={"Range": "bytes=0-"})
    assert (status, headers["cf-cache-status"], body) == (206, "MISS", BIG)
    flush(big)
    status, headers, body = big.request("/video")
    assert (status, headers["cf-cache-status"], body) == (200, "HIT", BIG)
    assert "content-range" not in headers
    status, headers, body = big.request("/video", headers={"Range": "bytes=100-199"})
    assert (status, body) == (206, BIG[100:200])
    assert big.origin.hits["/video"] == 1


def test_a_soft_purge_marks_it_stale_on_disk_and_it_is_refetched(big: Stack) -> None:
    big.request("/big")
    flush(big)
    purge_tag(big, "video", Mode.INVALIDATE)
    flush(big)
    big.restart()  # what the reclaimer rewrote on disk is read back as a large object, stale
    status, headers, body = big.request("/big")
    assert (status, body) == (200, BIG) and headers["cf-cache-status"] != "HIT"
    assert big.origin.hits["/big"] == 2
    flush(big)
    status, headers, body = big.request("/big")
    assert (status, headers["cf-cache-status"], body) == (200, "HIT", BIG)


def test_a_reader_never_finds_the_record_before_its_chunks(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path, budget=1 << 30, position=0, map_size=1 << 30)
    seen: list[int] = []
    current = ["http://h/large0"]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            found = disk.get(current[0])
            if found is not None:
                entry = found[0]
                assert isinstance(entry, ChunkedEntry)
                seen.append(sum(len(p or b"") for p in entry.pieces(0, entry.length - 1)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for round_ in range(5):
            current[0] = f"http://h/large{round_}"
            write = LargeWrite(disk, chunk_size=64 * 1024)
            write.add(bytes([round_]) * (20 * 64 * 1024 + 7))
            entry = write.finish(Entry("z", current[0], 200, b"", b"", (), 0, time.time(), 0.0, 600.0))
            assert entry is not None
            disk.put(entry)
            assert disk.flush(10)
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
        disk.close()
    # Every time the record was found, every chunk was there.
    assert seen and set(seen) == {20 * 64 * 1024 + 7}


def _store_large(disk: DiskStore, key: str, fill: int, seq: int, zone: str = "z") -> ChunkedEntry:
    write = LargeWrite(disk, chunk_size=64 * 1024)
    write.add(bytes([fill]) * (3 * 64 * 1024 + 5))
    entry = write.finish(Entry(zone, key, 200, b"", b"", (), seq, time.time(), 0.0, 600.0))
    assert entry is not None
    disk.put(entry)
    return entry


def test_a_zone_wipe_drops_the_chunks_it_removes_and_keeps_those_it_writes_back(tmp_path: Path) -> None:
    """A purge of everything empties the zone's database with one drop: the large objects stored
    before it lose their chunks in that transaction, one stored after it is written back whole
    (record and chunks), and another zone's are untouched; the byte counts follow."""
    disk = DiskStore(tmp_path, budget=1 << 30, position=0, map_size=1 << 30)
    try:
        old = _store_large(disk, "http://h/old", 1, 5)
        later = _store_large(disk, "http://h/later", 2, 50)
        other = _store_large(disk, "http://g/other", 3, 5, zone="y")
        assert disk.flush(10)
        size = 3 * 64 * 1024 + 5

        def wipe(view: WriteView) -> bool:
            return view.wipe_zone("z", None, 10, lambda c, r, b: None)

        disk.run_job(wipe).result(10)
        assert disk.get(old.key) is None
        assert disk.read_chunk(old.object_id, 0) is None
        with disk.env.begin(db=disk._chunks) as txn:
            ids = {bytes(k)[:16] for k in txn.cursor().iternext(keys=True, values=False)}
        assert ids == {later.object_id, other.object_id}  # no chunk of the dropped object is left
        for entry, fill in ((later, 2), (other, 3)):
            found = disk.get(entry.key)
            assert found is not None and isinstance(found[0], ChunkedEntry)
            assert b"".join(p or b"" for p in found[0].pieces(0, size - 1)) == bytes([fill]) * size
        used, count = disk.usage()
        assert count == 2 and used > 2 * size
        # The kept object is still removed with its chunks later (its ``g`` row was written back).
        disk.run_job(lambda view: view.wipe_zone("z", None, 1 << 62, lambda c, r, b: None)).result(10)
        assert disk.read_chunk(later.object_id, 0) is None and disk.usage()[1] == 1
    finally:
        disk.close()
