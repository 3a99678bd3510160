"""Queries for EdgeOne API secrets (SecretId + encrypted SecretKey).

Rules:
- Plain values in, frozen records out; the JSON columns (permissions, zones) are encoded and decoded
  here and nowhere else, exactly as ``edgecache.db.identity`` does for tokens.
- The SecretKey only ever passes through here as ciphertext (``secret_key_enc``); encryption and
  every domain rule (validity, revocation, scope) live in ``edgecache.control.secrets``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, and_, select, update

from edgecache.db.engine import read_transaction, write_transaction
from edgecache.db.schema import api_secrets


@dataclass(frozen=True, slots=True)
class SecretRecord:
    secret_id: str
    account_id: str
    name: str
    secret_key_enc: str
    permissions: tuple[str, ...]
    zones: tuple[str, ...] | None
    created_at: datetime
    revoked_at: datetime | None


def _record(row: Row[Any]) -> SecretRecord:
    return SecretRecord(
        secret_id=row.secret_id,
        account_id=row.account_id,
        name=row.name,
        secret_key_enc=row.secret_key_enc,
        permissions=tuple(json.loads(row.permissions)),
        zones=None if row.zones is None else tuple(json.loads(row.zones)),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class SecretStore:
    """The ``api_secrets`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, record: SecretRecord) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                api_secrets.insert().values(
                    secret_id=record.secret_id,
                    account_id=record.account_id,
                    name=record.name,
                    secret_key_enc=record.secret_key_enc,
                    permissions=json.dumps(sorted(record.permissions)),
                    zones=None if record.zones is None else json.dumps(sorted(record.zones)),
                    created_at=record.created_at,
                    revoked_at=record.revoked_at,
                )
            )

    def by_id(self, secret_id: str) -> SecretRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(api_secrets).where(api_secrets.c.secret_id == secret_id)).first()
        return None if row is None else _record(row)

    def list_secrets(self, account_id: str | None = None) -> list[SecretRecord]:
        """Every secret (revoked included), oldest first."""
        query = select(api_secrets).order_by(api_secrets.c.created_at, api_secrets.c.secret_id)
        if account_id is not None:
            query = query.where(api_secrets.c.account_id == account_id)
        with read_transaction(self.engine) as conn:
            return [_record(r) for r in conn.execute(query)]

    def revoke(self, secret_id: str, now: datetime) -> bool:
        """Mark the secret revoked; False when it does not exist or was already revoked."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                update(api_secrets)
                .where(and_(api_secrets.c.secret_id == secret_id, api_secrets.c.revoked_at.is_(None)))
                .values(revoked_at=now)
            )
            return result.rowcount == 1

    def reencrypt_all(self, reencrypt: Callable[[str], str]) -> int:
        """Replace every ``secret_key_enc`` by ``reencrypt(old)`` in one transaction; return the count.

        One transaction: a failure part-way (e.g. a row no key can decrypt) leaves every row as it
        was, so the old master key stays sufficient until the whole table has been rewritten.
        """
        with write_transaction(self.engine) as conn:
            rows = conn.execute(select(api_secrets.c.secret_id, api_secrets.c.secret_key_enc)).all()
            for row in rows:
                conn.execute(
                    update(api_secrets)
                    .where(api_secrets.c.secret_id == row.secret_id)
                    .values(secret_key_enc=reencrypt(row.secret_key_enc))
                )
            return len(rows)
