"""The rules of Cloudflare Queues as edgecache applies them: limits, defaults, the errors a request
can be refused with, the values a dialect hands to ``edgecache.control.queues``, and lease ids.

Pure: no database, no wire format. Limits and defaults follow reference ``cloudflare-api.md`` §4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from edgecache.db.queues import MAX_SEQ, ConsumerRow, QueueRow, StoredMessage

MAX_MESSAGE_BYTES = 128_000
"""Cloudflare's message limit: 128 KB, where 1 KB is 1000 bytes."""
MAX_BATCH_BYTES = 256_000
MAX_BATCH_MESSAGES = 100
MAX_DELAY_SECONDS = 86_400
MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 1_209_600
DEFAULT_RETENTION_SECONDS = 345_600
MAX_RETRIES = 100
DEFAULT_MAX_RETRIES = 3
MAX_PULL_BATCH = 100
DEFAULT_PULL_BATCH = 5
MAX_VISIBILITY_MS = 43_200_000
DEFAULT_VISIBILITY_MS = 30_000
DEFAULT_PUSH_BATCH = 10
DEFAULT_PUSH_CONCURRENCY = 1
MAX_PUSH_CONCURRENCY = 250
"""Cloudflare's limit on concurrent push-consumer invocations."""
CONSUMER_TYPES = ("http_pull", "http_push")
CONTENT_TYPES = ("text", "json", "bytes", "v8")
QUEUE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LEASE_ID = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{16})")


class QueueRejected(Exception):
    """A request that cannot be accepted; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueueNotFound(QueueRejected):
    """No such queue in this account."""


class ConsumerNotFound(QueueRejected):
    """No such consumer on this queue."""


class InvalidQueueName(QueueRejected):
    """A queue name outside the naming rule."""


class QueueNameTaken(QueueRejected):
    """Another queue of the account has this name."""


class ConsumerExists(QueueRejected):
    """The queue has a consumer already (Cloudflare allows one)."""


class InvalidQueueSettings(QueueRejected):
    """A queue setting out of range."""


class InvalidConsumerSettings(QueueRejected):
    """A consumer setting out of range, or an unsupported consumer type."""


class InvalidMessage(QueueRejected):
    """A message or batch outside the limits; ``kind`` says which."""

    def __init__(
        self,
        kind: Literal["metadata", "size", "batch_bytes", "batch_count", "batch_delay"],
        message: str,
    ) -> None:
        super().__init__(message)
        self.kind = kind


class InvalidPull(QueueRejected):
    """Pull or ack parameters out of range."""


class DeliveryPaused(QueueRejected):
    """The queue's delivery is paused: pulls are refused, pushes are still accepted."""


