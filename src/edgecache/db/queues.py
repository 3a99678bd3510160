"""Queues, their consumers and their messages in the control database.

Rules:
- Functions take an open connection, so the caller decides the transaction: writes run on the
  group-commit writer (``edgecache.db.writer``), reads in ``read_transaction``.
- A message is deliverable when ``visible_ms <= now`` and its ``seq`` is above the queue's
  ``purge_through`` (a purge takes effect at once; its rows are deleted afterwards in batches).
- Claiming messages (``claim_and_lease``) is one ``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE
  SKIP LOCKED) RETURNING``: PostgreSQL's concurrent pullers on several nodes skip each other's rows
  instead of waiting or double-delivering; SQLite compiles the clause away, where the one write
  lock serialises pullers. An ack is one ``DELETE ... WHERE seq IN (...) RETURNING``.
- Bulk deletions (purge, retention, deleted queues) remove at most ``limit`` rows per call so no
  transaction holds the write lock for long, and skip rows another transaction holds (``SKIP
  LOCKED``): they never wait for an ack or a pull, so they cannot deadlock with one on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from edgecache.db.schema import queue_consumers, queue_messages, queue_tombstones, queues

MAX_SEQ = 2**63 - 1
"""The largest message number both databases store (a signed 64-bit integer)."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One stored queue."""

    id: str
    account_id: str
    name: str
    created_at: datetime
    modified_at: datetime
    delivery_delay: int
    delivery_paused: bool
    retention_seconds: int
    purge_started_at: datetime | None
    purge_through: int
    purge_completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    """One stored consumer."""

    id: str
    queue_id: str
    type: str
    created_at: datetime
    dead_letter_queue: str
    batch_size: int
    max_retries: int
    retry_delay: int
    visibility_timeout_ms: int
    endpoint: str | None
    max_concurrency: int | None
    secret_enc: str | None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store."""

    body: bytes
    content_type: str
    visible_ms: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read back (after a lease, ``attempts`` counts that delivery)."""

    seq: int
    body: bytes
    content_type: str
    attempts: int
    created_ms: int
    lease: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is stored for a queue: messages, bytes, and the oldest push time (0 when empty)."""

    count: int
    bytes: int
    oldest_ms: int


def _queue(row: Any) -> QueueRow:
    return QueueRow(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        created_at=row.created_at,
        modified_at=row.modified_at,
        delivery_delay=row.delivery_delay,
        delivery_paused=bool(row.delivery_paused),
        retention_seconds=row.retention_seconds,
        purge_started_at=row.purge_started_at,
        purge_through=int(row.purge_through),
        purge_completed_at=row.purge_completed_at,
    )


def _consumer(row: Any) -> ConsumerRow:
    # The dataclass's fields are the table's columns, one for one.
    return ConsumerRow(**row._mapping)


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        int(row.seq), bytes(row.body), row.content_type, int(row.attempts), int(row.created_ms), row.lease
    )


# -- queues ---------------------------------------------------------------------------------------


def insert_queue(conn: Connection, row: QueueRow) -> None:
    """Store a new queue (the unique (account, name) constraint rejects a duplicate)."""
    conn.execute(
        insert(queues).values(
            id=row.id,
            account_id=row.account_id,
            name=row.name,
            created_at=row.created_at,
            modified_at=row.modified_at,
            delivery_delay=row.delivery_delay,
            delivery_paused=row.delivery_paused,
            retention_seconds=row.retention_seconds,
            purge_started_at=None,
            purge_through=0,
            purge_completed_at=None,
        )
    )


def get_queue(conn: Connection, account_id: str, queue_id: str) -> QueueRow | None:
    """The account's queue with this id."""
    row = conn.execute(
        select(queues).where(queues.c.id == queue_id, queues.c.account_id == account_id)
    ).first()
    return None if row is None else _queue(row)


def queue_named(conn: Connection, account_id: str, name: str) -> QueueRow | None:
    """The account's queue with this name."""
    row = conn.execute(select(queues).where(queues.c.account_id == account_id, queues.c.name == name)).first()
    return None if row is None else _queue(row)


