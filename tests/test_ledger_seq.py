"""A purge's ledger position as the write returns it is the row's: on SQLite read from the driver's
``lastrowid`` (no ``RETURNING``), on PostgreSQL from ``RETURNING``; never a number handed out
before, even once the newest rows are gone, and the right one for a write after another was undone
in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete

from edgecache.db.engine import write_transaction
from edgecache.db.ledger import LedgerStore, NewPurge, append_in
from edgecache.db.prepared import savepoint
from edgecache.db.schema import purge_ledger
from edgecache.db.tasks import NewTask
from ledger_rows import ledger_row_of_job
from zoned_db import ZONE, engine_fixture, postgres_server_fixture  # noqa: F401


def _purge(i: int, target: str | None = None) -> NewPurge:
    return NewPurge(
        ZONE,
        "delete",
        {"tags": [f"t{i}"]},
        "p",
        "cloudflare",
        f"{i:032x}",
        datetime.now(UTC),
        [NewTask(target or f"t{i}", "purge_cache_tag", None, "delete")],
    )


def test_the_seq_a_write_returns_is_its_rows_and_is_never_handed_out_again(engine: Engine) -> None:
    store = LedgerStore(engine)
    seqs = [store.append(_purge(i)) for i in range(3)]
    assert [r.seq for r in store.after(0)] == seqs
    assert [ledger_row_of_job(engine, f"{i:032x}").seq for i in range(3)] == seqs  # type: ignore[union-attr]
    with write_transaction(engine) as conn:
        conn.execute(delete(purge_ledger).where(purge_ledger.c.seq >= seqs[1]))
    after = store.append(_purge(3))
    assert after > seqs[-1]
    assert [r.seq for r in store.after(0)] == [seqs[0], after]


def test_the_seq_after_a_write_undone_in_the_same_transaction_is_the_stored_rows(engine: Engine) -> None:
    store = LedgerStore(engine)
    first = store.append(_purge(0))
    with write_transaction(engine) as conn:
        with pytest.raises(RuntimeError), savepoint(conn, "undone"):
            append_in(conn, _purge(1))
            raise RuntimeError("undone")
        kept = append_in(conn, _purge(2))
    rows = store.after(0)
    assert [r.seq for r in rows] == [first, kept]
    assert rows[-1].job_id == f"{2:032x}"
    assert kept > first
