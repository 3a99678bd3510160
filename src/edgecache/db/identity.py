"""Queries for accounts, zones, API tokens and global API keys.

Rules:
- Plain values in, frozen records out; JSON columns are encoded and decoded here and nowhere else.
- No domain rules: what is valid, expired or allowed is decided in ``edgecache.control``.
- Upserts are written as read-then-write inside one write transaction, which is portable; on
  PostgreSQL two nodes can still race to insert the same row, so an ``IntegrityError`` is retried
  once (the second attempt takes the update path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, Row, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from edgecache.db.engine import read_transaction, write_transaction
from edgecache.db.schema import accounts, global_keys, tokens, zones

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    name: str
    plan: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    id: str
    account_id: str
    name: str
    plan: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    account_id: str
    name: str
    secret_hash: str
    permissions: tuple[str, ...]
    zones: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class GlobalKeyRecord:
    id: str
    account_id: str
    email: str
    key_hash: str
    created_at: datetime


class ConflictError(ValueError):
    """The write contradicts a row that exists (e.g. an email already bound to another account)."""


def _retry_once_on_conflict(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except IntegrityError:
        return fn()


def _token(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        secret_hash=row.secret_hash,
        permissions=tuple(json.loads(row.permissions)),
        zones=None if row.zones is None else tuple(json.loads(row.zones)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class IdentityStore:
    """Accounts, zones, tokens and global keys in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Accounts and zones -------------------------------------------------------------------------

    def upsert_account(self, account_id: str, name: str, plan: str, now: datetime) -> None:
        def run() -> None:
            with write_transaction(self.engine) as conn:
                row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
                if row is None:
                    conn.execute(
                        accounts.insert().values(id=account_id, name=name, plan=plan, created_at=now)
                    )
                elif (row.name, row.plan) != (name, plan):
                    conn.execute(
                        update(accounts).where(accounts.c.id == account_id).values(name=name, plan=plan)
                    )

        _retry_once_on_conflict(run)

    def upsert_zone(self, zone_id: str, account_id: str, name: str, plan: str, now: datetime) -> None:
        def run() -> None:
            with write_transaction(self.engine) as conn:
                row = conn.execute(select(zones).where(zones.c.id == zone_id)).first()
                if row is None:
                    conn.execute(
                        zones.insert().values(
                            id=zone_id, account_id=account_id, name=name, plan=plan, created_at=now
                        )
                    )
                elif (row.account_id, row.name, row.plan) != (account_id, name, plan):
                    conn.execute(
                        update(zones)
                        .where(zones.c.id == zone_id)
                        .values(account_id=account_id, name=name, plan=plan)
                    )

        _retry_once_on_conflict(run)

    def get_account(self, account_id: str) -> AccountRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
        return None if row is None else AccountRecord(row.id, row.name, row.plan, row.created_at)

    def get_zone(self, zone_id: str) -> ZoneRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(zones).where(zones.c.id == zone_id)).first()
        if row is None:
            return None
        return ZoneRecord(row.id, row.account_id, row.name, row.plan, row.created_at)

    def zone_ids_of_account(self, account_id: str, zone_ids: Iterable[str]) -> set[str]:
        """Which of ``zone_ids`` exist and belong to ``account_id``."""
        wanted = list(set(zone_ids))
        if not wanted:
            return set()
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(zones.c.id).where(and_(zones.c.account_id == account_id, zones.c.id.in_(wanted)))
            )
            return {r.id for r in rows}

    # Tokens ---------------------------------------------------------------------------------------

    def insert_token(self, record: TokenRecord) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                tokens.insert().values(
                    id=record.id,
                    account_id=record.account_id,
                    name=record.name,
                    secret_hash=record.secret_hash,
                    permissions=json.dumps(sorted(record.permissions)),
                    zones=None if record.zones is None else json.dumps(sorted(record.zones)),
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                    revoked_at=record.revoked_at,
                    last_used_at=record.last_used_at,
                )
            )

    def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(tokens).where(tokens.c.secret_hash == secret_hash)).first()
        return None if row is None else _token(row)

    def token_by_id(self, token_id: str) -> TokenRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
        return None if row is None else _token(row)

    def list_tokens(self, account_id: str | None = None) -> list[TokenRecord]:
        query = select(tokens).order_by(tokens.c.created_at, tokens.c.id)
        if account_id is not None:
            query = query.where(tokens.c.account_id == account_id)
        with read_transaction(self.engine) as conn:
            return [_token(r) for r in conn.execute(query)]

    def revoke_token(self, token_id: str, now: datetime) -> bool:
        """Mark the token revoked; False when it does not exist or was already revoked."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(tokens)
                .where(and_(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)))
                .values(revoked_at=now)
            )
            return result.rowcount == 1

    def touch_token(self, token_id: str, now: datetime, unless_since: datetime) -> bool:
        """Set ``last_used_at = now`` unless it is already at or after ``unless_since``.

        The condition is in the UPDATE itself, so concurrent verifiers in several processes write
        the row once per interval, not once each.
        """
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(tokens)
                .where(
                    and_(
                        tokens.c.id == token_id,
                        or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < unless_since),
                    )
                )
                .values(last_used_at=now)
            )
            return result.rowcount == 1

    # Global keys ----------------------------------------------------------------------------------

    def put_global_key(self, record: GlobalKeyRecord) -> None:
        """Store the key for ``record.email``, replacing (rolling) an earlier key of the same account."""

        def run() -> None:
            with write_transaction(self.engine) as conn:
                row = conn.execute(select(global_keys).where(global_keys.c.email == record.email)).first()
                if row is None:
                    conn.execute(
                        global_keys.insert().values(
                            id=record.id,
                            account_id=record.account_id,
                            email=record.email,
                            key_hash=record.key_hash,
                            created_at=record.created_at,
                        )
                    )
                elif row.account_id != record.account_id:
                    raise ConflictError(f"{record.email} already has a global key for another account")
                else:
                    conn.execute(
                        update(global_keys)
                        .where(global_keys.c.email == record.email)
                        .values(key_hash=record.key_hash, created_at=record.created_at)
                    )

        _retry_once_on_conflict(run)

    def global_key_by_email(self, email: str) -> GlobalKeyRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(global_keys).where(global_keys.c.email == email)).first()
        if row is None:
            return None
        return GlobalKeyRecord(row.id, row.account_id, row.email, row.key_hash, row.created_at)