def list_queues(
    conn: Connection, account_id: str, names: Sequence[str], offset: int, limit: int
) -> tuple[int, list[QueueRow]]:
    """The account's queues by name (only ``names`` when given): the total and one page."""
    where = [queues.c.account_id == account_id]
    if names:
        where.append(queues.c.name.in_(list(names)))
    total = conn.execute(select(func.count()).select_from(queues).where(*where)).scalar_one()
    rows = conn.execute(
        select(queues).where(*where).order_by(queues.c.name).offset(offset).limit(limit)
    ).all()
    return int(total), [_queue(r) for r in rows]


def update_queue(conn: Connection, queue_id: str, **values: Any) -> None:
    """Change stored columns of one queue."""
    conn.execute(update(queues).where(queues.c.id == queue_id).values(**values))


def delete_queue(conn: Connection, queue_id: str, now: datetime) -> None:
    """Remove a queue and its consumer; its messages are left to the sweeper (``sweep_deleted``)."""
    conn.execute(delete(queue_consumers).where(queue_consumers.c.queue_id == queue_id))
    conn.execute(delete(queues).where(queues.c.id == queue_id))
    conn.execute(insert(queue_tombstones).values(queue_id=queue_id, deleted_at=now))


def all_queues(conn: Connection) -> list[QueueRow]:
    """Every queue of every account (for the sweeper and metrics)."""
    return [_queue(r) for r in conn.execute(select(queues)).all()]


# -- consumers ------------------------------------------------------------------------------------


def insert_consumer(conn: Connection, row: ConsumerRow) -> None:
    """Store a consumer (the unique queue_id rejects a second one for a queue)."""
    conn.execute(insert(queue_consumers).values(**asdict(row)))


CONSUMER_FIXED = ("id", "queue_id", "created_at")
"""What a consumer keeps when its settings are replaced."""


def replace_consumer(conn: Connection, row: ConsumerRow) -> None:
    """Overwrite a consumer's settings (id, queue and creation time stay)."""
    settings = {k: v for k, v in asdict(row).items() if k not in CONSUMER_FIXED}
    conn.execute(update(queue_consumers).where(queue_consumers.c.id == row.id).values(**settings))


def consumers_of(conn: Connection, queue_ids: Sequence[str]) -> list[ConsumerRow]:
    """The consumers of these queues."""
    if not queue_ids:
        return []
    rows = conn.execute(select(queue_consumers).where(queue_consumers.c.queue_id.in_(list(queue_ids)))).all()
    return [_consumer(r) for r in rows]


def delete_consumer(conn: Connection, consumer_id: str) -> None:
    """Remove one consumer."""
    conn.execute(delete(queue_consumers).where(queue_consumers.c.id == consumer_id))


# -- messages -------------------------------------------------------------------------------------


def insert_messages(conn: Connection, queue_id: str, messages: Sequence[NewMessage], now_ms: int) -> None:
    """Store messages of one queue (one executemany)."""
    insert_rows(conn, [(queue_id, m) for m in messages], now_ms)


def insert_rows(conn: Connection, rows: Sequence[tuple[str, NewMessage]], now_ms: int) -> None:
    """Store (queue id, message) pairs, of any queues, in one executemany."""
    if not rows:
        return
    conn.execute(
        insert(queue_messages),
        [
            {
                "queue_id": queue_id,
                "body": m.body,
                "size": len(m.body),
                "content_type": m.content_type,
                "attempts": 0,
                "created_ms": now_ms,
                "visible_ms": m.visible_ms,
                "lease": None,
            }
            for queue_id, m in rows
        ],
    )


def queue_delays(conn: Connection, queue_ids: Collection[str]) -> dict[str, tuple[str, int]]:
    """For the queues among these ids that exist: id → (account id, default delivery delay)."""
    rows = conn.execute(
        select(queues.c.id, queues.c.account_id, queues.c.delivery_delay).where(
            queues.c.id.in_(list(queue_ids))
        )
    ).all()
    return {r.id: (r.account_id, int(r.delivery_delay)) for r in rows}


