"""The hit path's reads share one LMDB read transaction per turn of the event loop
(``DiskStore.read_in_turns``): what a user would notice if that snapshot outlived what it may.

A purged object is never served from an older snapshot (this process's removal job, or another
process's, having committed earlier in the same turn: the reclaimer may already have compacted the
purge's epoch rows), a zone database published meanwhile is used, and another process's fills are
seen from the next turn on. Real LMDB, real writer thread, real event loop, real processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Mode, Purge, Tag
from edgecache.store.disk import CACHE, DiskStore, WriteView
from edgecache.store.disk_layout import handle
from edgecache.store.entry import Entry

PURGE = Purge(11, "z", Mode.DELETE, (Tag("t"),), 0.0)


def make(key: str, body: bytes = b"body", tags: tuple[str, ...] = ()) -> Entry:
    return Entry("z", key, 200, b"Content-Type: text/plain\r\n", body, tags, 3, 1000.0, 2.0, 60.0)


def open_store(path: Path) -> DiskStore:
    return DiskStore(path, budget=1 << 30, position=0, map_size=1 << 28, reserve_budget=lambda zone: 1 << 20)


def stored(path: Path, *entries: Entry) -> DiskStore:
    store = open_store(path)
    for entry in entries:
        store.put(entry)
    assert store.flush(10)
    return store


def test_a_record_a_removal_job_took_earlier_in_the_turn_is_not_read(tmp_path: Path) -> None:
    async def main() -> None:
        store = stored(tmp_path, make("http://h/a", b"purged", ("t",)), make("http://h/b"))
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        try:
            assert store.get("http://h/b") is not None  # the turn's read transaction begins here
            # The purge's disk job commits while the turn goes on (no await in between).
            store.run_job(DiskReclaim(PURGE)).result(10)
            assert store.get("http://h/a") is None
            assert store.lookup("http://h/a") == (None, ("http://h/a", None))
            assert store.get("http://h/b") is not None
        finally:
            store.close()

    asyncio.run(main())


_REMOVER = """
import sys
from pathlib import Path
from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Mode, Purge, Tag
from edgecache.store.disk import DiskStore

store = DiskStore(Path(sys.argv[1]), budget=1 << 30, position=0, map_size=1 << 28)
store.run_job(DiskReclaim(Purge(11, "z", Mode.DELETE, (Tag("t"),), 0.0))).result(10)
store.close()
"""


def test_a_record_another_process_purged_is_not_read_once_this_process_reclaimed(tmp_path: Path) -> None:
    """The other worker's job removes the record; this process's job for the same purge then finds
    nothing to remove, and this process may compact the purge's epoch rows: a read later in the
    same turn must not find the record in the turn's older snapshot."""

    async def main() -> None:
        store = stored(tmp_path, make("http://h/a", b"purged", ("t",)), make("http://h/b"))
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        try:
            assert store.get("http://h/b") is not None  # the turn's read transaction begins here
            out = subprocess.run(
                [sys.executable, "-c", _REMOVER, str(tmp_path)], capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            progress = DiskReclaim(PURGE)
            store.run_job(progress).result(10)
            assert sum(progress.counts.values()) == 0  # nothing left here to remove
            assert store.get("http://h/a") is None
        finally:
            store.close()

    asyncio.run(main())


_FILLER = """
import sys
from pathlib import Path
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry

store = DiskStore(Path(sys.argv[1]), budget=1 << 30, position=0, map_size=1 << 28)
store.put(Entry("z", "http://h/from-child", 200, b"", b"child", (), 3, 0.0, 0.0, 60.0))
assert store.flush(10)
store.close()
"""


def test_another_process_fill_is_read_from_the_next_turn_on(tmp_path: Path) -> None:
    async def main() -> None:
        store = stored(tmp_path, make("http://h/b"))
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        try:
            assert store.get("http://h/from-child") is None
            out = subprocess.run(
                [sys.executable, "-c", _FILLER, str(tmp_path)], capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            await asyncio.sleep(0)  # the turn ends, and its snapshot with it
            found = store.get("http://h/from-child")
            assert found is not None and found[0].body == b"child"
        finally:
            store.close()

    asyncio.run(main())


def test_a_reserve_database_created_after_a_read_of_its_zone_is_read(tmp_path: Path) -> None:
    """The hit path remembers a host's databases: one the writer creates later (the zone's first
    reserve record) replaces what it remembered."""

    def cache_copy_removed(view: WriteView) -> bool:
        view.delete(handle(CACHE, "z", b"http://h/r"))
        return True

    async def main() -> None:
        store = stored(tmp_path, make("http://h/a"))
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        reserve_on = lambda zone: True  # noqa: E731
        try:
            assert store.get("http://h/r", reserve=reserve_on) is None  # the zone has no reserve yet
            store.put(make("http://h/r", b"kept"), reserve=True)
            assert store.flush(10)
            store.run_job(cache_copy_removed).result(10)
            found = store.get("http://h/r", reserve=reserve_on)
            assert found is not None and found[0].body == b"kept" and found[1] is True
        finally:
            store.close()

    asyncio.run(main())


def test_reads_on_the_thread_of_a_loop_that_closed_go_on(tmp_path: Path) -> None:
    store = stored(tmp_path, make("http://h/a"))

    async def main() -> None:
        store.read_in_turns(asyncio.get_running_loop().call_soon)
        assert store.get("http://h/a") is not None

    asyncio.run(main())
    try:
        store.put(make("http://h/b", b"later"))
        assert store.flush(10)
        found = store.get("http://h/b")
        assert found is not None and found[0].body == b"later"
    finally:
        store.close()
