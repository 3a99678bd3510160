"""Event subscriptions and the log of published events, in the control database.

Rules: functions take an open connection (writes run on the queue service's group-commit writer).
``claim_event`` is how publication stays once-only across nodes: the key's insert either succeeds
(this node publishes, in the same transaction as the message) or finds the key taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgecache.db.schema import queue_event_log, queue_subscriptions


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """One stored subscription."""

    id: str
    account_id: str
    name: str
    source: dict[str, Any]
    events: tuple[str, ...]
    queue_id: str
    enabled: bool
    created_at: datetime
    modified_at: datetime


def _row(r: Any) -> SubscriptionRow:
    return SubscriptionRow(
        id=r.id,
        account_id=r.account_id,
        name=r.name,
        source=json.loads(r.source),
        events=tuple(json.loads(r.events)),
        queue_id=r.queue_id,
        enabled=bool(r.enabled),
        created_at=r.created_at,
        modified_at=r.modified_at,
    )


def _values(row: SubscriptionRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "source": json.dumps(row.source, separators=(",", ":"), sort_keys=True),
        "events": json.dumps(list(row.events)),
        "queue_id": row.queue_id,
        "enabled": row.enabled,
        "modified_at": row.modified_at,
    }


def insert_subscription(conn: Connection, row: SubscriptionRow) -> None:
    """Store a new subscription."""
    conn.execute(
        insert(queue_subscriptions).values(
            id=row.id, account_id=row.account_id, created_at=row.created_at, **_values(row)
        )
    )


def replace_subscription(conn: Connection, row: SubscriptionRow) -> None:
    """Overwrite a subscription's changeable fields."""
    conn.execute(update(queue_subscriptions).where(queue_subscriptions.c.id == row.id).values(**_values(row)))


def get_subscription(conn: Connection, account_id: str, subscription_id: str) -> SubscriptionRow | None:
    """The account's subscription with this id."""
    r = conn.execute(
        select(queue_subscriptions).where(
            queue_subscriptions.c.id == subscription_id, queue_subscriptions.c.account_id == account_id
        )
    ).first()
    return None if r is None else _row(r)


def list_subscriptions(
    conn: Connection, account_id: str, queue_id: str | None, offset: int, limit: int
) -> tuple[int, list[SubscriptionRow]]:
    """The account's subscriptions (into ``queue_id`` only, when given): total and one page."""
    where = [queue_subscriptions.c.account_id == account_id]
    if queue_id is not None:
        where.append(queue_subscriptions.c.queue_id == queue_id)
    total = conn.execute(select(func.count()).select_from(queue_subscriptions).where(*where)).scalar_one()
    rows = conn.execute(
        select(queue_subscriptions)
        .where(*where)
        .order_by(queue_subscriptions.c.created_at, queue_subscriptions.c.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return int(total), [_row(r) for r in rows]


def enabled_subscriptions(conn: Connection) -> list[SubscriptionRow]:
    """Every enabled subscription (the publisher matches events against them)."""
    rows = conn.execute(select(queue_subscriptions).where(queue_subscriptions.c.enabled.is_(True))).all()
    return [_row(r) for r in rows]


def delete_subscription(conn: Connection, subscription_id: str) -> None:
    """Remove one subscription."""
    conn.execute(delete(queue_subscriptions).where(queue_subscriptions.c.id == subscription_id))


def claim_event(conn: Connection, key: str, now: datetime) -> bool:
    """Record that the event ``key`` is being published; False when it already was."""
    if conn.execute(select(queue_event_log.c.key).where(queue_event_log.c.key == key)).first() is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(queue_event_log).values(key=key, published_at=now))
    except IntegrityError:
        # Another node published it between our check and our insert.
        return False
    return True


def forget_events(conn: Connection, before: datetime) -> int:
    """Drop the log of events published before ``before`` (they can no longer recur)."""
    return int(conn.execute(delete(queue_event_log).where(queue_event_log.c.published_at < before)).rowcount)