def _ready(queue_id: str, purge_through: int, now_ms: int) -> Any:
    return and_(
        queue_messages.c.queue_id == queue_id,
        queue_messages.c.visible_ms <= now_ms,
        queue_messages.c.seq > purge_through,
    )


def claim_and_lease(
    conn: Connection, queue_id: str, now_ms: int, limit: int, until_ms: int, nonce: str
) -> list[StoredMessage]:
    """Lease up to ``limit`` deliverable messages of a queue, oldest first, in one statement: one
    more attempt each, invisible until ``until_ms``. None while the queue is paused or gone (its
    row is read in the same statement, so a pause or a purge applies at once).

    The messages are chosen with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL: concurrent pullers skip
    each other's rows; SQLite compiles it away and its one write lock serialises pullers)."""
    bound = (
        select(queues.c.purge_through)
        .where(queues.c.id == queue_id, queues.c.delivery_paused.is_(False))
        .scalar_subquery()
    )
    batch = (
        select(queue_messages.c.seq)
        .where(
            queue_messages.c.queue_id == queue_id,
            queue_messages.c.visible_ms <= now_ms,
            queue_messages.c.seq > bound,
        )
        .order_by(queue_messages.c.visible_ms, queue_messages.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(
        update(queue_messages)
        .where(queue_messages.c.seq.in_(batch))
        .values(attempts=queue_messages.c.attempts + 1, visible_ms=until_ms, lease=nonce)
        .returning(
            queue_messages.c.seq,
            queue_messages.c.body,
            queue_messages.c.content_type,
            queue_messages.c.attempts,
            queue_messages.c.created_ms,
            queue_messages.c.lease,
        )
    ).all()
    return sorted((_message(r) for r in rows), key=lambda m: m.seq)


def ack_delivered(conn: Connection, queue_id: str, seqs: Sequence[int]) -> set[int]:
    """Delete these messages of one queue that have been delivered, in one statement; returns the
    seqs deleted."""
    if not seqs:
        return set()
    # The queue is compared through an expression no index serves: with "queue_id = ?" SQLite's
    # planner walked the queue's index, every message of the queue (66 ms per ack of 100 at
    # 200,000 messages), instead of looking the numbers up by primary key.
    rows = conn.execute(
        delete(queue_messages)
        .where(
            queue_messages.c.seq.in_(list(seqs)),
            queue_messages.c.queue_id + "" == queue_id,
            queue_messages.c.lease.is_not(None),
        )
        .returning(queue_messages.c.seq)
    ).all()
    return {int(r.seq) for r in rows}


def move_messages(conn: Connection, seqs: Sequence[int], to_queue_id: str, now_ms: int) -> None:
    """Hand messages to another queue (the dead-letter queue) as new, deliverable at once."""
    if seqs:
        conn.execute(
            update(queue_messages)
            .where(queue_messages.c.seq.in_(list(seqs)))
            .values(queue_id=to_queue_id, attempts=0, visible_ms=now_ms, lease=None)
        )


def delete_messages(conn: Connection, queue_id: str, seqs: Sequence[int]) -> set[int]:
    """Delete these messages of one queue; returns the seqs that existed."""
    owned = list(leased(conn, queue_id, seqs))
    if owned:
        conn.execute(delete(queue_messages).where(queue_messages.c.seq.in_(owned)))
    return set(owned)


def leased(conn: Connection, queue_id: str, seqs: Sequence[int]) -> dict[int, tuple[int, str | None]]:
    """For these messages of one queue: seq → (attempts, current lease nonce), locked for update."""
    if not seqs:
        return {}
    # Looked up by primary key alone, the queue checked on the rows found: with "queue_id = ?" in
    # the WHERE clause SQLite's planner chose the queue's index and scanned every message of the
    # queue (an ack over HTTP took 32 ms at 235,000 messages; 3 ms this way).
    rows = conn.execute(
        select(
            queue_messages.c.seq, queue_messages.c.queue_id, queue_messages.c.attempts, queue_messages.c.lease
        )
        .where(queue_messages.c.seq.in_(list(seqs)))
        .with_for_update()
    ).all()
    return {int(r.seq): (int(r.attempts), r.lease) for r in rows if r.queue_id == queue_id}


def release(conn: Connection, seqs_visible: Sequence[tuple[int, int]]) -> None:
    """Make leased messages deliverable again at the given times: (seq, visible_ms) pairs."""
    for seq, visible in seqs_visible:
        conn.execute(update(queue_messages).where(queue_messages.c.seq == seq).values(visible_ms=visible))


def peek(conn: Connection, queue_id: str, purge_through: int, now_ms: int, limit: int) -> list[StoredMessage]:
    """Up to ``limit`` deliverable messages, oldest first, without leasing them."""
    rows = conn.execute(
        select(
            queue_messages.c.seq,
            queue_messages.c.body,
            queue_messages.c.content_type,
            queue_messages.c.attempts,
            queue_messages.c.created_ms,
            queue_messages.c.lease,
        )
        .where(_ready(queue_id, purge_through, now_ms))
        .order_by(queue_messages.c.visible_ms, queue_messages.c.seq)
        .limit(limit)
    ).all()
    return [_message(r) for r in rows]


def backlog(conn: Connection, queue_id: str, purge_through: int) -> Backlog:
    """Messages stored for a queue (delayed and leased ones included), not counting purged ones."""
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(queue_messages.c.size), 0),
            func.coalesce(func.min(queue_messages.c.created_ms), 0),
        ).where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq > purge_through)
    ).one()
    return Backlog(int(row[0]), int(row[1]), int(row[2]))


