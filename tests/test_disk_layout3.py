"""Disk layout 3 and the conversion of a layout-2 store at open (decision 0033): a store written by
layout 2's code keeps its disk cache and its Cache Reserve across the upgrade, and from then on
answers every read, renewal, eviction, purge and clear as a store that was always layout 3."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgecache.store.disk_convert as disk_convert
from disk_ops import after_ops, apply, make, observe, open_store, rows, setup_ops, to_layout2
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Tag, Url

FIXTURE = Path(__file__).parent / "data" / "layout2"
"""Written by main's code (layout 2) with ``tests/make_layout2_store.py``."""


def _raw(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every row of every database, as stored."""
    env = lmdb.open(str(path), max_dbs=64, readonly=True, lock=False)
    out: dict[bytes, list[tuple[bytes, bytes]]] = {}
    with env.begin() as txn:
        for name, _ in txn.cursor():
            db = env.open_db(bytes(name), txn=txn, create=False)
            out[bytes(name)] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
    env.close()
    return out


def _kinds(path: Path) -> set[bytes]:
    return {k[:1] for name, got in _raw(path).items() if name.startswith(b"c/") for k, _ in got}


def _built(path: Path, ops: list[Any]) -> None:
    store = open_store(path)
    for op in ops:
        apply(store, op)
    store.close()


def _placed_once(store: Any) -> None:
    """Every disk-cache record has one place in the order, named by its ``s`` row's tick, and
    every order row is a record's: what eviction and renewal rely on."""
    for name, got in rows(store).items():
        if not name.startswith(b"c/"):
            continue
        records = {k[1:] for k, _ in got if k[:1] == b"e"}
        ticks = {k[9:]: v for k, v in got if k[:1] == b"s"}
        order = sorted(k for k, _ in got if k[:1] == b"~")
        assert set(ticks) == records and all(len(v) == 9 and v[:1] == b"~" for v in ticks.values())
        assert order == sorted(v + kb for kb, v in ticks.items())


def _same_from_here(a: Any, b: Any, ops: list[Any]) -> None:
    """Apply ``ops`` to both stores; every answer and, after each flush, every row alike."""
    for op in ops:
        assert apply(a, op) == apply(b, op), op
        if op[0] == "flush":
            assert rows(a) == rows(b), op
            assert observe(a) == observe(b), op
            _placed_once(b)


def test_a_store_written_by_layout_2s_code_is_converted_and_answers_as_layout_3(tmp_path: Path) -> None:
    """The fixture's records, tags, Vary names, large object, reserve copies, renewed places and
    counters come through the conversion as this code writes them; then reads, renewals,
    evictions, each purge selector and a reserve clear give the same answers and leave the same rows
    as in a store built by this code."""
    assert b"k" in _kinds(FIXTURE) and b"o" in _kinds(FIXTURE)
    converted, fresh = tmp_path / "converted", tmp_path / "fresh"
    shutil.copytree(FIXTURE, converted)
    _built(fresh, setup_ops())
    a, b = open_store(fresh), open_store(converted)
    assert rows(a) == rows(b)
    assert observe(a) == observe(b)
    assert observe(b)["records"] and observe(b)["reserve"][0][1] > 0  # the reserve is kept
    # A budget the next fills exceed: the converted order decides what goes.
    budget = observe(a)["usage"][0] + 9000
    a.close()
    b.close()
    assert _kinds(converted) == _kinds(fresh) == {b"e", b"s", b"t", b"~", b"v", b"g"}
    a, b = open_store(fresh, budget), open_store(converted, budget)
    _same_from_here(a, b, after_ops())
    assert 0 < b.stats.evictions < 41 and b.stats.hits > 0 and b.stats.reserve_hits > 0
    a.close()
    b.close()


def test_a_conversion_cut_short_leaves_layout_2_whole_for_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion that fails before its commit changes nothing (the open fails); the next open
    converts the store whole."""
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    before = _raw(store)

    def broken(txn: lmdb.Transaction, db: Any) -> None:
        raise OSError("the disk went away")

    with monkeypatch.context() as m:
        m.setattr(disk_convert, "_move_order", broken)
        with pytest.raises(OSError):
            open_store(store)
    assert _raw(store) == before
    fresh = tmp_path / "fresh"
    _built(fresh, setup_ops())
    a, b = open_store(fresh), open_store(store)
    assert rows(a) == rows(b)
    a.close()
    b.close()


_OPEN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import edgecache.store.disk as disk
from disk_ops import open_store
convert = disk.convert_layout2
def announced(env, txn):
    print("converting", flush=True)
    return convert(env, txn)
disk.convert_layout2 = announced
open_store(Path(sys.argv[1])).close()
print("opened", flush=True)
"""


def _opening(store: Path) -> subprocess.Popen[bytes]:
    """A process opening ``store``; it says ``converting`` as its conversion begins."""
    return subprocess.Popen(
        [sys.executable, "-c", _OPEN, str(store), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_process_killed_while_converting_leaves_a_store_the_next_open_converts(tmp_path: Path) -> None:
    """``kill -9`` of the process converting, at moments within its conversion: the next open
    finds layout 2 whole and converts it; either way, the rows this code writes."""
    store = tmp_path / "store"
    many: list[Any] = []
    for i in range(20000):
        many.append(("put", "z", f"r/{i}", 10 + i % 4, 20, ("a", "b")[: i % 3], i % 5 == 0))
        if i % 2000 == 1999:
            many.append(("flush",))
    _built(store, [*setup_ops(), *many])
    a = open_store(store)
    expected = rows(a)
    assert a.usage()[1] > 20000
    a.close()
    found = []
    for delay in (0.0, 0.005, 0.015, None):  # the conversion takes ~40 ms on an idle machine
        to_layout2(store)
        child = _opening(store)
        assert child.stdout is not None
        assert child.stdout.readline() == b"converting\n"
        if delay is None:
            assert child.wait(60) == 0  # let be, it converts
        else:
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            assert child.stdout.read() == b"", delay  # killed before the open ended
            found.append(_raw(store)[b"meta"])
        b = open_store(store)
        assert rows(b) == expected, delay
        b.close()
    assert (b"layout", (2).to_bytes(8, "little")) in {row for meta in found for row in meta}


def test_two_processes_opening_a_layout_2_store_at_once_both_find_it_converted(tmp_path: Path) -> None:
    """LMDB serialises the opens' write transactions: one converts, the other finds layout 3."""
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    children = [_opening(store) for _ in range(2)]
    outs = [c.communicate(timeout=60) for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert sorted(out.count(b"converting") for out, _ in outs) == [0, 1]
    fresh = tmp_path / "fresh"
    _built(fresh, setup_ops())
    a, b = open_store(fresh), open_store(store)
    assert rows(a) == rows(b)
    a.close()
    b.close()


_PATHS = st.sampled_from([f"p/{i}" for i in range(8)])
_OPS = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(["z", "y"]),
        _PATHS,
        st.integers(1, 30),
        st.integers(0, 900),
        st.sampled_from([(), ("a",), ("a", "b")]),
        st.booleans(),
    ),
    st.tuples(st.just("get"), st.sampled_from(["z", "y"]), _PATHS),
    st.tuples(st.just("delete"), st.sampled_from(["z", "y"]), _PATHS),
    st.tuples(st.just("clear"), st.sampled_from(["z", "y"])),
    st.tuples(
        st.just("purge"),
        st.just(0),
        st.just("z"),
        st.sampled_from(
            [
                Url("http://h.test/p/1"),
                Tag("a"),
                Tag("b", host="h.test"),
                Host("h.test"),
                Prefix("h.test/p/"),
                Everything(),
            ]
        ),
        st.sampled_from([Mode.DELETE, Mode.INVALIDATE]),
    ),
)


def _numbered(ops: list[Any]) -> list[Any]:
    """Purges numbered in order, after every put so far (a purge's seq is the ledger's)."""
    out, seq = [], 30
    for op in ops:
        if op[0] == "purge":
            seq += 1
            op = (op[0], seq, *op[2:])
        elif op[0] == "put":
            op = (*op[:3], seq + op[3], *op[4:])
        out += [op, ("flush",)]
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OPS, min_size=2, max_size=24), cut=st.integers(0, 24))
def test_a_store_converted_midway_answers_as_one_never_converted(
    tmp_path: Path, ops: list[Any], cut: int
) -> None:
    """Any mix of fills, reads, deletes, purges and clears: a store rewritten as layout 2 at some
    point and converted at its next open answers every later operation as the same store left in
    layout 3 (reopened at the same point), rows included."""
    ops = _numbered(ops)
    cut = min(2 * cut, len(ops))
    base = tmp_path / str(time.monotonic_ns())
    fresh, converted = base / "fresh", base / "converted"
    budget = 4000
    a, b = open_store(fresh, budget), open_store(converted, budget)
    _same_from_here(a, b, ops[:cut])
    a.close()
    b.close()
    to_layout2(converted)
    a, b = open_store(fresh, budget), open_store(converted, budget)
    assert rows(a) == rows(b)
    _same_from_here(a, b, ops[cut:])
    a.close()
    b.close()


