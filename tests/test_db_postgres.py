"""The credential service and the schema on a real PostgreSQL server (see ``pg.py``).

The same contracts as on SQLite (``test_credentials.py``), plus what only a server shows: several
nodes opening one empty database at once.
"""

from __future__ import annotations

import threading

import pytest

from edgecache.db.engine import open_database
from edgecache.db.migrate import head, state
from pg import PostgresServer, postgres_server_fixture, postgres_url_fixture  # noqa: F401
from test_credentials import CredentialContract, DatabaseContract


@pytest.fixture(scope="module")
def shared_database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


class TestCredentialsPostgres(CredentialContract):
    @pytest.fixture
    def db_url(self, shared_database: str) -> str:
        # One database for the class (creating one costs ~0.5 s); the contract empties its tables
        # before each test.
        return shared_database


class TestDatabasePostgres(DatabaseContract):
    @pytest.fixture
    def db_url(self, postgres_url: str) -> str:
        return postgres_url


def test_nodes_starting_together_create_the_schema_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start_node() -> None:
        barrier.wait()
        try:
            open_database(postgres_url).dispose()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start_node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = open_database(postgres_url)
    assert state(engine).revision == head()
    engine.dispose()


def test_server_runs_unprivileged(postgres_server: PostgresServer) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres_server.port, user="postgres") as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), version()").fetchone()
    assert row is not None and row[0] == "127.0.0.1" and row[1].startswith("PostgreSQL")