class PullNotEnabled(QueueRejected):
    """The queue has no ``http_pull`` consumer."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's settings (None: leave as is, or the default on creation)."""

    delivery_delay: int | None = None
    delivery_paused: bool | None = None
    retention_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A consumer to create or replace; None settings take the defaults."""

    type: str
    dead_letter_queue: str = ""
    batch_size: int | None = None
    max_retries: int | None = None
    retry_delay: int | None = None
    visibility_timeout_ms: int | None = None
    endpoint: str | None = None
    """http_push only: where batches are POSTed."""
    max_concurrency: int | None = None
    """http_push only: batches in flight at once."""


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue with its consumers."""

    row: QueueRow
    consumers: tuple[ConsumerRow, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """A message to push: its stored bytes, content type, and own delay (None: inherit)."""

    body: bytes
    content_type: str
    delay_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """A leased message."""

    message: StoredMessage
    lease_id: str

    @property
    def id(self) -> str:
        return message_id(self.message.seq)


@dataclass(frozen=True, slots=True)
class Retry:
    """A lease to put back, after ``delay_seconds`` (None: the consumer's retry delay)."""

    lease_id: str
    delay_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    """What an ack call did; ``warnings`` maps lease ids that did nothing to why."""

    acked: int
    retried: int
    warnings: dict[str, str]


@dataclass(frozen=True, slots=True)
class PurgeStatus:
    """The last whole-queue purge (None: never purged)."""

    started_at: datetime | None
    completed: bool
    remaining: int
    """Messages the purge has left to delete (0 when not counted)."""


def message_id(seq: int) -> str:
    """The public id of a message: its number as 32 hex digits."""
    return f"{seq:032x}"


def lease_id(seq: int, nonce: str) -> str:
    """The lease id of one delivery of one message."""
    return f"{seq:x}-{nonce}"


def parse_lease(text: str) -> tuple[int, str] | None:
    """(seq, nonce) of a lease id, or None when it cannot be one of ours."""
    found = LEASE_ID.fullmatch(text)
    if found is None:
        return None
    seq = int(found.group(1), 16)
    return None if seq > MAX_SEQ else (seq, found.group(2))


def check_endpoint(endpoint: str | None) -> str:
    """An http_push endpoint: an http(s) URL with a host, or :class:`InvalidConsumerSettings`."""
    if not endpoint:
        raise InvalidConsumerSettings("http_push consumers need settings.endpoint, an http(s) URL")
    try:
        parts = urlsplit(endpoint)
    except ValueError as exc:
        raise InvalidConsumerSettings(f"endpoint {endpoint!r} is not a URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or len(endpoint) > 2048:
        raise InvalidConsumerSettings(f"endpoint {endpoint!r} must be an http(s) URL with a host")
    return endpoint


def check_range(name: str, value: int, low: int, high: int, error: type[QueueRejected]) -> None:
    """``low <= value <= high``, or ``error`` naming the setting."""
    if not low <= value <= high:
        raise error(f"{name} must be between {low} and {high}, got {value}")


def check_settings(settings: QueueSettings) -> None:
    """Queue settings within Cloudflare's ranges, or :class:`InvalidQueueSettings`."""
    if settings.delivery_delay is not None:
        check_range("delivery_delay", settings.delivery_delay, 0, MAX_DELAY_SECONDS, InvalidQueueSettings)
    if settings.retention_seconds is not None:
        check_range(
            "message_retention_period",
            settings.retention_seconds,
            MIN_RETENTION_SECONDS,
            MAX_RETENTION_SECONDS,
            InvalidQueueSettings,
        )


def check_name(name: str) -> None:
    """A queue name within the naming rule, or :class:`InvalidQueueName`."""
    if not QUEUE_NAME.match(name):
        raise InvalidQueueName(
            f"Invalid queue name {name!r}: 1 to 63 lower-case letters, digits and dashes, "
            "not starting or ending with a dash"
        )


def check_messages(messages: Sequence[Message], batch_delay: int | None) -> None:
    """The push limits (reference §4.5, §4.11), before anything is stored."""
    if batch_delay is not None and not 0 <= batch_delay <= MAX_DELAY_SECONDS:
        raise InvalidMessage(
            "batch_delay", f"delay_seconds must be between 0 and {MAX_DELAY_SECONDS}, got {batch_delay}"
        )
    if len(messages) > MAX_BATCH_MESSAGES:
        raise InvalidMessage(
            "batch_count", f"A batch holds at most {MAX_BATCH_MESSAGES} messages, got {len(messages)}"
        )
    total = 0
    for i, m in enumerate(messages):
        if m.content_type not in CONTENT_TYPES:
            raise InvalidMessage(
                "metadata",
                f"messages[{i}]: content_type must be one of {', '.join(CONTENT_TYPES)}",
            )
        if m.delay_seconds is not None and not 0 <= m.delay_seconds <= MAX_DELAY_SECONDS:
            raise InvalidMessage(
                "metadata",
                f"messages[{i}]: delay_seconds must be between 0 and {MAX_DELAY_SECONDS}",
            )
        if len(m.body) > MAX_MESSAGE_BYTES:
            raise InvalidMessage(
                "size",
                f"messages[{i}]: a message is at most {MAX_MESSAGE_BYTES} bytes, got {len(m.body)}",
            )
        total += len(m.body)
    if total > MAX_BATCH_BYTES:
        raise InvalidMessage("batch_bytes", f"A batch is at most {MAX_BATCH_BYTES} bytes, got {total}")
