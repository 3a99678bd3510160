"""Tables of the control-plane database (SQLAlchemy Core ``MetaData``).

Rules:
- Portable types only: strings, text, integers and ``UTCDateTime``. JSON is stored as ``Text``
  (SQLite has no JSON column type; the values are small and never queried inside).
- Identifiers are 32 lower-case hex characters (Cloudflare's identifier shape), stored as
  ``String(32)``.
- Tokens and global keys are never stored: only their SHA-256 hex digests (see
  ``edgecache.control.credentials`` for why a fast hash is right for them). EdgeOne SecretKeys are
  the one exception, stored encrypted, because TC3 is an HMAC the server must recompute.
- Constraints carry names (``NAMING``) so a later migration can refer to them on both engines.
- This module describes the newest schema; databases get there through the Alembic revisions in
  ``edgecache.db.migrations`` (how to add one: that package's docstring). A change here without
  its revision fails ``tests/test_migrations.py``'s drift check.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

PLANS = ("free", "pro", "business", "enterprise")
PURGE_MODES = ("delete", "invalidate")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` on both engines.

    PostgreSQL stores ``timestamptz``. SQLite stores ISO text without an offset, so values are
    converted to UTC before binding and tagged UTC when read back; as the text format is fixed
    width, ``<``/``>`` in SQL compare correctly on SQLite too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it keeps every stored instant unambiguous.
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_LAST_BOUND: list[tuple[datetime | None, str | None]] = [(None, None)]
"""The value :func:`sqlite_utc_text` bound last, with its text: a purge's ledger row and its task
rows (``created_at``, ``updated_at``) bind one instant."""


def sqlite_utc_text(value: datetime | None) -> str | None:
    """The text a :class:`UTCDateTime` value is bound to on SQLite, as SQLAlchemy's processors make
    it (``process_bind_param``, then SQLite's ``DATETIME`` storage format), from C calls rather than
    a ``replace`` with keywords and a ``%`` format of seven fields: the prepared statements of the
    purge write bind three or four a purge (decision 0025's addendum)."""
    if value is None:
        return None
    # One tuple read and one written: a writer thread racing another at worst makes its own text.
    seen, text = _LAST_BOUND[0]
    if seen is value:
        return text
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    # An aware value's ISO text ends in its offset ("+00:00" here): the first 26 characters are the
    # naive text with its microseconds, SQLAlchemy's format.
    text = utc.isoformat(" ", "microseconds")[:26]
    _LAST_BOUND[0] = (value, text)
    return text


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("plan", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("plan", PLANS), name="plan"),
)

zones = Table(
    "zones",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(253), nullable=False),
    Column("plan", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("plan", PLANS), name="plan"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(120), nullable=False),
    # SHA-256 hex of the 40-character token; unique so verification is one index lookup.
    Column("secret_hash", String(64), nullable=False, unique=True),
    # JSON array of permission names, e.g. ["cache_purge"].
    Column("permissions", Text, nullable=False),
    # JSON array of zone ids; NULL means every zone of the account.
    Column("zones", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    # Written at most once a minute per token (see CredentialService.verify_token).
    Column("last_used_at", UTCDateTime(), nullable=True),
)

global_keys = Table(
    "global_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    # Lower-cased; one key per email, as Cloudflare has one Global API Key per user.
    Column("email", String(254), nullable=False, unique=True),
    # SHA-256 hex of the 37-character lower-hex key.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

purge_ledger = Table(
    "purge_ledger",
    metadata,
    # The ledger position, never handed out twice. PostgreSQL: a BIGINT identity. SQLite: the rowid
    # (INTEGER PRIMARY KEY), which alone would hand out max(rowid)+1 again once the newest rows are
    # deleted: a trigger records the highest number deleted in ``high_water`` and the insert starts
    # above it (``edgecache.db.ids``). Not AUTOINCREMENT: its ``sqlite_sequence`` row was one more
    # page written by every purge (decision 0034).
    Column(
        "seq",
        BigInteger().with_variant(Integer(), "sqlite"),
        Identity(start=1),
        primary_key=True,
    ),
    Column("zone_id", String(32), ForeignKey("zones.id"), nullable=False),
    Column("mode", String(16), nullable=False),
    # JSON object of the selectors, e.g. {"tags": ["a"]} or {"everything": true}.
    Column("selectors", Text, nullable=False),
    # Who asked, e.g. "token:<id>" or "global_key:<id>".
    Column("principal", String(200), nullable=False),
    # Which API dialect the purge came through: "cloudflare", "edgeone", "cli", ...
    Column("dialect", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # Not indexed: a job is found through its tasks (``ix_tasks_job``), which carry the seq; an index
    # here was one more page written by every purge (decision 0022).
    Column("job_id", String(32), nullable=False),
    CheckConstraint(_in("mode", PURGE_MODES), name="mode"),
)

high_water = Table(
    "high_water",
    metadata,
    # The highest id of table ``name`` deleted while above every id left in it (SQLite only: written by
    # the ``tr_<table>_high_water`` triggers of revision 0006, read by the inserts of
    # ``edgecache.db.ids``; PostgreSQL's identities never go back). No row: nothing such deleted.
    Column("name", String(63), primary_key=True),
    Column("last", BigInteger, nullable=False),
)

api_secrets = Table(
    "api_secrets",
    metadata,
    # EdgeOne's SecretId: "AKID" + 32 alphanumerics (36 characters), Tencent Cloud's own shape.
    Column("secret_id", String(36), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(120), nullable=False),
    # The SecretKey as a Fernet token under the node master key. Unlike tokens it cannot be a hash:
    # TC3-HMAC-SHA256 is an HMAC, so the server must recompute signatures with the key itself
    # (docs/decisions/0004-edgeone-secrets.md, edgecache.control.secrets).
    Column("secret_key_enc", Text, nullable=False),
    # JSON array of permission names, as for tokens.
    Column("permissions", Text, nullable=False),
    # JSON array of zone ids; NULL means every zone of the account.
    Column("zones", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

TASK_KINDS = ("purge", "prefetch")
TASK_STATUSES = ("processing", "success", "failed", "timeout", "canceled", "invalid")
UNSUCCESSFUL = "status NOT IN ('processing', 'success')"
"""The tasks ``ix_tasks_unsuccessful`` holds; a query names this very text to be served by it."""

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), Identity(start=1), primary_key=True),
    # One job per request; one task per target of the job (EdgeOne's Task model, shared by the
    # Cloudflare dialect, whose answer ``id`` is this job id).
    Column("job_id", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("zone_id", String(32), ForeignKey("zones.id"), nullable=False),
    # The purge's ledger position (NULL for prefetch), to acknowledge a purge's tasks at once.
    Column("seq", BigInteger, nullable=True),
    Column("target", Text, nullable=False),
    # The target's hostname, for the ``domains`` filter (NULL for tags and purge-all).
    Column("domain", String(253), nullable=True),
    Column("type", String(24), nullable=False),
    Column("method", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("fail_type", String(40), nullable=True),
    Column("fail_message", Text, nullable=True),
    # Audit: who asked, through which dialect.
    Column("principal", String(200), nullable=False),
    Column("dialect", String(16), nullable=False),
    # Cached objects the target matched and removed or marked stale on this node.
    Column("matched", Integer, nullable=True),
    CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
    CheckConstraint(_in("status", TASK_STATUSES), name="status"),
    # The listing: a zone's tasks of one kind by time, with the type and status the listing's filters
    # and the quota's count read from the index itself (no row read for a row they reject). One index
    # rather than one per filter: each index is a page more in every purge's commit (decision 0034);
    # a type filter walks the time range here (60 ms for a day of a million tasks over a week).
    Index("ix_tasks_listing", "zone_id", "kind", "created_at", "type", "status"),
    # The tasks that did not succeed, for the listing's status filter: few, and a purge's commit
    # never writes here (its task is processing, its acknowledgement a success).
    Index(
        "ix_tasks_unsuccessful",
        "zone_id",
        "kind",
        "status",
        "created_at",
        sqlite_where=text(UNSUCCESSFUL),
        postgresql_where=text(UNSUCCESSFUL),
    ),
    Index("ix_tasks_job", "job_id", "zone_id", "kind", "created_at"),
    # The tasks still processing, by ledger position: the acknowledgements (by seq), the timeout
    # sweep and the restart's resume read only these; a task leaves it once final (decision 0022).
    Index(
        "ix_tasks_processing_seq",
        "seq",
        sqlite_where=text("status = 'processing'"),
        postgresql_where=text("status = 'processing'"),
    ),
)

QUEUE_CONSUMER_TYPES = ("http_pull", "http_push")
QUEUE_CONTENT_TYPES = ("text", "json", "bytes", "v8")

queues = Table(
    "queues",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False),
    Column("name", String(63), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("modified_at", UTCDateTime(), nullable=False),
    Column("delivery_delay", Integer, nullable=False),
    Column("delivery_paused", Boolean(create_constraint=False), nullable=False),
    Column("retention_seconds", Integer, nullable=False),
    # The last whole-queue purge: it covers every message with seq <= purge_through (messages
    # pushed after it started survive); completed_at is set once they are all deleted.
    Column("purge_started_at", UTCDateTime(), nullable=True),
    Column("purge_through", BigInteger, nullable=False, server_default=text("0")),
    Column("purge_completed_at", UTCDateTime(), nullable=True),
    UniqueConstraint("account_id", "name"),
)

queue_consumers = Table(
    "queue_consumers",
    metadata,
    Column("id", String(32), primary_key=True),
    # One consumer per queue, as in Cloudflare.
    Column("queue_id", String(32), ForeignKey("queues.id"), nullable=False, unique=True),
    Column("type", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # The dead-letter queue's name ("" when none): Cloudflare names it, and creates it on first use.
    Column("dead_letter_queue", String(63), nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("retry_delay", Integer, nullable=False),
    Column("visibility_timeout_ms", Integer, nullable=False),
    # http_push only: where batches are POSTed, how many at once, and the HMAC key of the
    # signature header (Fernet-encrypted under the node master key, like EdgeOne secrets).
    Column("endpoint", Text, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("secret_enc", Text, nullable=True),
    CheckConstraint(_in("type", QUEUE_CONSUMER_TYPES), name="type"),
)

queue_messages = Table(
    "queue_messages",
    metadata,
    # Push order; also the message id (as 32 hex digits) and what a purge's bound compares with.
    # AUTOINCREMENT on SQLite so a number is never handed out twice (the ledger and the tasks use a
    # high-water mark instead, decision 0034: the queues were not measured for it).
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), Identity(start=1), primary_key=True),
    # No foreign key: deleting a queue must not delete a million rows in one transaction; the
    # sweeper removes the messages of deleted queues (queue_tombstones) in small batches.
    Column("queue_id", String(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    # len(body), kept so the backlog's byte count is read from an index, not from every body.
    Column("size", Integer, nullable=False),
    Column("content_type", String(8), nullable=False),
    Column("attempts", Integer, nullable=False),
    # Epoch milliseconds (the API's unit): when pushed, and when next deliverable (after a delay,
    # a retry delay, or the end of a lease).
    Column("created_ms", BigInteger, nullable=False),
    Column("visible_ms", BigInteger, nullable=False),
    # Random part of the current lease id (NULL until first delivered).
    Column("lease", String(16), nullable=True),
    # Pulls read the ready messages of one queue in delivery order; retention and the backlog
    # figures (count, bytes, oldest) read by age, from the index alone.
    Index("ix_queue_messages_ready", "queue_id", "visible_ms", "seq"),
    Index("ix_queue_messages_age", "queue_id", "created_ms", "size"),
    sqlite_autoincrement=True,
)

queue_tombstones = Table(
    "queue_tombstones",
    metadata,
    # A deleted queue whose messages the sweeper has not removed yet.
    Column("queue_id", String(32), primary_key=True),
    Column("deleted_at", UTCDateTime(), nullable=False),
)

queue_subscriptions = Table(
    "queue_subscriptions",
    metadata,
    # An event subscription (Cloudflare's event-subscriptions shape): edgecache's own events of one
    # source, delivered as messages into one queue of the same account.
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    # JSON object, e.g. {"type": "edgecache.purge", "zone_id": "..."}.
    Column("source", Text, nullable=False),
    # JSON array of event names, e.g. ["purge.completed"].
    Column("events", Text, nullable=False),
    Column("queue_id", String(32), nullable=False),
    Column("enabled", Boolean(create_constraint=False), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("modified_at", UTCDateTime(), nullable=False),
)

queue_event_log = Table(
    "queue_event_log",
    metadata,
    # One row per event published (e.g. "purge.completed:<job id>"): nodes that notice the same
    # event race on this key, so each event is delivered once per subscription.
    Column("key", String(200), primary_key=True),
    Column("published_at", UTCDateTime(), nullable=False, index=True),
)

cache_reserve = Table(
    "cache_reserve",
    metadata,
    # One row per zone that ever had its Cache Reserve set or cleared; no row: off, never cleared.
    Column("zone_id", String(32), ForeignKey("zones.id"), primary_key=True),
    Column("value", String(3), nullable=False),
    Column("modified_on", UTCDateTime(), nullable=True),
    # The latest clear: NULL state when none ever ran.
    Column("clear_state", String(16), nullable=True),
    Column("clear_start", UTCDateTime(), nullable=True),
    Column("clear_end", UTCDateTime(), nullable=True),
    Column("clear_objects", BigInteger, nullable=False, server_default=text("0")),
    Column("clear_bytes", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint(_in("value", ("on", "off")), name="value"),
    CheckConstraint(
        "clear_state IS NULL OR " + _in("clear_state", ("In-progress", "Completed")), name="clear_state"
    ),
)
