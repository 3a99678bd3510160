"""An ``engine`` fixture on both databases, SQLite (embedded) and a real PostgreSQL (from
``tests/pg.py``), with one account and one zone already seeded, for the tests of the stores.

Use it from a test module with::

    from zoned_db import ACCOUNT, ZONE, engine_fixture, postgres_server_fixture  # noqa: F401

(``postgres_server_fixture`` must be imported too: pytest looks the fixture up in the test module.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.identity import IdentityStore
from pg import PostgresServer, postgres_server_fixture

__all__ = ["ACCOUNT", "ZONE", "engine_fixture", "postgres_server_fixture"]

ACCOUNT = "a" * 32
ZONE = "b" * 32


@pytest.fixture(name="engine", params=["sqlite", "postgresql"])
def engine_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh database with the identity account ``ACCOUNT`` and its zone ``ZONE``."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    eng = open_database(url)
    now = datetime.now(UTC)
    ids = IdentityStore(eng)
    ids.upsert_account(ACCOUNT, "acme", "enterprise", now)
    ids.upsert_zone(ZONE, ACCOUNT, "example.com", "enterprise", now)
    yield eng
    eng.dispose()
