"""The control-plane database: schema, migrations and queries (SQLAlchemy 2.x Core, no ORM).

Rules:
- One code path for both engines: embedded SQLite (the default, ``sqlite:///data/edgecache.db``) and
  PostgreSQL for clusters (``postgresql+psycopg://…``). Statements are built with SQLAlchemy Core so
  the same expression compiles for both; dialect-specific code is limited to ``engine.py``
  (connection pragmas, transaction start, the migration lock).
- The schema changes only through Alembic revisions (``migrations/``, run by ``migrate.py``).
- Nothing here knows a wire format or a domain rule: modules take and return plain values and
  frozen records. Rules (hashing, expiry, permissions) live in ``edgecache.control``.
- Calls block. Callers on an event loop run them in a worker thread.
- Every write goes through ``engine.write_transaction`` so SQLite takes its write lock up front.
"""

from edgecache.db.engine import open_database, read_transaction, sqlite_url, write_transaction
from edgecache.db.schema import metadata

__all__ = [
    "metadata",
    "open_database",
    "read_transaction",
    "sqlite_url",
    "write_transaction",
]
