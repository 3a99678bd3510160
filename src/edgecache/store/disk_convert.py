"""Converting a disk store of layout 2 to layout 3 at open (decision 0033).

Layout 3 differs from layout 2 in the disk cache's index rows alone: the ``k`` + key → tick row is
gone (``~`` + the tick is the ``s`` row's value instead) and the eviction order's rows moved from
``o`` + tick + key to ``~`` + tick + key. Records, tag, expiry, Vary and large-object rows, the reserve's
databases and ``meta``'s counters and clock stay as they are, so a conversion rewrites three index
rows per disk-cache record and reads no record. It runs inside the open's write transaction
(``DiskStore._open_layout``): a crash before its commit leaves layout 2 whole, for the next open
to convert again.
"""

from __future__ import annotations

from typing import Any

import lmdb

from edgecache.store.disk_layout import CACHE, ORDER, SEQ, U64, V2_ORDER, V2_TICK

STEP = 4096
"""Rows read per cursor pass: a pass's rows are changed after it, with cursors positioned anew
(a cursor's place is not kept across writes through another one)."""
_SEQ_AT = len(SEQ) + U64.size


def convert_layout2(env: lmdb.Environment, txn: lmdb.Transaction) -> int:
    """Convert every zone's disk-cache database in ``txn`` (a write transaction) from layout 2's
    rows to layout 3's; how many records got their tick in their ``s`` row."""
    names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
    placed = 0
    for name in names:
        if name[:2] == CACHE + b"/":
            placed += _convert_cache(txn, env.open_db(name, txn=txn))
    return placed


def _convert_cache(txn: lmdb.Transaction, db: Any) -> int:
    placed = _ticks_into_seq_rows(txn, db)
    _delete_prefixed(txn, db, V2_TICK)
    _move_order(txn, db)
    return placed


def _ticks_into_seq_rows(txn: lmdb.Transaction, db: Any) -> int:
    """Give each ``s`` row its record's place (``~`` and the ``k`` row's value); a record without
    a ``k`` row keeps an empty one, as it had no place in the order."""
    cur = txn.cursor(db=db)
    get = txn.get
    placed = 0
    after = SEQ
    while True:
        rows: list[tuple[bytes, bytes]] = []
        if cur.set_range(after):
            for raw in cur.iternext(keys=True, values=False):
                k = bytes(raw)
                if k[:1] != SEQ:
                    break
                tick = get(V2_TICK + k[_SEQ_AT:], db=db)
                if tick is not None:
                    rows.append((k, ORDER + bytes(tick)))
                after = k + b"\x00"
                if len(rows) == STEP:
                    break
        if not rows:
            return placed
        # In key order, so each put finds its row on the page the previous one left the cursor on.
        txn.cursor(db=db).putmulti(rows)
        placed += len(rows)


def _delete_prefixed(txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    while bytes(cur.key()[:1]) == prefix:
        if not cur.delete():
            return


def _move_order(txn: lmdb.Transaction, db: Any) -> None:
    """Move the ``o`` rows to ``~`` rows, appended in tick order (``~`` sorts last)."""
    cur = txn.cursor(db=db)
    out = txn.cursor(db=db)
    while cur.set_range(V2_ORDER):
        rows: list[tuple[bytes, bytes]] = []
        while len(rows) < STEP:
            k = bytes(cur.key())
            if k[:1] != V2_ORDER:
                break
            rows.append((ORDER + k[1:], b""))
            if not cur.delete():
                break
        if not rows:
            return
        if out.putmulti(rows, append=True)[1] != len(rows):
            out.putmulti(rows)