def test_a_conversion_that_does_not_fit_in_the_map_empties_the_store_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the conversion's copy of the index pages: the store is emptied (as any other
    layout is), opens, and stores again; nothing on disk predates the position given."""
    import edgecache.store.disk as disk

    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)

    def full(env: lmdb.Environment, txn: lmdb.Transaction) -> int:
        raise lmdb.MapFullError("mdb_put", 0)

    monkeypatch.setattr(disk, "convert_layout2", full)
    opened = disk.DiskStore(store, budget=1 << 30, position=40, map_size=1 << 28, zones=("z", "y"))
    assert len(opened) == 0 and opened.reclaimed_upto == 40 and opened.reserve_usage("z") == (0, 0)
    opened.put(make("z", "p/1", 40, 10, ("a",)))
    assert opened.flush(10) and opened.get("http://h.test/p/1") is not None
    opened.close()


_OPEN_LIMITED = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from disk_ops import open_store
store = Path(sys.argv[1])
room = (store / "data.mdb").stat().st_size + int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
def anon():
    return int(dict(ln.split(":", 1) for ln in open("/proc/self/status"))["RssAnon"].split()[0])
before = anon()
opened = open_store(store)
print(len(opened), anon() - before, flush=True)
opened.close()
"""


def _compact_layout2(tmp_path: Path, records: int) -> Path:
    """A layout-2 store of ``records`` records more, copied without free pages (as a store the
    node never had to grow into looks): a conversion must grow its file."""
    built = tmp_path / "built"
    many: list[Any] = []
    for i in range(records):
        many.append(("put", "z", f"r/{i}", 10 + i % 4, 20, ("a", "b")[: i % 3], i % 5 == 0))
        if i % 2000 == 1999:
            many.append(("flush",))
    _built(built, [*setup_ops(), *many])
    to_layout2(built)
    store = tmp_path / "store"
    store.mkdir()
    env = lmdb.open(str(built), max_dbs=8, readonly=True, lock=False)
    env.copy(str(store), compact=True)
    env.close()
    return store


def _open_limited(store: Path, room: int) -> tuple[int, int]:
    """(records, KiB of anonymous memory the open kept) of an open in a process whose files may
    grow by ``room`` bytes at most."""
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_LIMITED, str(store), str(Path(__file__).parent), str(room)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    records, kept = out.stdout.split()
    return int(records), int(kept)


def test_a_conversion_the_file_cannot_grow_for_empties_the_store_and_it_opens(tmp_path: Path) -> None:
    """A full disk (here a file size limit) fails the conversion's commit with an I/O error, not
    a full map: the store is emptied as before layout 3, and the node starts (it used to fail the
    same way at every restart)."""
    store = _compact_layout2(tmp_path, 20000)
    assert _open_limited(store, 1 << 20)[0] == 0


def test_a_conversion_leaves_no_memory_held_by_the_process_that_made_it(tmp_path: Path) -> None:
    """LMDB keeps a transaction's freed dirty pages until its environment closes: the ~10 MiB a
    100,000-record conversion dirties must not stay with the process (the supervisor keeps its
    store open for its life)."""
    store = _compact_layout2(tmp_path, 100000)
    records, kept = _open_limited(store, 1 << 30)
    assert records > 100000
    assert kept < 4096, kept
