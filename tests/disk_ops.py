"""Scripted changes to a disk store and what a user of the store can see of it, for the tests of
layout conversions (``tests/test_disk_layout3.py``); also run under main's code, as layout 2, by
``tests/make_layout2_store.py``, so it uses nothing that code lacks. Plus ``to_layout2``: a
layout-3 store rewritten row by row as layout 2's code writes the same records."""

from __future__ import annotations

import dataclasses
from typing import Any

import lmdb

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url
from edgecache.store.chunked import LargeWrite
from edgecache.store.disk import CACHE, DiskStore, JobProgress, clear_reserve_job
from edgecache.store.entry import VARIANT_SEP, Entry

ZONES = ("z", "y")
HOSTS = {"z": "h.test", "y": "g.test"}
RETENTION = 100 * 365 * 86400.0
"""The reserve's retention: long enough that a store written today has expired nothing years on."""
MAP_SIZE = 1 << 28

Op = tuple[Any, ...]


def open_store(path: Any, budget: int = 1 << 30) -> DiskStore:
    """A store as the tests open it: both zones, a reserve large enough never to evict."""
    return DiskStore(
        path,
        budget=budget,
        position=0,
        map_size=MAP_SIZE,
        reserve_budget=lambda zone: 1 << 30,
        reserve_retention=lambda zone: RETENTION,
        zones=ZONES,
    )


def make(zone: str, path: str, seq: int, size: int, tags: tuple[str, ...]) -> Entry:
    """An entry of ``zone`` under ``path`` of its host."""
    return Entry(
        zone,
        f"http://{HOSTS[zone]}/{path}",
        200,
        b"Content-Type: text/plain\r\n",
        bytes([65 + seq % 26]) * size,
        tags,
        seq,
        1000.0 + seq,
        0.0,
        600.0,
        length_known=True,
    )


def apply(store: DiskStore, op: Op) -> object:
    """Apply one change (or read) to ``store``; what a read returned, for comparing."""
    kind = op[0]
    if kind == "put":
        _, zone, path, seq, size, tags, reserve = op
        store.put(make(zone, path, seq, size, tags), reserve)
    elif kind == "large":
        _, zone, path, seq = op
        write = LargeWrite(store, chunk_size=1024)
        write.add(b"L" * 3000)
        entry = write.finish(make(zone, path, seq, 0, ("big",)))
        if entry is not None:
            store.put(entry)
    elif kind == "vary":
        _, zone, path, names = op
        store.set_vary(f"http://{HOSTS[zone]}/{path}", names)
    elif kind == "get":
        _, zone, path = op
        found = store.get(f"http://{HOSTS[zone]}/{path}", lambda z: True)
        return None if found is None else (_seen(found[0]), found[1])
    elif kind == "delete":
        _, zone, path = op
        store.delete(f"http://{HOSTS[zone]}/{path}")
    elif kind == "purge":
        _, seq, zone, selector, mode = op
        job = DiskReclaim(Purge(seq, zone, mode, (selector,), 5000.0))
        store.run_job(job).result(30)
        return sorted((repr(k), v) for k, v in job.counts.items())
    elif kind == "clear":
        progress = JobProgress()
        store.run_job(clear_reserve_job(op[1], progress)).result(30)
        return progress.objects, progress.bytes
    elif kind == "flush":
        assert store.flush(30)
    return None


_FIELDS = [f.name for f in dataclasses.fields(Entry)]
_SEEN = _FIELDS[: _FIELDS.index("stale_since") + 1]
"""What a record stores of an entry (not the tiers' own bookkeeping)."""


def _seen(entry: Entry) -> tuple[Any, ...]:
    return tuple(getattr(entry, name) for name in _SEEN)


def setup_ops() -> list[Op]:
    """What the layout-2 store of ``tests/data/layout2`` holds: both zones, tags, reserve copies,
    Vary names, a large object, reads that renew, replaced and deleted records, a purge."""
    ops: list[Op] = []
    for i in range(40):
        tags = tuple(t for t in ("a", "b", "c") if i % (2 + "abc".index(t)) == 0)
        ops.append(("put", "z", f"p/{i}", 1 + i % 5, 100 + 7 * i, tags, i % 3 == 0))
    for i in range(10):
        ops.append(("put", "y", f"q/{i}", 2, 300, ("a",), i % 2 == 0))
    for lang in ("en", "fr"):
        ops.append(("put", "z", "page" + VARIANT_SEP + "v:accept-language=" + lang, 3, 50, (), False))
    ops.append(("vary", "z", "page", ("accept-language",)))
    ops.append(("large", "z", "big", 4))
    ops.append(("flush",))
    ops += [("get", "z", f"p/{i}") for i in (0, 1, 2, 3)]
    ops.append(("flush",))
    ops += [("put", "z", f"p/{i}", 5, 90, ("b",), False) for i in (5, 6)]
    ops += [("delete", "z", "p/7"), ("delete", "y", "q/1")]
    ops.append(("flush",))
    ops.append(("purge", 6, "z", Tag("c"), Mode.DELETE))
    ops.append(("flush",))
    return ops


