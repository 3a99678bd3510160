"""Console sessions: what a token's session allows, and every way it ends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgecache.control.credentials import CredentialService, Permission
from edgecache.control.sessions import SessionService
from edgecache.db.engine import open_database, sqlite_url

ACCOUNT = "a" * 32
ZONE = "1" * 32
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def credentials(tmp_path: Path) -> Iterator[CredentialService]:
    engine = open_database(sqlite_url(tmp_path))
    service = CredentialService(engine)
    service.ensure_account(ACCOUNT, "Acme", "pro")
    service.ensure_zone(ZONE, ACCOUNT, "one.example", "pro")
    yield service
    engine.dispose()


def test_a_session_carries_the_tokens_permissions_and_only_a_hash_of_its_id(
    credentials: CredentialService,
) -> None:
    info, token = credentials.create_token(ACCOUNT, "ops", [Permission.CACHE_PURGE], [ZONE])
    sessions = SessionService(credentials, HOUR)
    assert sessions.sign_in("x" * 40) is None
    opened = sessions.sign_in(token)
    assert opened is not None
    session_id, session = opened
    assert session.principal.id == info.id and session.principal.zones == frozenset({ZONE})
    assert session.principal.allows(Permission.CACHE_PURGE, ZONE, ACCOUNT)
    assert not session.principal.allows(Permission.ZONE_SETTINGS_READ, ZONE, ACCOUNT)
    assert sessions.find(session_id) is session
    assert session_id not in sessions._sessions and token not in repr(sessions._sessions)
    assert session.csrf_matches(session.csrf) and not session.csrf_matches(session.csrf[:-1] + "x")
    other_id, other = sessions.sign_in(token) or ("", None)
    assert other is not None and other.csrf != session.csrf and other_id != session_id


def test_sign_out_ends_the_session(credentials: CredentialService) -> None:
    _, token = credentials.create_token(ACCOUNT, "ops", [Permission.CACHE_PURGE])
    sessions = SessionService(credentials, HOUR)
    session_id, _ = sessions.sign_in(token) or ("", None)
    sessions.sign_out(session_id)
    assert sessions.find(session_id) is None
    sessions.sign_out(session_id)  # twice: nothing happens


def test_a_session_ends_at_its_deadline_and_never_outlives_its_token(credentials: CredentialService) -> None:
    clock = Clock()
    sessions = SessionService(credentials, HOUR, clock=clock)
    _, token = credentials.create_token(ACCOUNT, "ops", [Permission.CACHE_PURGE])
    session_id, _ = sessions.sign_in(token) or ("", None)
    clock.now += HOUR - 1
    assert sessions.find(session_id) is not None
    clock.now += 2
    assert sessions.find(session_id) is None
    soon = datetime.now(UTC) + timedelta(minutes=10)
    _, short = credentials.create_token(ACCOUNT, "short", [Permission.CACHE_PURGE], expires_at=soon)
    clock.now = datetime.now(UTC).timestamp()
    short_id, short_session = sessions.sign_in(short) or ("", None)
    assert short_session is not None and short_session.deadline == pytest.approx(soon.timestamp())
    clock.now = soon.timestamp() + 1
    assert sessions.find(short_id) is None


def test_revoking_the_token_ends_its_sessions(credentials: CredentialService) -> None:
    info, token = credentials.create_token(ACCOUNT, "ops", [Permission.CACHE_PURGE])
    sessions = SessionService(credentials, HOUR, recheck=0.0)
    session_id, _ = sessions.sign_in(token) or ("", None)
    assert sessions.find(session_id) is not None
    credentials.revoke_token(info.id)
    assert sessions.find(session_id) is None
    assert sessions.sign_in(token) is None
