"""Schema upgrades (Alembic) on a real SQLite file and a real PostgreSQL server.

``MigrationContract`` holds the engine-independent tests; the classes at the bottom run it on each
engine. What they pin: a database that edgecache 0.1.0 created (``schema_0_1_0``, its DDL frozen)
is upgraded with every row intact and still usable; processes that upgrade at once migrate once;
the revisions produce exactly what ``schema.py`` describes (the drift check: a table or column added
to ``schema.py`` without its revision fails here).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cloudflare
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from typer.testing import CliRunner

import schema_0_1_0
from edgecache.app import Node
from edgecache.cli import app
from edgecache.config import Account, Config, Listener, Zone
from edgecache.control.credentials import CredentialService, Permission
from edgecache.control.secrets import MasterKey, SecretService
from edgecache.db.engine import connect, migration_transaction, open_database, sqlite_url
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.migrate import LEGACY_REVISION, SCRIPTS, head, state
from edgecache.db.schema import metadata
from edgecache.db.tasks import TaskStore
from ledger_rows import ledger_row_of_job
from pg import PostgresServer, postgres_server_fixture, postgres_url_fixture  # noqa: F401

ACCOUNT = "a" * 32
ZONE = "1" * 32
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def create_release_0_1_0(url: str) -> None:
    """An empty database as edgecache 0.1.0 left it after its first start."""
    engine = connect(url)
    try:
        ddl = schema_0_1_0.SQLITE if engine.dialect.name == "sqlite" else schema_0_1_0.POSTGRESQL
        with engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)
            at: Any = T0 if engine.dialect.name == "postgresql" else T0.strftime("%Y-%m-%d %H:%M:%S.%f")
            conn.execute(text(schema_0_1_0.STAMP), {"at": at})
    finally:
        engine.dispose()


class Filled:
    """What a 0.1.0 node wrote: secrets to try again after the upgrade, and the ledger's numbering."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        credentials = CredentialService(engine)
        credentials.ensure_account(ACCOUNT, "Acme", "enterprise")
        credentials.ensure_zone(ZONE, ACCOUNT, "example.com", "enterprise")
        self.token_info, self.token = credentials.create_token(
            ACCOUNT, "deploy", [Permission.CACHE_PURGE], [ZONE]
        )
        revoked, _ = credentials.create_token(ACCOUNT, "old", [Permission.CACHE_PURGE])
        credentials.revoke_token(revoked.id)
        self.email = "ops@example.com"
        self.global_key = credentials.create_global_key(ACCOUNT, self.email)
        self.secret_id, self.secret_key = SecretService(engine, MasterKey(data_dir)).create(
            ACCOUNT, "ci", [Permission.CACHE_PURGE]
        )
        # Written as 0.1.0 wrote them, not through today's stores: their statements are the newest
        # schema's (the ledger's insert reads ``high_water``, which 0.1.0 did not have).
        seqs = []
        with engine.begin() as conn:
            for i, mode in enumerate(("delete", "invalidate", "delete")):
                at = _stored(engine, T0 + timedelta(seconds=i))
                seq = conn.execute(
                    text(
                        "INSERT INTO purge_ledger (zone_id, mode, selectors, principal, dialect, created_at,"
                        " job_id) VALUES (:z, :m, :s, :p, 'cloudflare', :at, :j) RETURNING seq"
                    ),
                    {
                        "z": ZONE,
                        "m": mode,
                        "s": f'{{"files":["http://example.com/{i}"]}}',
                        "p": f"token:{self.token_info.id}",
                        "at": at,
                        "j": f"{i:032x}",
                    },
                ).scalar_one()
                seqs.append(int(seq))
                conn.execute(
                    text(
                        "INSERT INTO tasks (job_id, kind, zone_id, seq, target, domain, type, method, status,"
                        " created_at, updated_at, principal, dialect) VALUES (:j, 'purge', :z, :seq, :t,"
                        " 'example.com', 'purge_url', :m, 'processing', :at, :at, :p, 'cloudflare')"
                    ),
                    {
                        "j": f"{i:032x}",
                        "z": ZONE,
                        "seq": seq,
                        "t": f"http://example.com/{i}",
                        "m": mode,
                        "at": at,
                        "p": f"token:{self.token_info.id}",
                    },
                )
            conn.execute(
                text(
                    "UPDATE tasks SET status = 'success', matched = 3, updated_at = :at"
                    " WHERE seq = :seq AND target = 'http://example.com/0'"
                ),
                {"seq": seqs[0], "at": _stored(engine, T0 + timedelta(minutes=1))},
            )
            conn.execute(
                text(
                    "INSERT INTO tasks (job_id, kind, zone_id, seq, target, domain, type, method, status,"
                    " created_at, updated_at, principal, dialect) VALUES (:j, 'prefetch', :z, NULL,"
                    " 'http://example.com/warm', 'example.com', 'prefetch_url', NULL, 'processing', :at,"
                    " :at, 'cli', 'edgeone')"
                ),
                {"j": "e" * 32, "z": ZONE, "at": _stored(engine, T0)},
            )
            # Compaction deletes the newest ledger rows too; their numbers must stay used.
            conn.execute(text("DELETE FROM tasks WHERE seq = :s"), {"s": seqs[-1]})
            conn.execute(text("DELETE FROM purge_ledger WHERE seq = :s"), {"s": seqs[-1]})
        self.highest_seq = seqs[-1]


