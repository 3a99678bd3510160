"""EdgeOne API secrets: the master key file, encryption at rest, the secret service and its CLI, on a
real SQLite file."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from edgecache.cli_credentials import credentials_app
from edgecache.control.credentials import CredentialError, CredentialService, Permission
from edgecache.control.secrets import (
    MASTER_KEY_ENV,
    MasterKey,
    MasterKeyError,
    SecretPrincipal,
    SecretService,
    is_well_formed_secret_id,
)
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.schema import api_secrets

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


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(sqlite_url(tmp_path))
    credentials = CredentialService(engine)
    credentials.ensure_account(ACCOUNT, "Acme")
    credentials.ensure_account(OTHER_ACCOUNT, "Other")
    credentials.ensure_zone(ZONE_1, ACCOUNT, "one.example")
    credentials.ensure_zone(ZONE_2, ACCOUNT, "two.example")
    credentials.ensure_zone(OTHER_ZONE, OTHER_ACCOUNT, "other.example")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(engine: Engine, tmp_path: Path, clock: FakeClock) -> SecretService:
    return SecretService(engine, MasterKey(tmp_path, environ={}), clock=clock)


# The master key -----------------------------------------------------------------------------------


def test_key_file_is_created_0600_on_first_use_and_reused(tmp_path: Path) -> None:
    key = MasterKey(tmp_path / "data", environ={})
    assert not key.path.exists()  # nothing happens before a key is needed
    token = key.encrypt("hello")
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert [p.name for p in key.path.parent.iterdir()] == ["master.key"]  # no temporary file left
    assert MasterKey(tmp_path / "data", environ={}).decrypt(token) == "hello"


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    keys = [MasterKey(tmp_path, environ={}) for _ in range(8)]
    tokens: list[str] = [""] * len(keys)
    barrier = threading.Barrier(len(keys))

    def run(i: int) -> None:
        barrier.wait()
        tokens[i] = keys[i].encrypt(f"value {i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = MasterKey(tmp_path, environ={})
    assert [reader.decrypt(t) for t in tokens] == [f"value {i}" for i in range(len(keys))]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    k = Fernet.generate_key().decode()
    key = MasterKey(tmp_path, environ={MASTER_KEY_ENV: k})
    token = key.encrypt("x")
    assert not key.path.exists()
    assert Fernet(k).decrypt(token.encode()) == b"x"


def test_several_keys_first_encrypts_all_decrypt(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = MasterKey(tmp_path, environ={MASTER_KEY_ENV: old}).encrypt("secret")
    both = MasterKey(tmp_path, environ={MASTER_KEY_ENV: f"{new}, {old}"})
    assert both.decrypt(token) == "secret"
    assert Fernet(new).decrypt(both.encrypt("y").encode()) == b"y"


@pytest.mark.parametrize("value", ["not-a-key", Fernet.generate_key().decode()[:-2], " , "])
def test_malformed_environment_key_is_refused(tmp_path: Path, value: str) -> None:
    key = MasterKey(tmp_path, environ={MASTER_KEY_ENV: value})
    with pytest.raises(MasterKeyError) as info:
        key.encrypt("x")
    assert not key.path.exists()  # a set variable is never silently replaced by a new key file
    if value.strip(" ,"):
        assert value not in str(info.value)  # a near-miss may be a real key: never echo it


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text("\n")
    os.chmod(tmp_path / "master.key", 0o600)
    with pytest.raises(MasterKeyError, match="holds no key"):
        MasterKey(tmp_path, environ={}).encrypt("x")


def test_wrong_key_is_loud_not_unknown(tmp_path: Path) -> None:
    token = MasterKey(tmp_path / "a", environ={}).encrypt("x")
    with pytest.raises(MasterKeyError, match="same key"):
        MasterKey(tmp_path / "b", environ={}).decrypt(token)


# The service --------------------------------------------------------------------------------------


def test_create_and_lookup(service: SecretService, clock: FakeClock) -> None:
    secret_id, secret_key = service.create(
        ACCOUNT, " deploy ", ["cache_purge", "Zone Settings Read"], [ZONE_1]
    )
    assert is_well_formed_secret_id(secret_id) and len(secret_id) == 36
    assert len(secret_key) == 32 and secret_key.isalnum()
    found = service.lookup(secret_id)
    assert found is not None
    key, principal = found
    assert key == secret_key
    assert principal == SecretPrincipal(
        id=secret_id,
        account_id=ACCOUNT,
        permissions=frozenset({Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ}),
        zones=frozenset({ZONE_1}),
        label="deploy",
    )
    assert principal.ref == f"secret:{secret_id}"
    info = service.get(secret_id)
    assert info is not None
    assert (info.name, info.created_at, info.status) == ("deploy", clock.now, "active")


def test_principal_scope() -> None:
    p = SecretPrincipal(
        "AKID" + "x" * 32, ACCOUNT, frozenset({Permission.CACHE_PURGE}), frozenset({ZONE_1}), "n"
    )
    assert p.allows(Permission.CACHE_PURGE, ZONE_1, ACCOUNT)
    assert not p.allows(Permission.CACHE_PURGE, ZONE_2, ACCOUNT)
    assert not p.allows(Permission.ZONE_SETTINGS_READ, ZONE_1, ACCOUNT)
    assert not p.allows(Permission.CACHE_PURGE, ZONE_1, OTHER_ACCOUNT)
    q = SecretPrincipal(
        "AKID" + "y" * 32, ACCOUNT, frozenset({Permission.QUEUES_READ}), frozenset({ZONE_1}), "q"
    )
    assert q.allows_account(Permission.QUEUES_READ, ACCOUNT)
    assert not q.allows_account(Permission.QUEUES_READ, OTHER_ACCOUNT)
    assert not p.allows_account(Permission.CACHE_PURGE, ACCOUNT)  # a zone-level permission


def test_the_database_never_holds_the_plaintext_key(
    service: SecretService, engine: Engine, tmp_path: Path
) -> None:
    created = [service.create(ACCOUNT, f"s{i}", ["cache_purge"]) for i in range(5)]
    with engine.connect() as conn:
        rows = {r.secret_id: r for r in conn.execute(select(api_secrets))}
    for secret_id, secret_key in created:
        assert secret_key not in " ".join(str(v) for v in rows[secret_id])
    engine.dispose()  # checkpoint and close, so the files hold everything written
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("edgecache.db"))
    for secret_id, secret_key in created:
        assert secret_id.encode() in stored
        assert secret_key.encode() not in stored


@pytest.mark.parametrize(
    ("account", "name", "permissions", "zones", "message"),
    [
        ("c" * 32, "n", ["cache_purge"], None, "unknown account"),
        (ACCOUNT, "  ", ["cache_purge"], None, "1 to 120"),
        (ACCOUNT, "x" * 121, ["cache_purge"], None, "1 to 120"),
        (ACCOUNT, "n", ["purge_everything"], None, "unknown permission"),
        (ACCOUNT, "n", [], None, "at least one permission"),
        (ACCOUNT, "n", ["cache_purge"], [], "empty zone list"),
        (ACCOUNT, "n", ["cache_purge"], ["zone-2o3h21ed8bpu"], "32 lower-case hex"),
        (ACCOUNT, "n", ["cache_purge"], [ZONE_1, OTHER_ZONE], "not zones of account"),
    ],
)
def test_create_validation(
    service: SecretService,
    account: str,
    name: str,
    permissions: list[str],
    zones: list[str] | None,
    message: str,
) -> None:
    with pytest.raises(CredentialError, match=message):
        service.create(account, name, permissions, zones)
    assert service.list() == []


def test_list_revoke_and_lookup_of_unknown(service: SecretService, clock: FakeClock) -> None:
    first, _ = service.create(ACCOUNT, "first", ["cache_purge"])
    clock.now += timedelta(seconds=1)
    second, _ = service.create(OTHER_ACCOUNT, "second", ["cache_purge"])
    assert [s.secret_id for s in service.list()] == [first, second]
    assert [s.secret_id for s in service.list(OTHER_ACCOUNT)] == [second]
    clock.now += timedelta(seconds=1)
    assert service.revoke(first)
    assert not service.revoke(first)
    assert not service.revoke("AKID" + "z" * 32)
    assert service.lookup(first) is None
    assert service.lookup(second) is not None
    assert service.lookup("AKID" + "z" * 32) is None
    assert service.lookup("AKIDtest") is None
    info = service.get(first)
    assert info is not None and (info.status, info.revoked_at) == ("revoked", clock.now)


def test_rewrap_moves_every_secret_to_the_new_key(engine: Engine, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = SecretService(engine, MasterKey(tmp_path, environ={MASTER_KEY_ENV: old}))
    created = [before.create(ACCOUNT, f"s{i}", ["cache_purge"]) for i in range(3)]
    during = SecretService(engine, MasterKey(tmp_path, environ={MASTER_KEY_ENV: f"{new}\n{old}"}))
    assert during.rewrap() == 3
    after = SecretService(engine, MasterKey(tmp_path, environ={MASTER_KEY_ENV: new}))
    for secret_id, secret_key in created:
        found = after.lookup(secret_id)
        assert found is not None and found[0] == secret_key
    with pytest.raises(MasterKeyError):
        before.lookup(created[0][0])
    stranger = SecretService(engine, MasterKey(tmp_path, environ={MASTER_KEY_ENV: old}))
    with pytest.raises(MasterKeyError):
        stranger.rewrap()  # nothing is half-done: every row still opens with the new key
    assert all(after.lookup(s) is not None for s, _ in created)


# The CLI ------------------------------------------------------------------------------------------


def test_cli_create_list_revoke(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    result = runner.invoke(
        credentials_app,
        ["create", "--account", ACCOUNT, "--name", "ci", "-p", "cache_purge", "-z", ZONE_1, *base],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("TENCENTCLOUD_SECRET_ID=AKID")
    secret_id = lines[0].split("=", 1)[1]
    secret_key = lines[1].removeprefix("TENCENTCLOUD_SECRET_KEY=")
    assert "cannot be shown again" in result.stderr
    service = SecretService(engine, MasterKey(tmp_path, environ={}))
    found = service.lookup(secret_id)
    assert found is not None and found[0] == secret_key

    result = runner.invoke(credentials_app, ["list", *base])
    assert result.exit_code == 0
    assert secret_id in result.stdout and "active" in result.stdout and ZONE_1 in result.stdout
    assert secret_key not in result.stdout

    result = runner.invoke(credentials_app, ["revoke", secret_id, *base])
    assert result.exit_code == 0 and service.lookup(secret_id) is None
    result = runner.invoke(credentials_app, ["revoke", secret_id, *base])
    assert result.exit_code == 1 and "no active secret" in result.stderr

    result = runner.invoke(
        credentials_app, ["create", "--account", "c" * 32, "--name", "x", "-p", "cache_purge", *base]
    )
    assert result.exit_code == 1 and "unknown account" in result.stderr and result.stdout == ""

    result = runner.invoke(credentials_app, ["rewrap", *base])
    assert result.exit_code == 0 and "re-encrypted 1" in result.stderr
