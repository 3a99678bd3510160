"""The credential service and the control database, on a real SQLite file.

``CredentialContract`` and ``DatabaseContract`` hold the engine-independent tests; the classes at
the bottom run them on SQLite, ``test_db_postgres.py`` runs them on a real PostgreSQL server.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from edgecache.cli_tokens import tokens_app
from edgecache.control.credentials import (
    ALL_PERMISSIONS,
    CredentialError,
    CredentialService,
    Permission,
    is_well_formed_email,
    is_well_formed_global_key,
    is_well_formed_token,
)
from edgecache.db import engine as engine_module
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.ledger import NewPurge, append_in
from edgecache.db.migrate import head, state
from edgecache.db.schema import (
    global_keys,
    metadata,
    purge_ledger,
    tokens,
)

ACCOUNT = "a" * 32
OTHER_ACCOUNT = "b" * 32
ZONE_1 = "1" * 32
ZONE_2 = "2" * 32
OTHER_ZONE = "3" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def seed(service: CredentialService) -> None:
    service.ensure_account(ACCOUNT, "Acme", "pro")
    service.ensure_account(OTHER_ACCOUNT, "Other", "free")
    service.ensure_zone(ZONE_1, ACCOUNT, "one.example", "pro")
    service.ensure_zone(ZONE_2, ACCOUNT, "two.example", "pro")
    service.ensure_zone(OTHER_ZONE, OTHER_ACCOUNT, "other.example", "free")


def ledger_row(zone_id: str = ZONE_1) -> dict[str, object]:
    return {
        "zone_id": zone_id,
        "mode": "delete",
        "selectors": '{"tags": ["a"]}',
        "principal": "token:x",
        "dialect": "cloudflare",
        "created_at": datetime.now(UTC),
        "job_id": "f" * 32,
    }


class CredentialContract:
    """Tests every engine must pass; subclasses provide the ``db_url`` fixture."""

    @pytest.fixture
    def engine(self, db_url: str) -> Iterator[Engine]:
        engine = open_database(db_url)
        # A subclass may share one database between tests (a PostgreSQL database costs ~0.5 s to
        # create): start every test from empty tables.
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))
        yield engine
        engine.dispose()

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def service(self, engine: Engine, clock: FakeClock) -> CredentialService:
        s = CredentialService(engine, clock=clock)
        seed(s)
        return s

    def test_token_lifecycle(self, service: CredentialService, clock: FakeClock) -> None:
        info, secret = service.create_token(ACCOUNT, "deploy", [Permission.CACHE_PURGE])
        assert is_well_formed_token(secret)
        assert info.status(clock()) == "active"
        p = service.verify_token(secret)
        assert p is not None
        assert (p.kind, p.id, p.account_id, p.label) == ("token", info.id, ACCOUNT, "deploy")
        assert p.permissions == {Permission.CACHE_PURGE}
        assert p.zones is None
        assert p.ref == f"token:{info.id}"

        assert service.revoke_token(info.id) is True
        assert service.verify_token(secret) is None
        assert service.revoke_token(info.id) is False  # already revoked
        assert service.revoke_token("0" * 32) is False  # unknown
        listed = service.list_tokens(ACCOUNT)
        assert [t.id for t in listed] == [info.id]
        assert listed[0].status(clock()) == "revoked"

    def test_unknown_and_malformed_tokens(self, service: CredentialService) -> None:
        _, secret = service.create_token(ACCOUNT, "t", ["cache_purge"])
        other = ("A" if secret[0] != "A" else "B") + secret[1:]
        assert service.verify_token(other) is None
        assert service.verify_token(secret[:-1]) is None
        assert service.verify_token(secret + "x") is None
        assert service.verify_token(secret[:-1] + "!") is None
        assert service.verify_token("") is None

    def test_expiry(self, service: CredentialService, clock: FakeClock) -> None:
        info, secret = service.create_token(
            ACCOUNT, "short", [Permission.CACHE_PURGE], expires_at=clock() + timedelta(hours=1)
        )
        assert service.verify_token(secret) is not None
        clock.advance(minutes=59, seconds=59)
        assert service.verify_token(secret) is not None
        clock.advance(seconds=1)
        assert service.verify_token(secret) is None
        token = service.get_token(info.id)
        assert token is not None
        assert token.status(clock()) == "expired"
        assert token.expires_at == datetime(2026, 11, 22, 13, 0, tzinfo=UTC)

    def test_zone_scope(self, service: CredentialService) -> None:
        _, scoped = service.create_token(ACCOUNT, "one zone", [Permission.CACHE_PURGE], zones=[ZONE_1])
        _, wide = service.create_token(ACCOUNT, "all zones", [Permission.CACHE_PURGE])
        p, q = service.verify_token(scoped), service.verify_token(wide)
        assert p is not None and q is not None
        assert p.zones == frozenset({ZONE_1})
        assert p.allows(Permission.CACHE_PURGE, ZONE_1, ACCOUNT)
        assert not p.allows(Permission.CACHE_PURGE, ZONE_2, ACCOUNT)
        assert q.allows(Permission.CACHE_PURGE, ZONE_1, ACCOUNT)
        assert q.allows(Permission.CACHE_PURGE, ZONE_2, ACCOUNT)
        # A zone of another account is never reachable, whatever the scope says.
        assert not q.allows(Permission.CACHE_PURGE, OTHER_ZONE, OTHER_ACCOUNT)
        assert not p.allows(Permission.CACHE_PURGE, ZONE_1, OTHER_ACCOUNT)

    def test_permissions(self, service: CredentialService) -> None:
        _, secret = service.create_token(
            ACCOUNT, "settings", ["zone_settings_read", "#zone_settings:edit", "Queues Write"], zones=[ZONE_1]
        )
        p = service.verify_token(secret)
        assert p is not None
        assert p.permissions == {
            Permission.ZONE_SETTINGS_READ,
            Permission.ZONE_SETTINGS_WRITE,
            Permission.QUEUES_WRITE,
        }
        assert not p.allows(Permission.CACHE_PURGE, ZONE_1, ACCOUNT)
        assert p.allows(Permission.ZONE_SETTINGS_WRITE, ZONE_1, ACCOUNT)
        # Queues are account-level: a zone scope does not limit them, the account does.
        assert p.allows_account(Permission.QUEUES_WRITE, ACCOUNT)
        assert not p.allows_account(Permission.QUEUES_READ, ACCOUNT)
        assert not p.allows_account(Permission.QUEUES_WRITE, OTHER_ACCOUNT)
        assert not p.allows_account(Permission.ZONE_SETTINGS_WRITE, ACCOUNT)

    def test_create_token_rejects(self, service: CredentialService, clock: FakeClock) -> None:
        bad: list[dict[str, object]] = [
            {"account_id": "c" * 32},  # unknown account
            {"permissions": []},
            {"permissions": ["purge_all_the_things"]},
            {"zones": [OTHER_ZONE]},  # another account's zone
            {"zones": ["nothex"]},
            {"zones": []},
            {"name": ""},
            {"name": "x" * 121},
            {"expires_at": clock() - timedelta(seconds=1)},
            {"expires_at": datetime(2030, 1, 1)},  # naive
        ]
        for change in bad:
            args: dict[str, object] = {"account_id": ACCOUNT, "name": "t", "permissions": ["cache_purge"]}
            args.update(change)
            with pytest.raises(CredentialError):
                service.create_token(**args)  # type: ignore[arg-type]
        assert service.list_tokens() == []

    def test_plaintext_never_stored(self, service: CredentialService, engine: Engine) -> None:
        info, secret = service.create_token(ACCOUNT, "t", [Permission.CACHE_PURGE])
        key = service.create_global_key(ACCOUNT, "ops@example.com")
        assert service.verify_token(secret) is not None
        with engine.connect() as conn:
            rows = [*conn.execute(select(tokens)), *conn.execute(select(global_keys))]
        values = [str(v) for row in rows for v in row]
        assert values
        assert not any(secret in v or key in v for v in values)
        assert len({row.id for row in rows}) == 2
        assert info.id in values

    def test_last_used_written_at_most_once_a_minute(
        self, service: CredentialService, clock: FakeClock
    ) -> None:
        info, secret = service.create_token(ACCOUNT, "t", [Permission.CACHE_PURGE])
        t0 = clock()
        assert service.verify_token(secret) is not None
        assert _last_used(service, info.id) == t0
        clock.advance(seconds=59)
        assert service.verify_token(secret) is not None
        assert _last_used(service, info.id) == t0
        clock.advance(seconds=2)
        assert service.verify_token(secret) is not None
        assert _last_used(service, info.id) == t0 + timedelta(seconds=61)

    def test_global_key(self, service: CredentialService) -> None:
        key = service.create_global_key(ACCOUNT, "Ops@Example.com")
        assert is_well_formed_global_key(key)
        p = service.verify_global_key("ops@example.COM", key)
        assert p is not None
        assert (p.kind, p.account_id, p.label, p.zones) == ("global_key", ACCOUNT, "ops@example.com", None)
        assert p.permissions == ALL_PERMISSIONS
        assert p.allows(Permission.CACHE_PURGE, ZONE_2, ACCOUNT)
        assert p.allows_account(Permission.QUEUES_WRITE, ACCOUNT)
        assert not p.allows(Permission.CACHE_PURGE, OTHER_ZONE, OTHER_ACCOUNT)
        assert service.verify_global_key("other@example.com", key) is None
        assert service.verify_global_key("ops@example.com", "0" * 37) is None
        assert service.verify_global_key("ops@example.com", key.upper()) is None
        assert service.verify_global_key("not-an-email", key) is None

        rolled = service.create_global_key(ACCOUNT, "ops@example.com")
        assert service.verify_global_key("ops@example.com", key) is None
        assert service.verify_global_key("ops@example.com", rolled) is not None
        with pytest.raises(CredentialError):
            service.create_global_key(OTHER_ACCOUNT, "ops@example.com")
        with pytest.raises(CredentialError):
            service.create_global_key(ACCOUNT, "no at sign")

    def test_ensure_is_idempotent_and_updates(self, service: CredentialService) -> None:
        seed(service)
        zone = service.get_zone(ZONE_1)
        assert zone is not None and (zone.account_id, zone.name, zone.plan) == (ACCOUNT, "one.example", "pro")
        service.ensure_zone(ZONE_1, OTHER_ACCOUNT, "one.example", "enterprise")
        zone = service.get_zone(ZONE_1)
        assert zone is not None and (zone.account_id, zone.plan) == (OTHER_ACCOUNT, "enterprise")
        assert service.get_zone("9" * 32) is None
        with pytest.raises(CredentialError):
            service.ensure_zone("4" * 32, "c" * 32, "x", "pro")  # unknown account
        with pytest.raises(CredentialError):
            service.ensure_account("c" * 32, "x", "platinum")
        with pytest.raises(CredentialError):
            service.ensure_account("ACME", "x", "pro")

    def test_concurrent_verification(self, service: CredentialService, clock: FakeClock) -> None:
        secrets_ = [service.create_token(ACCOUNT, f"t{i}", ["cache_purge"])[1] for i in range(4)]
        failures: list[object] = []

        def work(secret: str) -> None:
            for _ in range(25):
                try:
                    if service.verify_token(secret) is None:
                        failures.append("rejected")
                except Exception as e:  # pragma: no cover - reported below
                    failures.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in secrets_ for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


def _last_used(service: CredentialService, token_id: str) -> datetime | None:
    token = service.get_token(token_id)
    assert token is not None
    return token.last_used_at


class DatabaseContract:
    """Schema and migration behaviour every engine must show; subclasses provide ``db_url``."""

    def test_open_is_idempotent(self, db_url: str) -> None:
        for _ in range(2):
            engine = open_database(db_url)
            found = state(engine)
            engine.dispose()
            assert (found.revision, found.legacy) == (head(), False)

    def test_ledger_sequence_and_constraints(self, db_url: str) -> None:
        engine = open_database(db_url)
        try:
            seed(CredentialService(engine))
            with engine.begin() as conn:

                def append() -> int:
                    # The product's insert: on SQLite it numbers the row above the high-water mark
                    # of deleted rows (decision 0034), which a bare INSERT does not read.
                    row = ledger_row()
                    purge = NewPurge(
                        str(row["zone_id"]),
                        "delete",
                        {"tags": ["a"]},
                        "token:x",
                        "cloudflare",
                        "f" * 32,
                        datetime.now(UTC),
                    )
                    return append_in(conn, purge)

                seqs = [append(), append()]
                # Compaction may delete the newest rows; their numbers must never be handed out again.
                conn.execute(delete(purge_ledger).where(purge_ledger.c.seq == seqs[1]))
                seqs.append(append())
            assert seqs[0] < seqs[1] < seqs[2]
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(insert(purge_ledger).values(**{**ledger_row(), "mode": "obliterate"}))
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(insert(purge_ledger).values(**ledger_row("9" * 32)))  # unknown zone
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(purge_ledger)).scalar_one() == 2
        finally:
            engine.dispose()

    def test_times_are_utc(self, db_url: str) -> None:
        engine = open_database(db_url)
        try:
            seed(CredentialService(engine))
            local = datetime(2026, 11, 22, 17, 0, tzinfo=timezone(timedelta(hours=5)))
            with engine.begin() as conn:
                conn.execute(insert(purge_ledger).values(**{**ledger_row(), "created_at": local}))
            with engine.connect() as conn:
                stored = conn.execute(select(purge_ledger.c.created_at)).scalar_one()
            assert stored == local and stored.tzinfo == UTC and stored.hour == 12
        finally:
            engine.dispose()


class TestCredentialsSQLite(CredentialContract):
    @pytest.fixture
    def db_url(self, tmp_path: Path) -> str:
        return sqlite_url(tmp_path)


class TestDatabaseSQLite(DatabaseContract):
    @pytest.fixture
    def db_url(self, tmp_path: Path) -> str:
        return sqlite_url(tmp_path / "nested" / "dir")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path))
    try:
        with engine.connect() as conn:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names]
        assert pragmas == ["wal", 2, 1, 10000]  # synchronous 2 = FULL
    finally:
        engine.dispose()


def test_a_valid_token_is_accepted_while_another_process_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a token's use is bookkeeping: when the database stays locked past the busy timeout,
    the token is still accepted (the failure must reach the service as an SQLAlchemy error)."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = open_database(sqlite_url(tmp_path))
    try:
        clock = FakeClock()
        service = CredentialService(engine, clock=clock)
        seed(service)
        info, secret = service.create_token(ACCOUNT, "t", [Permission.CACHE_PURGE])
        other = sqlite3.connect(tmp_path / "edgecache.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's write lock
            clock.advance(days=1)  # the token's use is due to be recorded
            principal = service.verify_token(secret)
            assert principal is not None and principal.id == info.id
        finally:
            other.close()
    finally:
        engine.dispose()


def test_sqlite_files_never_hold_a_secret(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path))
    service = CredentialService(engine)
    seed(service)
    _, secret = service.create_token(ACCOUNT, "t", ["cache_purge"])
    key = service.create_global_key(ACCOUNT, "ops@example.com")
    assert service.verify_token(secret) is not None
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("edgecache.db"))
    engine.dispose()
    assert b"ops@example.com" in data  # the scan does see the stored rows
    assert secret.encode() not in data and key.encode() not in data


def test_format_checks() -> None:
    assert is_well_formed_token("A" * 20 + "z9_-" * 5)
    assert not is_well_formed_token("A" * 39)
    assert not is_well_formed_token("A" * 39 + "=")
    assert not is_well_formed_token("A" * 40 + "\n")
    assert is_well_formed_global_key("0123456789abcdef" * 2 + "01234")
    assert not is_well_formed_global_key("0123456789ABCDEF" * 2 + "01234")
    assert not is_well_formed_global_key("0" * 36)
    assert is_well_formed_email("ops@example.com")
    assert is_well_formed_email("first.last+tag@sub.example.co.uk")
    for bad in ("", "ops", "ops@", "@example.com", "ops@example", "a b@example.com", "a@b@example.com"):
        assert not is_well_formed_email(bad), bad
    assert Permission.parse("Cache Purge") is Permission.CACHE_PURGE
    assert Permission.parse("#cache_purge:edit") is Permission.CACHE_PURGE
    assert Permission.CACHE_PURGE.label == "Cache Purge"
    with pytest.raises(ValueError, match="known: cache_purge"):
        Permission.parse("everything")


def test_cli(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path))
    seed(CredentialService(engine))
    engine.dispose()
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]

    made = runner.invoke(
        tokens_app,
        ["create", "--account", ACCOUNT, "--name", "ci", "-p", "cache_purge", "--zone", ZONE_1, *where],
    )
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert is_well_formed_token(secret)
    assert "cannot be shown again" in made.stderr

    listed = runner.invoke(tokens_app, ["list", *where])
    assert listed.exit_code == 0, listed.output
    assert "ci" in listed.stdout and "active" in listed.stdout and ZONE_1 in listed.stdout
    assert secret not in listed.stdout
    token_id = listed.stdout.splitlines()[1].split()[0]

    denied = runner.invoke(tokens_app, ["create", "--account", ACCOUNT, "--name", "x", "-p", "nope", *where])
    assert denied.exit_code == 1 and "unknown permission" in denied.stderr

    assert runner.invoke(tokens_app, ["revoke", token_id, *where]).exit_code == 0
    again = runner.invoke(tokens_app, ["revoke", token_id, *where])
    assert again.exit_code == 1 and "no active token" in again.stderr

    key = runner.invoke(
        tokens_app, ["global-key", "create", "--account", ACCOUNT, "--email", "ops@example.com", *where]
    )
    assert key.exit_code == 0, key.output
    engine = open_database(sqlite_url(tmp_path))
    service = CredentialService(engine)
    assert service.verify_token(secret) is None
    assert service.verify_global_key("ops@example.com", key.stdout.strip()) is not None
    engine.dispose()