def _stored(engine: Engine, at: datetime) -> Any:
    """``at`` as a raw statement binds a UTC time on ``engine`` (SQLite: ``UTCDateTime``'s text)."""
    return at if engine.dialect.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f")


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table edgecache owns (not the version records), in a stable order."""
    with engine.connect() as conn:
        tables = sorted(set(inspect(conn).get_table_names()) - {"alembic_version", "schema_version"})
        return {
            t: sorted((tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}")), key=repr)
            for t in tables
        }


def intact(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> bool:
    """Every row of ``before`` is still there, and the tables later revisions added are empty (but
    ``high_water``, where SQLite's ``sqlite_sequence`` numbers of the ledger and the tasks go)."""
    return {t: after.get(t) for t in before} == before and not any(
        rows for t, rows in after.items() if t not in before and t != "high_water"
    )


def drift(engine: Engine) -> list[Any]:
    """What alembic's autogenerate would still write to make the database match ``schema.py``."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from edgecache.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class MigrationContract:
    """Subclasses provide ``db_url``: a new, empty database per test."""

    def test_release_0_1_0_database_is_upgraded_with_every_row_intact(
        self, db_url: str, tmp_path: Path
    ) -> None:
        create_release_0_1_0(db_url)
        old = connect(db_url)
        filled = Filled(old, tmp_path)
        before = snapshot(old)
        assert len(before["tokens"]) == 2 and len(before["purge_ledger"]) == 2 and len(before["tasks"]) == 3
        found = state(old)
        assert (found.legacy, found.revision) == (True, None)
        old.dispose()

        engine = open_database(db_url)
        try:
            assert state(engine).up_to_date
            assert intact(before, snapshot(engine))
            with engine.connect() as conn:
                assert "schema_version" not in inspect(conn).get_table_names()
            credentials = CredentialService(engine)
            principal = credentials.verify_token(filled.token)
            assert principal is not None and principal.zones == frozenset({ZONE})
            assert credentials.verify_global_key(filled.email, filled.global_key) is not None
            found_secret = SecretService(engine, MasterKey(tmp_path)).lookup(filled.secret_id)
            assert found_secret is not None and found_secret[0] == filled.secret_key
            tasks = TaskStore(engine)
            assert [(t.status, t.matched) for t in tasks.by_job(f"{0:032x}")] == [("success", 3)]
            assert [t.status for t in tasks.by_job(f"{1:032x}")] == ["processing"]
            ledger = LedgerStore(engine)
            next_seq = ledger.append(
                NewPurge(
                    zone_id=ZONE,
                    mode="delete",
                    selectors={"everything": True},
                    principal="cli",
                    dialect="cli",
                    job_id="d" * 32,
                    created_at=T0,
                )
            )
            assert next_seq > filled.highest_seq
            assert drift(engine) == []
        finally:
            engine.dispose()

    def test_fresh_database_matches_schema_py(self, db_url: str) -> None:
        engine = open_database(db_url)
        try:
            found = state(engine)
            assert (found.revision, found.legacy) == (head(), False)
            assert drift(engine) == []
        finally:
            engine.dispose()

    def test_opening_twice_changes_nothing(self, db_url: str, tmp_path: Path) -> None:
        open_database(db_url).dispose()
        engine = open_database(db_url)
        try:
            Filled(engine, tmp_path)
            rows = snapshot(engine)
        finally:
            engine.dispose()
        engine = open_database(db_url)
        try:
            assert snapshot(engine) == rows
        finally:
            engine.dispose()

    def test_a_newer_release_database_is_refused(self, db_url: str) -> None:
        open_database(db_url).dispose()
        engine = connect(db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        engine.dispose()
        with pytest.raises(RuntimeError, match="newer edgecache"):
            open_database(db_url)

    def test_tables_without_a_version_record_are_refused(self, db_url: str) -> None:
        create_release_0_1_0(db_url)
        engine = connect(db_url)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE schema_version"))
        engine.dispose()
        with pytest.raises(RuntimeError, match="refusing to guess"):
            open_database(db_url)

    def test_processes_upgrading_at_once_migrate_once(self, db_url: str, tmp_path: Path) -> None:
        create_release_0_1_0(db_url)
        engine = connect(db_url)
        Filled(engine, tmp_path)
        before = snapshot(engine)
        engine.dispose()
        procs = [run_cli("db", "upgrade", "--database-url", db_url) for _ in range(4)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outputs
        said = sorted(out.strip() for out, _ in outputs)
        expected = [f"already at {head()} (head)"] * 3 + [f"upgraded edgecache 0.1.0's schema to {head()}"]
        assert said == expected
        engine = connect(db_url)
        try:
            assert state(engine).up_to_date and intact(before, snapshot(engine))
        finally:
            engine.dispose()

    def test_an_upgrade_waits_for_the_migration_lock(self, db_url: str) -> None:
        engine = connect(db_url)
        try:
            with migration_transaction(engine):
                waiting = run_cli("db", "upgrade", "--database-url", db_url)
                # Long enough for the interpreter to start and reach the lock on a loaded machine.
                deadline = time.monotonic() + 4.0
                while time.monotonic() < deadline and waiting.poll() is None:
                    time.sleep(0.1)
                assert waiting.poll() is None, waiting.communicate()
            out, err = waiting.communicate(timeout=120)
            assert waiting.returncode == 0, err
            assert out.strip() == f"upgraded from an empty database to {head()}"
            assert state(engine).up_to_date
        finally:
            engine.dispose()

    def test_an_up_to_date_database_is_opened_without_waiting_for_the_lock(self, db_url: str) -> None:
        open_database(db_url).dispose()
        engine = connect(db_url)
        try:
            with migration_transaction(engine):
                opener = run_cli("db", "upgrade", "--database-url", db_url)
                out, err = opener.communicate(timeout=60)
            assert opener.returncode == 0, err
            assert out.strip() == f"already at {head()} (head)"
        finally:
            engine.dispose()

    def test_cli_current_reports_without_changing(self, db_url: str) -> None:
        runner = CliRunner()
        create_release_0_1_0(db_url)
        said = runner.invoke(app, ["db", "current", "--database-url", db_url])
        assert said.exit_code == 0 and said.output.startswith("none (created by edgecache 0.1.0")
        assert state(connect(db_url)).legacy
        said = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
        assert said.exit_code == 0 and said.output.strip() == f"upgraded edgecache 0.1.0's schema to {head()}"
        said = runner.invoke(app, ["db", "current", "--database-url", db_url])
        assert said.exit_code == 0 and said.output.strip() == f"{head()} (head)"


def test_the_revisions_form_one_line() -> None:
    # Two branches that each added a revision on the same parent leave two heads: `upgrade head`
    # would refuse to run. Renumber one of them on top of the other when merging.
    script = ScriptDirectory(str(SCRIPTS))
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == LEGACY_REVISION and revisions[-1].down_revision is None


def test_cli_reads_the_database_from_the_configuration(tmp_path: Path) -> None:
    data = tmp_path / "node"
    conf = tmp_path / "edgecache.toml"
    conf.write_text(f'data_dir = "{data}"\n')
    said = CliRunner().invoke(app, ["db", "upgrade", "--config", str(conf)])
    assert said.exit_code == 0, said.output
    engine = connect(sqlite_url(data))
    try:
        assert state(engine).up_to_date
    finally:
        engine.dispose()


def test_a_node_started_on_a_0_1_0_data_directory_upgrades_it_and_its_tokens_still_purge(
    tmp_path: Path,
) -> None:
    create_release_0_1_0(sqlite_url(tmp_path))
    old = connect(sqlite_url(tmp_path))
    filled = Filled(old, tmp_path)
    old.dispose()
    cfg = Config(
        data_dir=tmp_path,
        data=Listener(port=0),
        control=Listener(port=0),
        accounts=(Account(id=ACCOUNT, name="Acme"),),
        zones=(
            Zone(
                id=ZONE,
                account_id=ACCOUNT,
                name="example.com",
                hostnames=("example.com",),
                origin="http://127.0.0.1:9",
            ),
        ),
    )

    def purge_with_the_old_token(port: int) -> str:
        with cloudflare.Cloudflare(
            api_token=filled.token, base_url=f"http://127.0.0.1:{port}/client/v4", max_retries=0
        ) as cf:
            answer = cf.cache.purge(zone_id=ZONE, tags=["after-upgrade"])
        assert answer is not None
        return answer.id

    async def run() -> tuple[str, int]:
        node = Node(cfg)
        await node.start()
        try:
            job = await asyncio.to_thread(purge_with_the_old_token, node.control_port)
            row = ledger_row_of_job(node.database, job)
            assert row is not None
            return job, row.seq
        finally:
            await node.stop()

    job, seq = asyncio.run(run())
    assert len(job) == 32 and seq > filled.highest_seq
    engine = connect(sqlite_url(tmp_path))
    try:
        assert state(engine).up_to_date and drift(engine) == []
    finally:
        engine.dispose()


class TestMigrationsSQLite(MigrationContract):
    @pytest.fixture
    def db_url(self, tmp_path: Path) -> Iterator[str]:
        yield sqlite_url(tmp_path / "db")


class TestMigrationsPostgres(MigrationContract):
    @pytest.fixture
    def db_url(self, postgres_server: PostgresServer) -> str:
        return postgres_server.create_database()