def last_seq(conn: Connection) -> int:
    """The highest message number handed out so far (0 when none)."""
    return int(conn.execute(select(func.coalesce(func.max(queue_messages.c.seq), 0))).scalar_one())


def delete_upto(conn: Connection, queue_id: str, through: int, limit: int) -> int:
    """Delete up to ``limit`` messages of a queue numbered ``<= through``; returns how many."""
    batch = (
        select(queue_messages.c.seq)
        .where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq <= through)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return int(conn.execute(delete(queue_messages).where(queue_messages.c.seq.in_(batch))).rowcount)


def delete_expired(conn: Connection, queue_id: str, cutoff_ms: int, limit: int) -> int:
    """Delete up to ``limit`` messages of a queue pushed before ``cutoff_ms``; returns how many."""
    batch = (
        select(queue_messages.c.seq)
        .where(queue_messages.c.queue_id == queue_id, queue_messages.c.created_ms < cutoff_ms)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return int(conn.execute(delete(queue_messages).where(queue_messages.c.seq.in_(batch))).rowcount)


def sweep_deleted(conn: Connection, limit: int) -> int:
    """Delete up to ``limit`` messages of deleted queues, forgetting a deleted queue once it has
    none left; returns how many messages went."""
    done = 0
    for queue_id in conn.execute(select(queue_tombstones.c.queue_id)).scalars().all():
        done += delete_upto(conn, queue_id, MAX_SEQ, limit - done)
        if done >= limit:
            break
        # Rows another transaction held were skipped: the tombstone stays until they are gone. On
        # SQLite none is ever skipped (the writer holds the database's lock; SKIP LOCKED is not
        # rendered), so a batch short of its limit took every message: no count to make.
        if conn.dialect.name == "sqlite" or count_upto(conn, queue_id, MAX_SEQ) == 0:
            conn.execute(delete(queue_tombstones).where(queue_tombstones.c.queue_id == queue_id))
    return done


def count_upto(conn: Connection, queue_id: str, through: int) -> int:
    """Messages of a queue numbered ``<= through`` still stored (a purge's remaining work)."""
    return int(
        conn.execute(
            select(func.count()).where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq <= through)
        ).scalar_one()
    )
