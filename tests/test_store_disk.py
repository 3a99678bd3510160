"""The persistent tier's store on its own: records survive a reopen whole, the indexes answer what a
full scan would, the byte budgets hold, and the reserve keeps what it should for as long as it should."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Mode, Purge, Selector, Tag, Url
from edgecache.store.chunked import LargeWrite
from edgecache.store.disk import (
    CACHE,
    RESERVE,
    DiskStore,
    JobProgress,
    WriteView,
    clear_reserve_job,
    decode_entry,
    decode_hit,
    encode_entry,
)
from edgecache.store.disk_layout import with_reserve_expires
from edgecache.store.entry import VARIANT_SEP, Entry

FIELDS = [f.name for f in dataclasses.fields(Entry)]


def make(
    key: str, body: bytes = b"body", zone: str = "z", tags: tuple[str, ...] = (), life: float = 60.0
) -> Entry:
    return Entry(
        zone=zone,
        key=key,
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=body,
        tags=tags,
        stored_seq=3,
        response_time=1000.0,
        initial_age=2.0,
        freshness_lifetime=life,
        must_revalidate=True,
        stale_since=None,
    )


def open_store(path: Path, budget: int = 1 << 30, **kw: object) -> DiskStore:
    return DiskStore(path, budget=budget, position=0, map_size=1 << 28, **kw)  # type: ignore[arg-type]


def scan(store: DiskStore, fn: object) -> list[str]:
    out: list[str] = []

    def job(view: WriteView) -> bool:
        out.extend(view.peek(h).key for h in fn(view))  # type: ignore[operator, union-attr]
        return True

    store.run_job(job).result(10)
    return sorted(out)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(min_size=1, max_size=700),
    body=st.binary(max_size=2000),
    tags=st.lists(st.text(alphabet="abcdef", min_size=1, max_size=5), unique=True, max_size=4),
    stale=st.none() | st.floats(min_value=0, max_value=1e10),
)
def test_records_round_trip(key: str, body: bytes, tags: list[str], stale: float | None) -> None:
    e = make(key, body, tags=tuple(tags))
    e.stale_since = stale
    rec = decode_entry(encode_entry(e, 9.5))
    got = rec.entry
    assert rec.reserve_expires == 9.5
    assert (got.key, got.body, got.tags, got.head, got.stale_since) == (key, body, tuple(tags), e.head, stale)
    assert (got.stored_seq, got.must_revalidate, got.no_cache, got.freshness_lifetime) == (
        3,
        True,
        False,
        60.0,
    )
    # The hit path's decoder reads the same entry from the record in place.
    raw = encode_entry(e, 9.5)
    hit = decode_hit(memoryview(raw), key, e.zone, key.encode("utf-8", "surrogatepass"))
    assert hit is not None and hit[1] == 9.5
    assert {f: getattr(hit[0], f) for f in FIELDS} == {f: getattr(got, f) for f in FIELDS}
    # A key read under a cut row is compared with the record's (a digest may collide).
    assert decode_hit(raw, key + "x", e.zone, (key + "x").encode("utf-8", "surrogatepass")) is None
    # A fill's reserve copy and a renewed retention change the expiry in the bytes, nothing else.
    assert with_reserve_expires(encode_entry(e, 0.0), 9.5) == raw


def test_entries_and_vary_survive_a_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.put(make("http://h/a", b"A" * 70000))
    store.put(make("http://h/v" + VARIANT_SEP + "v:accept-language=en"))
    store.set_vary("http://h/v", ("accept-language",))
    store.set_vary("http://h/none", ("accept-language",))  # nothing under it: not kept
    assert store.flush(10)
    store.close()
    store = open_store(tmp_path)
    found = store.get("http://h/a")
    assert found is not None and found[0].body == b"A" * 70000 and not found[1]
    assert store.lookup("http://h/v")[0] == ("accept-language",)
    assert store.lookup("http://h/none")[0] is None
    assert store.get("http://h/b") is None
    store.close()


def test_a_delete_is_hidden_before_it_is_written(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.put(make("http://h/a"))
    assert store.flush(10)
    store.delete("http://h/a")
    assert store.get("http://h/a") is None
    assert store.flush(10)
    assert store.get("http://h/a") is None and len(store) == 0
    store.close()


def test_indexes_answer_like_a_scan(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    long = "http://h/" + "p" * 600
    keys = ["http://h/a", "http://h/a" + VARIANT_SEP + "m", "http://h/ab", "http://g/a", long, long + "x"]
    for i, k in enumerate(keys):
        store.put(make(k, tags=("t",) if i % 2 else ("u",), zone="y" if "//g" in k else "z"))
    assert store.flush(10)
    assert scan(store, lambda v: v.scan_prefix("http://h/a", None, 100)) == sorted(keys[:3])
    assert scan(store, lambda v: v.scan_prefix(long, None, 100)) == sorted([long, long + "x"])
    assert scan(store, lambda v: v.scan_prefix(long + "x", None, 100)) == [long + "x"]
    assert scan(store, lambda v: v.scan_tag("z", "t", None, 100)) == sorted([keys[1], long + "x"])
    assert scan(store, lambda v: v.scan_zone("y", None, 100)) == ["http://g/a"]
    # Resumable: pages of two give the whole answer.
    pages: list[str] = []

    def paged(view: WriteView) -> bool:
        after = None
        while True:
            page = view.scan_zone("z", after, 2)
            pages.extend(view.peek(h).key for h in page)  # type: ignore[union-attr]
            if len(page) < 2:
                return True
            after = page[-1]

    store.run_job(paged).result(10)
    assert sorted(pages) == sorted(k for k in keys if "//g" not in k)
    store.delete_primary("http://h/a")
    assert store.flush(10)
    assert sorted(e.key for e in store) == sorted(keys[2:])
    store.close()


def test_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    store = open_store(tmp_path, budget=10 * 1200)
    for i in range(10):
        store.put(make(f"http://h/{i}", b"x" * 1000))
    assert store.flush(10)
    assert store.get("http://h/0") is not None  # renews /0
    for i in range(10, 13):
        store.put(make(f"http://h/{i}", b"x" * 1000))
    assert store.flush(10)
    used, count = store.usage()
    assert used <= 10 * 1200 and count == len(store)
    left = {e.key for e in store}
    assert "http://h/0" in left and "http://h/1" not in left and "http://h/12" in left
    assert store.stats.evictions >= 3
    store.close()


def test_a_read_renews_only_records_among_the_oldest(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(16):
        store.put(make(f"http://h/{i}"))
    assert store.flush(10)

    def clock() -> int:
        with store.env.begin() as txn:
            return store._stored(txn, b"clock")

    start = clock()
    assert store.get("http://h/15") is not None  # the most recent: no write
    assert store.flush(10) and clock() == start
    assert store.get("http://h/0") is not None  # the oldest: moves to the recent end
    assert store.flush(10) and clock() == start + 1
    store.close()


def test_reserve_budget_retention_and_clear(tmp_path: Path) -> None:
    retention = {"z": 3600.0}
    store = open_store(tmp_path, reserve_budget=lambda z: 3 * 1200, reserve_retention=lambda z: retention[z])
    for i in range(5):
        store.put(make(f"http://h/{i}", b"x" * 1000), reserve=True)
    assert store.flush(10)
    used, count = store.reserve_usage("z")
    assert count == 3 and used <= 3 * 1200
    assert store.get("http://h/4", reserve=lambda z: True) is not None  # from the disk cache first
    retention["z"] = -1.0  # what is written from now on is already past its retention
    store.put(make("http://h/9", b"y"), reserve=True)
    store.put(make("http://h/10", b"y"), reserve=True)
    assert store.flush(10)
    assert store.stats.reserve_expired >= 1
    progress = JobProgress()
    store.run_job(clear_reserve_job("z", progress)).result(10)
    assert progress.done and store.reserve_usage("z") == (0, 0)
    assert progress.objects >= 1 and progress.bytes > 0
    assert store.get("http://h/4") is not None  # the disk cache is not the reserve
    store.close()


def test_reserve_retention_is_extended_on_access(tmp_path: Path) -> None:
    retention = {"z": 60.0}
    store = open_store(tmp_path, reserve_budget=lambda z: 1 << 20, reserve_retention=lambda z: retention[z])
    store.put(make("http://h/r"), reserve=True)
    assert store.flush(10)

    def expiry(view: WriteView) -> float:
        peeked = view.peek(RESERVE + b"z\x00http://h/r")
        assert peeked is not None and view._peeked is not None
        return view._peeked[1].reserve_expires

    first: list[float] = []
    store.run_job(lambda v: first.append(expiry(v)) or True).result(10)
    store.run_job(lambda v: v.delete(CACHE + b"z\x00http://h/r") > 0).result(10)  # the disk cache lets go
    retention["z"] = 3600.0  # the record is now far into its retention period: a read renews it
    found = store.get("http://h/r", reserve=lambda z: True)
    assert found is not None and found[1]
    assert store.flush(10)
    later: list[float] = []
    store.run_job(lambda v: later.append(expiry(v)) or True).result(10)
    assert later[0] > first[0] + 3000
    # Renewed just now: another read does not renew again.
    time.sleep(0.01)
    assert store.get("http://h/r", reserve=lambda z: True) is not None
    assert store.flush(10)
    again: list[float] = []
    store.run_job(lambda v: again.append(expiry(v)) or True).result(10)
    assert again == later
    assert store.get("http://h/r", reserve=lambda z: False) is None  # the zone's reserve is off
    store.close()


def test_a_url_invalidation_is_hidden_before_it_is_written(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    variant = "http://h/a" + VARIANT_SEP + "m"
    store.put(make(variant))
    store.put(make("http://h/ab"))
    assert store.flush(10)
    gate = threading.Event()
    store.run_job(lambda view: gate.wait(10))  # the writer is busy: the removal waits in the queue
    store.delete_primary("http://h/a")
    assert store.get(variant) is None
    assert store.get("http://h/ab") is not None
    gate.set()
    assert store.flush(10)
    assert store.get(variant) is None and len(store) == 1
    store.close()


_OTHER_PROCESS = """
import sys
from pathlib import Path
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry

store = DiskStore(Path(sys.argv[1]), budget=1 << 30, position=0, map_size=1 << 28)
found = store.get("http://h/from-parent")
print("parent's:", None if found is None else found[0].body.decode())
store.put(Entry("z", "http://h/from-child", 200, b"", b"child", (), 0, 0.0, 0.0, 60.0))
assert store.flush(10)
store.close()
"""


def test_two_processes_share_the_store(tmp_path: Path) -> None:
    """What worker processes will rely on: each opens the same environment, reads what the other
    wrote, and writes while the other has it open (LMDB's writer lock spans processes)."""
    store = open_store(tmp_path)
    store.put(make("http://h/from-parent", b"parent"))
    assert store.flush(10)
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "parent's: parent" in out.stdout
    found = store.get("http://h/from-child")
    assert found is not None and found[0].body == b"child"
    store.close()


_FIRST_WRITER = """
import sys
from pathlib import Path
from edgecache.store.disk import DiskStore
from edgecache.store.entry import Entry

store = DiskStore(Path(sys.argv[1]), budget=1 << 30, position=0, map_size=1 << 28, zones=("y",))
store.put(Entry("y", "http://y/new", 200, b"", b"written there", (), 0, 0.0, 0.0, 60.0))
assert store.flush(10)
store.close()
"""


def test_a_zone_another_process_writes_first_is_readable_here_on_the_first_lookup(tmp_path: Path) -> None:
    """Both processes open the configured zone at start: the object the other process stored is a
    hit here at once, not after one miss (which, with worker processes, was an origin fetch)."""
    store = open_store(tmp_path, zones=("y",))
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_WRITER, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    found = store.get("http://y/new")
    assert found is not None and found[0].body == b"written there"
    store.close()


def test_fills_share_a_commit_and_are_readable_without_a_flush(tmp_path: Path) -> None:
    """A burst of fills is written in one transaction (the writer waits for more before it commits),
    and nobody has to flush for them to reach the disk: another process would read them soon after."""
    store = open_store(tmp_path)
    store.put(make("http://h/first"))
    assert store.flush(10)
    commits = store.stats.commits
    keys = [f"http://h/burst/{i}" for i in range(50)]
    for key in keys:
        store.put(make(key))
    deadline = time.monotonic() + 10
    while store.get(keys[-1]) is None:
        assert time.monotonic() < deadline, "a fill was not written without a flush"
        time.sleep(0.005)
    assert all(store.get(key) is not None for key in keys)
    # One commit for the burst; two if this thread was descheduled for the whole wait mid-burst.
    assert store.stats.commits - commits <= 2
    store.close()


def test_a_purge_that_removes_nothing_writes_its_position_with_the_next_write(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.put(make("http://h/a", tags=("t",)))  # stored at 3
    assert store.flush(10)

    def reclaim(seq: int, selector: Selector) -> None:
        store.run_job(DiskReclaim(Purge(seq, "z", Mode.DELETE, (selector,), 0.0))).result(10)

    reclaim(11, Url("http://h/none"))
    assert store.reclaimed_upto == 0  # no commit for a purge that had nothing to remove here
    reclaim(12, Tag("t"))
    assert store.reclaimed_upto == 12 and store.get("http://h/a") is None
    reclaim(13, Url("http://h/none"))
    store.put(make("http://h/b"))
    assert store.flush(10)
    assert store.reclaimed_upto == 13  # carried by the next write
    reclaim(14, Url("http://h/none"))
    store.close()
    store = open_store(tmp_path)
    assert store.reclaimed_upto == 14  # and written at close: a restart replays nothing


def _rows(store: DiskStore) -> dict[str, int]:
    """Rows per kind (first byte) over every zone database: what a removal must not leave behind."""
    rows: dict[str, int] = {}
    with store.env.begin() as txn:
        for db in store._dbs.values():
            for k in txn.cursor(db=db).iternext(keys=True, values=False):
                kind = bytes(k[:1]).decode()
                rows[kind] = rows.get(kind, 0) + 1
    return rows


def wipe(store: DiskStore, zone: str, area: bytes | None, before: int) -> list[int]:
    totals = [0, 0, 0]

    def report(c: int, r: int, freed: int) -> None:
        totals[0] += c
        totals[1] += r
        totals[2] += freed

    def job(view: WriteView) -> bool:
        return view.wipe_zone(zone, area, before, report)

    store.run_job(job).result(10)
    return totals


def test_a_zone_wipe_removes_what_predates_it_and_every_index_row(tmp_path: Path) -> None:
    """Purge-everything's and the clear's fast path: one drop, records stored after the purge and
    other zones stay (with their Vary names), and no index row or count is left behind."""
    store = open_store(tmp_path, reserve_budget=lambda z: 1 << 20)
    for i in range(9):
        tags = ("a", "b") if i % 2 else ()
        store.put(make(f"http://h/{i}", b"x" * (100 + i), tags=tags), reserve=i % 3 == 0)
    later = make("http://h/later" + VARIANT_SEP + "v:accept=x", tags=("a",))
    later.stored_seq = 50
    store.put(later, reserve=True)
    store.set_vary("http://h/later", ("accept",))
    store.put(make("http://h/gone" + VARIANT_SEP + "v:accept=x"))
    store.set_vary("http://h/gone", ("accept",))
    store.put(make("http://g/other", tags=("a",), zone="y"), reserve=True)
    assert store.flush(10)
    freed = sum(len(encode_entry(e, 0.0)) for e in store if e.zone == "z" and e.stored_seq < 10)
    cache, reserve, freed_bytes = wipe(store, "z", None, 10)
    assert (cache, reserve) == (10, 3)
    assert freed_bytes == freed
    kept = make("http://h/kept", tags=("a",))
    kept.stored_seq = 50
    store.put(kept)
    assert store.flush(10)
    # Both areas' records of "later" and "other", the disk-cache record of "kept".
    left = sorted(["http://g/other", "http://g/other", "http://h/kept", later.key, later.key])
    assert sorted(e.key for e in store) == left
    assert scan(store, lambda v: v.scan_tag("z", "a", None, 100)) == sorted(
        [later.key, later.key, "http://h/kept"]
    )
    assert store.lookup("http://h/later")[0] == ("accept",) and store.lookup("http://h/gone")[0] is None
    # later (c, r), kept (c), other (c, r): 5 records, each with a seq row and one tag row; 3 in
    # eviction order (an order row each, the tick in their seq row), 2 in a retention order; one
    # Vary row.
    assert _rows(store) == {"e": 5, "s": 5, "t": 5, "~": 3, "x": 2, "v": 1}
    sizes = {e.key: len(encode_entry(e, 0.0)) for e in store}
    assert store.usage() == (sizes[later.key] + sizes["http://h/kept"] + sizes["http://g/other"], 3)
    assert store.reserve_usage("z") == (sizes[later.key], 1)
    assert wipe(store, "z", RESERVE, 1 << 62)[:2] == [0, 1]  # a reserve clear leaves the disk cache
    assert store.reserve_usage("z") == (0, 0) and store.get(later.key) is not None
    store.close()


def test_a_zone_wipe_with_many_survivors_goes_record_by_record(tmp_path: Path, monkeypatch: object) -> None:
    """Past ``WIPE_KEEP_MAX`` records to keep, the wipe removes the covered ones in steps instead."""
    import edgecache.store.disk as disk

    monkeypatch.setattr(disk, "WIPE_KEEP_MAX", 2)  # type: ignore[attr-defined]
    monkeypatch.setattr(disk, "JOB_STEP", 3)  # type: ignore[attr-defined]
    store = open_store(tmp_path)
    for i in range(10):
        e = make(f"http://h/{i}", tags=("a",))
        e.stored_seq = i
        store.put(e)
    assert store.flush(10)
    assert wipe(store, "z", None, 6)[:2] == [6, 0]
    assert sorted(e.key for e in store) == [f"http://h/{i}" for i in range(6, 10)]
    assert _rows(store) == {"e": 4, "s": 4, "t": 4, "~": 4}
    assert store.usage()[1] == 4
    store.close()


def test_vary_names_go_with_the_last_variant(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    base = "http://h/page"
    en, fr = (base + VARIANT_SEP + "v:accept-language=" + lang for lang in ("en", "fr"))
    store.put(make(en))
    store.put(make(fr))
    store.set_vary(base, ("accept-language",))
    assert store.flush(10)
    store.delete(en)
    assert store.flush(10)
    assert store.lookup(base)[0] == ("accept-language",)  # fr is still under it
    store.put(make(fr, b"newer"))  # a replacement keeps them
    assert store.flush(10) and store.lookup(base)[0] == ("accept-language",)
    store.delete(fr)
    assert store.flush(10)
    assert store.lookup(base)[0] is None
    assert "v" not in _rows(store)
    store.close()


def test_the_reclaimed_position_never_moves_back(tmp_path: Path) -> None:
    """Each worker's reclaim writes the shared position: one behind another must not lower it."""
    store = open_store(tmp_path)

    def reclaimed(seq: int) -> None:
        store.run_job(lambda v: v.set_reclaimed(seq) or True).result(10)

    reclaimed(20)
    reclaimed(12)
    assert store.reclaimed_upto == 20
    store.run_job(lambda v: v.set_reclaimed(15, changed=False) or True).result(10)
    store.put(make("http://h/a"))
    assert store.flush(10)
    assert store.reclaimed_upto == 20
    reclaimed(21)
    assert store.reclaimed_upto == 21
    store.close()


def test_a_store_in_the_old_layout_is_emptied_at_open(tmp_path: Path) -> None:
    """Layout 1 (one ``entries`` database for all zones, dup-sorted global indexes): not converted
    but emptied, and nothing on disk predates the position given, so no purge is replayed."""
    import lmdb

    env = lmdb.open(str(tmp_path), max_dbs=8, map_size=1 << 28)
    entries = env.open_db(b"entries")
    zones = env.open_db(b"zones", dupsort=True)
    meta = env.open_db(b"meta")
    chunks = env.open_db(b"chunks")
    with env.begin(write=True) as txn:
        txn.put(b"chttp://h/a", encode_entry(make("http://h/a"), 0.0), db=entries)
        txn.put(b"z", b"chttp://h/a", db=zones)
        txn.put(b"reclaimed_upto", (3).to_bytes(8, "little"), db=meta)
        txn.put(b"\x01" * 16 + b"\x00" * 4, b"a chunk of layout 1", db=chunks)
    env.close()
    store = DiskStore(tmp_path, budget=1 << 30, position=40, map_size=1 << 28)
    assert store.reclaimed_upto == 40 and len(store) == 0 and store.get("http://h/a") is None
    with store.env.begin() as txn:
        names = sorted(bytes(k) for k in txn.cursor().iternext(keys=True, values=False))
        assert names == [b"chunks", b"meta"]
        assert txn.stat(store._chunks)["entries"] == 0
    after = make("http://h/a")
    after.stored_seq = 40  # fetched after the position the store starts from
    store.put(after)
    assert store.flush(10)
    store.close()
    store = DiskStore(tmp_path, budget=1 << 30, position=99, map_size=1 << 28)
    assert store.reclaimed_upto == 40 and store.get("http://h/a") is not None  # layout 3 is kept
    store.close()


def test_a_delete_in_the_batch_of_its_hosts_first_put_finds_it(tmp_path: Path) -> None:
    """The host → zone row of a first put is written in the batch's transaction: a delete in the
    same batch must see it (else the record would outlive its delete)."""
    store = open_store(tmp_path)
    gate, busy = threading.Event(), threading.Event()
    store.run_job(lambda view: busy.set() or gate.wait(10))
    assert busy.wait(10)
    store.put(make("http://new.example/a"))
    store.delete("http://new.example/a")
    store.put(make("http://new.example/v" + VARIANT_SEP + "v:a=1"))
    store.set_vary("http://new.example/v", ("a",))
    gate.set()
    assert store.flush(10)
    assert store.get("http://new.example/a") is None and len(store) == 1
    assert store.lookup("http://new.example/v")[0] == ("a",)
    store.close()


def test_a_zone_past_the_limit_is_not_stored_and_the_others_are(tmp_path: Path, monkeypatch: object) -> None:
    import edgecache.store.disk as disk

    monkeypatch.setattr(disk, "MAX_ZONES", 1)  # type: ignore[attr-defined]
    store = open_store(tmp_path)
    store.put(make("http://a.example/1", zone="a"), reserve=True)
    store.put(make("http://b.example/1", zone="b"))  # "a" holds both databases: no room for "b"
    store.put(make("http://a.example/2", zone="a"))
    assert store.flush(10)
    assert store.get("http://a.example/1") is not None and store.get("http://a.example/2") is not None
    assert store.get("http://b.example/1") is None
    assert store.stats.write_errors == 0 and store.stats.dropped == 1
    store.close()


def test_a_put_numbered_below_the_reclaimed_position_is_dropped(tmp_path: Path) -> None:
    """A purge the disk has reclaimed is not replayed after a restart, so an entry numbered before
    it (a memory eviction or a fill that raced the purge's disk job) may not be written: it could be
    one the purge covers. At or after the position it is written; a dropped large object leaves no
    chunk behind."""
    store = open_store(tmp_path, reserve_budget=lambda z: 1 << 20)
    store.run_job(lambda view: view.set_reclaimed(20) or True).result(10)
    old = make("http://h/old")
    old.stored_seq = 19
    store.put(old, reserve=True)
    current = make("http://h/current")
    current.stored_seq = 20
    store.put(current)
    # Not yet written, only due with the next write: the writer still knows the position.
    store.run_job(lambda view: view.set_reclaimed(30, changed=False) or True).result(10)
    late = make("http://h/late")
    late.stored_seq = 25
    store.put(late)
    assert store.flush(10)
    assert store.get("http://h/old") is None and store.get("http://h/old", reserve=lambda z: True) is None
    assert store.get("http://h/late") is None
    assert store.get("http://h/current") is not None
    assert store.stats.dropped == 2 and store.usage()[1] == 1 and store.reserve_usage("z") == (0, 0)
    write = LargeWrite(store, chunk_size=1024)
    write.add(b"x" * 5000)
    large = write.finish(make("http://h/large"))
    assert large is not None
    store.put(large)
    assert store.flush(10)
    assert store.get("http://h/large") is None and store.read_chunk(large.object_id, 0) is None
    store.close()


def test_a_batch_of_new_and_replaced_fills_keeps_one_place_and_the_counts_each(tmp_path: Path) -> None:
    """Fills written as one run (new keys, a key replaced within the run and one replaced from an
    earlier batch, a large record's neighbours): every record has one place in the eviction order,
    the places are distinct and in the order of the puts, and the counters match what is stored."""
    store = open_store(tmp_path)
    store.put(make("http://h/old", b"o" * 300, tags=("t",)))
    assert store.flush(10)
    puts = ["http://h/a", "http://h/b", "http://h/a", "http://h/old", "http://h/c"]
    for i, key in enumerate(puts):
        store.put(make(key, b"x" * (100 + i), tags=("t", f"u{i}")))
    assert store.flush(10)
    entries = {e.key: e for e in store}
    assert sorted(entries) == ["http://h/a", "http://h/b", "http://h/c", "http://h/old"]
    assert entries["http://h/a"].body == b"x" * 102 and entries["http://h/old"].body == b"x" * 103
    with store.env.begin() as txn:
        db = store._dbs[(CACHE, "z")]
        rows = [bytes(k) for k, _ in txn.cursor(db=db)]
        records = [bytes(v) for k, v in txn.cursor(db=db) if bytes(k)[:1] == b"e"]
        ticks = {bytes(k)[9:]: bytes(v) for k, v in txn.cursor(db=db) if bytes(k)[:1] == b"s"}
    order = [r[9:].decode() for r in rows if r[:1] == b"~"]
    # Last written last: b, then a (its second put), old, c.
    assert order == ["http://h/b", "http://h/a", "http://h/old", "http://h/c"]
    # Each record's seq row names its one order row.
    assert sorted(t + kb for kb, t in ticks.items()) == [r for r in rows if r[:1] == b"~"]
    tagged = [r for r in rows if r[:1] == b"t"]
    assert len(tagged) == 8  # two tags per record, none left from the replaced records
    used, count = store.usage()
    assert count == 4 and used == sum(len(r) for r in records)
    store.close()
