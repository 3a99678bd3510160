"""Delivery to ``http_push`` consumers: batches POSTed to the consumer's endpoint.

Rules of this module:
- Each push consumer runs ``max_concurrency`` workers; a worker leases a batch exactly as a pull
  does (the lease is the delivery timeout, ``visibility_timeout_ms``), POSTs it, and settles it:
  a 2xx answer acks every message except those the endpoint names in ``{"retries": [{"id": ...,
  "delay_seconds"?: n}]}``; any other answer, a timeout or a connection error retries the whole
  batch. Retries back off exponentially with jitter (from ``retry_delay``, at least one second),
  and ``max_retries`` then the dead-letter queue apply as for pull consumers (``QueueService``).
- Each request is signed: ``X-Edgecache-Timestamp: <unix seconds>`` and
  ``X-Edgecache-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under the consumer's
  secret>``, so the endpoint can check the sender and refuse replays of old requests.
- Workers follow the configuration: every ``REFRESH_EVERY`` seconds the consumers are read again and
  workers are started or stopped to match (a deleted consumer stops, a paused queue waits).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from typing import Any

import aiohttp

from edgecache.control.queue_rules import Delivered, DeliveryPaused, QueueRejected, Retry
from edgecache.control.queues import QueueService
from edgecache.db.queues import ConsumerRow, QueueRow

log = logging.getLogger(__name__)

REFRESH_EVERY = 2.0
"""Seconds between reads of the push consumers' configuration."""
IDLE_WAIT = 0.5
"""Seconds a worker waits after finding nothing to deliver."""
MAX_BACKOFF = 3600
"""Seconds: the longest retry delay the backoff reaches."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for one request."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def backoff(retry_delay: int, attempts: int) -> int:
    """Seconds before a failed delivery is tried again: doubling per attempt, with full jitter over
    the upper half so that many failed batches do not return at the same instant."""
    base = min(MAX_BACKOFF, max(1, retry_delay) * 2 ** max(0, attempts - 1))
    return int(random.uniform(base / 2, base)) or 1


def batch_body(queue: QueueRow, delivered: list[Delivered]) -> bytes:
    """The JSON body POSTed to the endpoint."""
    messages = []
    for d in delivered:
        m = d.message
        body = m.body.decode("utf-8") if m.content_type == "text" else base64.b64encode(m.body).decode()
        messages.append(
            {
                "id": d.id,
                "attempts": m.attempts,
                "timestamp_ms": m.created_ms,
                "content_type": m.content_type,
                "body": body,
            }
        )
    doc = {"queue": queue.name, "queue_id": queue.id, "messages": messages}
    return json.dumps(doc, separators=(",", ":")).encode()


def _named_retries(answer: Any, ids: set[str]) -> dict[str, int | None]:
    """The messages a 2xx answer asks to retry: id → delay (None: the consumer's)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("retries"), list):
        return {}
    out: dict[str, int | None] = {}
    for item in answer["retries"]:
        if isinstance(item, dict) and item.get("id") in ids:
            delay = item.get("delay_seconds")
            out[item["id"]] = delay if isinstance(delay, int) and not isinstance(delay, bool) else None
    return out


class PushDelivery:
    """The workers of every http_push consumer on this node."""

    def __init__(self, queues: QueueService) -> None:
        self._queues = queues
        self._workers: dict[str, list[asyncio.Task[None]]] = {}
        self._config: dict[str, tuple[QueueRow, ConsumerRow]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0

    async def keep(self) -> None:
        """Follow the configuration forever (cancel to stop every worker)."""
        try:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    log.exception("reading the push consumers failed")
                await asyncio.sleep(REFRESH_EVERY)
        finally:
            await self.stop()

    async def refresh(self) -> None:
        """Start or stop workers to match the stored push consumers."""
        current = {c.id: (q, c) for q, c in await self._queues.push_consumers()}
        self._config = current
        for cid in list(self._workers):
            if cid not in current:
                for task in self._workers.pop(cid):
                    task.cancel()
        for cid, (_q, c) in current.items():
            tasks = [t for t in self._workers.get(cid, []) if not t.done()]
            want = c.max_concurrency or 1
            while len(tasks) > want:
                tasks.pop().cancel()
            while len(tasks) < want:
                tasks.append(asyncio.get_running_loop().create_task(self._work(cid)))
            self._workers[cid] = tasks

    async def stop(self) -> None:
        """Cancel every worker and close the HTTP session."""
        tasks = [t for ts in self._workers.values() for t in ts]
        self._workers.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self, consumer_id: str) -> None:
        while consumer_id in self._config:
            queue, consumer = self._config[consumer_id]
            try:
                sent = await self.deliver_once(queue, consumer)
            except DeliveryPaused:
                sent = False
            except QueueRejected:
                # The consumer or its queue went away; the next refresh stops this worker.
                sent = False
            except Exception:
                log.exception("push delivery for queue %s failed", queue.name)
                sent = False
            if not sent:
                await asyncio.sleep(IDLE_WAIT)

    async def deliver_once(self, queue: QueueRow, consumer: ConsumerRow) -> bool:
        """Lease one batch, POST it, settle it; False when there was nothing to deliver."""
        delivered, _ = await self._queues.pull(
            queue.account_id, queue.id, consumer.batch_size, consumer_type="http_push"
        )
        if not delivered:
            return False
        body = batch_body(queue, delivered)
        stamp = int(time.time())
        secret = self._queues.secret_of(consumer) or ""
        headers = {
            "Content-Type": "application/json",
            "X-Edgecache-Timestamp": str(stamp),
            "X-Edgecache-Signature": sign(secret, stamp, body),
        }
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ok = False
        answer: Any = None
        try:
            async with self._session.post(
                consumer.endpoint or "",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=consumer.visibility_timeout_ms / 1000),
                allow_redirects=False,
            ) as resp:
                ok = 200 <= resp.status < 300
                raw = await resp.read()
            if ok and raw.strip():
                with contextlib.suppress(ValueError):
                    answer = json.loads(raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("push to %s for queue %s failed: %s", consumer.endpoint, queue.name, exc)
        by_id = {d.id: d for d in delivered}
        if ok:
            named = _named_retries(answer, set(by_id))
            acks = [d.lease_id for i, d in by_id.items() if i not in named]
            retries = [
                Retry(
                    by_id[i].lease_id,
                    backoff(consumer.retry_delay, by_id[i].message.attempts) if d is None else d,
                )
                for i, d in named.items()
            ]
            self.delivered += len(acks)
        else:
            acks = []
            retries = [
                Retry(d.lease_id, backoff(consumer.retry_delay, d.message.attempts)) for d in delivered
            ]
            self.failed += len(retries)
        await self._queues.ack(queue.account_id, queue.id, acks, retries, consumer_type="http_push")
        return True
