"""Alembic's environment: run by ``edgecache.db.migrate`` on a connection it already holds.

The caller has opened the transaction and taken the migration lock, so the revisions, the
``alembic_version`` update and the lock all belong to that one transaction. There is no offline
(SQL script) mode: a database is always migrated through a live connection.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

connection = context.config.attributes["connection"]
assert isinstance(connection, Connection)
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
