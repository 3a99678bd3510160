"""Ids that SQLite never hands out twice, without ``AUTOINCREMENT``.

Why: ``AUTOINCREMENT`` keeps each table's highest id in ``sqlite_sequence`` and rewrites that row
on every insert: one more page in every purge's commit (decision 0034). A rowid table alone hands
out max(rowid)+1, which reuses the numbers of the newest rows once they are deleted: a ledger
position reused would be skipped by every node that applied the first purge with it.

Rules: a trigger on each table (revision 0006) records in ``high_water`` the id of a row deleted
while it was above every id left; the inserts give the id :func:`above_high_water`, which is that
mark plus one while the mark is at or above the table's highest id, else NULL, and a NULL
``INTEGER PRIMARY KEY`` is SQLite's max(rowid)+1. So the common insert reads one missing row of a
tiny table and writes nothing more. PostgreSQL keeps its identities.
"""

from __future__ import annotations

from sqlalchemy import Column, Table, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from edgecache.db.schema import high_water


def above_high_water(table: Table, column: Column[int]) -> ColumnElement[int]:
    """The id a new row of ``table`` gets on SQLite (its ``column``: the rowid): one above the
    highest deleted while it was the highest, or NULL, which lets SQLite number the row."""
    # Literals, not binds: the statement keeps the binds of its columns only.
    highest = func.coalesce(select(func.max(column)).scalar_subquery(), literal_column("0"))
    return (
        select(high_water.c["last"] + literal_column("1"))
        .where(high_water.c["name"] == literal_column(f"'{table.name}'"), high_water.c["last"] >= highest)
        .scalar_subquery()
    )