def after_ops() -> list[Op]:
    """What the tests do to a converted store and to a fresh one: reads that renew (the disk
    cache's and the reserve's), fills that evict, a purge by each selector, a reserve clear."""
    ops: list[Op] = [("get", "z", f"p/{i}") for i in (8, 9, 10, 0, 30)]
    ops += [("get", "y", "q/0"), ("get", "z", "page" + VARIANT_SEP + "v:accept-language=en")]
    ops.append(("flush",))
    ops += [("put", "z", f"n/{i}", 7, 400, ("a", "n"), i % 4 == 0) for i in range(30)]
    ops.append(("flush",))
    # Evicted from the disk cache by now, kept in the reserve.
    ops += [("get", "z", f"p/{i}") for i in range(0, 40, 3)]
    ops.append(("flush",))
    selectors: list[tuple[str, Selector]] = [
        ("z", Url("http://h.test/p/11")),
        ("z", Tag("a")),
        ("y", Host("g.test")),
        ("z", Prefix("h.test/n/1")),
        ("z", Tag("b", host="h.test")),
    ]
    for seq, (zone, selector) in enumerate(selectors, start=8):
        ops.append(("purge", seq, zone, selector, Mode.INVALIDATE if seq % 2 else Mode.DELETE))
        ops.append(("get", "z", "p/12"))
    ops.append(("clear", "z"))
    ops.append(("flush",))
    ops.append(("purge", 20, "y", Everything(), Mode.DELETE))
    ops.append(("flush",))
    return ops


def rows(store: DiskStore) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every row of every zone database and the counters, but what depends on the wall clock (the
    reserve's expiries, in its records and its retention rows) or on chance (a large object's id,
    in its record's manifest and its ``g`` row)."""
    from edgecache.store.disk_layout import is_chunked, with_reserve_expires

    out: dict[bytes, list[tuple[bytes, bytes]]] = {}
    with store.env.begin() as txn:
        names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        for name in names:
            if name[1:2] != b"/":
                continue
            db = store.env.open_db(name, txn=txn, create=False)
            got = []
            for k, v in txn.cursor(db=db):
                k, v = bytes(k), bytes(v)
                if k[:1] == b"g":
                    v = b""
                elif k[:1] == b"e" and is_chunked(v):
                    v = v[:-16]
                if name[:1] != CACHE:
                    if k[:1] == b"x":
                        continue
                    if k[:1] == b"e":
                        v = with_reserve_expires(v, 0.0)
                got.append((k, v))
            out[name] = got
        out[b"meta"] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store._meta)]
    return out


def observe(store: DiskStore) -> dict[str, Any]:
    """What the store's user sees: its records, counters and Vary names."""
    return {
        "records": sorted(map(repr, map(_seen, store))),
        "len": len(store),
        "usage": store.usage(),
        "reserve": [store.reserve_usage(z) for z in ZONES],
        "reclaimed": store.reclaimed_upto,
        "vary": store.lookup("http://h.test/page")[0],
        "stats": {k: v for k, v in dataclasses.asdict(store.stats).items() if k != "commits"},
    }


def to_layout2(path: Any) -> None:
    """Rewrite the closed layout-3 store at ``path`` as layout 2's code writes the same records:
    a ``k`` + key → tick row per placed disk-cache record, its ``s`` row empty, its order row under
    ``o``, and ``layout`` 2."""
    env = lmdb.open(str(path), max_dbs=64, map_size=MAP_SIZE)
    with env.begin(write=True) as txn:
        names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        for name in names:
            if name[:2] != CACHE + b"/":
                continue
            db = env.open_db(name, txn=txn)
            old = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
            for k, v in old:
                if k[:1] == b"s" and v:
                    txn.put(k, b"", db=db)
                    txn.put(b"k" + k[9:], v[1:], db=db)
                elif k[:1] == b"~":
                    txn.delete(k, db=db)
                    txn.put(b"o" + k[1:], b"", db=db)
        meta = env.open_db(b"meta", txn=txn)
        txn.put(b"layout", (2).to_bytes(8, "little", signed=True), db=meta)
    env.close()
