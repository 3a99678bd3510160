"""Each zone's Cache Reserve row: the setting (on/off, when changed) and its latest clear.

Rules: a zone without a row is off and has never been cleared. Every write commits before it
returns (the API answers after it). The clear's progress (objects, bytes) is written as it goes so
that a restart resumes with the counts so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from edgecache.db.engine import read_transaction, write_transaction
from edgecache.db.schema import cache_reserve


@dataclass(frozen=True, slots=True)
class ReserveRow:
    """One zone's Cache Reserve state as stored."""

    zone_id: str
    value: str
    modified_on: datetime | None
    clear_state: str | None
    clear_start: datetime | None
    clear_end: datetime | None
    clear_objects: int
    clear_bytes: int


class CacheReserveStore:
    """Reads and writes the ``cache_reserve`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def all(self) -> list[ReserveRow]:
        """Every stored row (read once at start)."""
        with read_transaction(self._engine) as conn:
            rows = conn.execute(select(cache_reserve)).all()
        return [ReserveRow(**r._mapping) for r in rows]

    def save(self, row: ReserveRow) -> None:
        """Insert or replace a zone's row, and commit."""
        values = {
            "value": row.value,
            "modified_on": row.modified_on,
            "clear_state": row.clear_state,
            "clear_start": row.clear_start,
            "clear_end": row.clear_end,
            "clear_objects": row.clear_objects,
            "clear_bytes": row.clear_bytes,
        }
        with write_transaction(self._engine) as conn:
            updated = conn.execute(
                cache_reserve.update().where(cache_reserve.c.zone_id == row.zone_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(cache_reserve.insert().values(zone_id=row.zone_id, **values))
