"""``/accounts/{account_id}/queues/...``: Cloudflare Queues' REST API, the wire format.

Validation order: auth (9106/6003/10000) → account id shape (7003) → permission (403/10000;
``queues_read`` or ``queues_write`` to read, ``queues_write`` to change, account scope) → queue id
shape (10107) → body is JSON (10208) of the documented shape (10207, or 10026 for pull/ack/peek) →
domain rules (reference ``cloudflare-api.md`` §4.11: 10104, 10202-10206, 11003, 11004, ...).

Bodies: pushed ``text`` is a string; ``json`` is any JSON value (stored serialised); ``bytes`` and
``v8`` arrive base64-encoded. Pulls give ``text`` back as the string and every other type as base64
of the stored bytes, as Cloudflare documents for HTTP pull consumers.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import datetime
from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.auth import authenticate, denied
from edgecache.api.cloudflare.envelope import CfError, no_route, page_info, success
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.credentials import Permission
from edgecache.control.queue_rules import (
    ConsumerExists,
    ConsumerNotFound,
    ConsumerSpec,
    DeliveryPaused,
    InvalidConsumerSettings,
    InvalidMessage,
    InvalidPull,
    InvalidQueueName,
    InvalidQueueSettings,
    Message,
    PullNotEnabled,
    Queue,
    QueueNameTaken,
    QueueNotFound,
    QueueRejected,
    QueueSettings,
    Retry,
    message_id,
)
from edgecache.control.queues import QueueService
from edgecache.db.queues import Backlog, ConsumerRow, StoredMessage

ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 100

MESSAGE_CODES = {
    "batch_delay": 10202,
    "metadata": 10203,
    "size": 10204,
    "batch_bytes": 10205,
    "batch_count": 10206,
}


VIEW = (Permission.QUEUES_READ, Permission.QUEUES_WRITE)
"""Who may list queues and read their backlog and purge status (account-level permissions)."""
CHANGE = (Permission.QUEUES_WRITE,)
"""Who may change them: pause, resume, purge."""
PURGE_UNCONFIRMED = (
    'A purge deletes every message for good: confirm with {"delete_messages_permanently": true}'
)


def _bad(code: int, message: str) -> CfError:
    return CfError(400, code, message)


def rejected(exc: QueueRejected) -> CfError:
    """The v4 error for a domain rejection."""
    match exc:
        case QueueNotFound() | ConsumerNotFound():
            return CfError(404, 10104, exc.message)
        case InvalidMessage(kind=kind):
            return _bad(MESSAGE_CODES[kind], exc.message)
        case InvalidQueueName():
            return _bad(11003, exc.message)
        case QueueNameTaken():
            # 409 is what the SDK retries; this conflict will not resolve itself.
            return CfError(409, 11009, exc.message, headers={"x-should-retry": "false"})
        case ConsumerExists():
            return _bad(11004, exc.message)
        case InvalidQueueSettings():
            return _bad(100128, exc.message)
        case InvalidConsumerSettings():
            return _bad(100127, exc.message)
        case InvalidPull():
            return _bad(10026, exc.message)
        case DeliveryPaused():
            return CfError(409, 10252, exc.message, headers={"x-should-retry": "false"})
        case PullNotEnabled():
            # Cloudflare answers this one with code 0 (reference §4.6).
            return _bad(0, exc.message)
    return _bad(10207, exc.message)


def when(t: datetime | None) -> str | None:
    """RFC 3339 with microseconds and ``Z``, as Cloudflare writes its timestamps."""
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def consumer_json(c: ConsumerRow, queue_name: str, secret: str | None = None) -> dict[str, Any]:
    """A consumer as the API shows it; ``secret`` (an http_push consumer's signing secret) is shown
    only in the answer that created it."""
    settings: dict[str, Any] = {
        "batch_size": c.batch_size,
        "max_retries": c.max_retries,
        "retry_delay": c.retry_delay,
        "visibility_timeout_ms": c.visibility_timeout_ms,
    }
    if c.type == "http_push":
        settings.update(endpoint=c.endpoint, max_concurrency=c.max_concurrency)
    out = {
        "consumer_id": c.id,
        "type": c.type,
        "queue_name": queue_name,
        "created_on": when(c.created_at),
        "dead_letter_queue": c.dead_letter_queue,
        "settings": settings,
    }
    if secret is not None:
        out["signing_secret"] = secret
    return out


def queue_json(q: Queue) -> dict[str, Any]:
    """A queue as the API shows it."""
    r = q.row
    return {
        "queue_id": r.id,
        "queue_name": r.name,
        "created_on": when(r.created_at),
        "modified_on": when(r.modified_at),
        "producers": [],
        "producers_total_count": 0,
        "consumers": [consumer_json(c, r.name) for c in q.consumers],
        "consumers_total_count": len(q.consumers),
        "settings": {
            "delivery_delay": r.delivery_delay,
            "delivery_paused": r.delivery_paused,
            "message_retention_period": r.retention_seconds,
        },
    }


def metrics_json(b: Backlog) -> dict[str, int]:
    """The backlog figures of ``/metrics`` and of ``metadata.metrics``."""
    return {"backlog_count": b.count, "backlog_bytes": b.bytes, "oldest_message_timestamp_ms": b.oldest_ms}


def _message_body(m: StoredMessage) -> str:
    if m.content_type == "text":
        return m.body.decode("utf-8")
    return base64.b64encode(m.body).decode("ascii")


def _message_json(m: StoredMessage) -> dict[str, Any]:
    return {
        "id": message_id(m.seq),
        "attempts": m.attempts,
        "body": _message_body(m),
        "metadata": {"CF-sourceMessageSource": "api", "CF-Content-Type": m.content_type},
        "timestamp_ms": m.created_ms,
    }


# -- request helpers ------------------------------------------------------------------------------


async def caller(request: web.Request, *, write: bool) -> tuple[QueueService, str]:
    """Authenticate, check the account id and the permission; the service and the account id."""
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticate(request, ctx.credentials)
    account_id = request.match_info["account_id"]
    if not ID.match(account_id):
        raise no_route(request.path)
    wanted = CHANGE if write else VIEW
    if not any(principal.allows_account(p, account_id) for p in wanted):
        raise denied()
    return ctx.queues, account_id


def _queue_id(request: web.Request) -> str:
    queue_id = request.match_info["queue_id"]
    if not ID.match(queue_id):
        raise _bad(10107, f"Queue ID {queue_id!r} is malformed: expected 32 hexadecimal characters")
    return queue_id


async def json_body(request: web.Request, *, empty: Any = None) -> Any:
    """The parsed JSON body (``empty`` when there is none and that is allowed), or 10207/10208."""
    raw = await request.read()
    if not raw.strip():
        if empty is not None:
            return empty
        raise _bad(10207, "The request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad(10208, "The request body is not valid JSON") from exc


def json_object(value: Any, code: int = 10207) -> dict[str, Any]:
    """``value`` if it is a JSON object, else the error ``code``."""
    if not isinstance(value, dict):
        raise _bad(code, "The request body must be a JSON object")
    return value


def _int(body: dict[str, Any], name: str, code: int) -> int | None:
    """An optional whole number (the SDK sends floats such as ``30.0``)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(code, f"{name} must be a number")
    if value != int(value):
        raise _bad(code, f"{name} must be a whole number")
    return int(value)


def bool_field(body: dict[str, Any], name: str, code: int) -> bool | None:
    """An optional true/false field, else the error ``code``."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(code, f"{name} must be true or false")
    return value


# -- queues ---------------------------------------------------------------------------------------


def _settings(body: dict[str, Any]) -> QueueSettings:
    raw = body.get("settings")
    if raw is None:
        return QueueSettings()
    settings = json_object(raw, 100128)
    return QueueSettings(
        delivery_delay=_int(settings, "delivery_delay", 100128),
        delivery_paused=bool_field(settings, "delivery_paused", 100128),
        retention_seconds=_int(settings, "message_retention_period", 100128),
    )


def _name(body: dict[str, Any], *, required: bool) -> str | None:
    name = body.get("queue_name")
    if name is None and not required:
        return None
    if not isinstance(name, str):
        raise _bad(11003, "queue_name is required and must be a string")
    return name


async def create_queue(request: web.Request) -> web.Response:
    """POST /queues."""
    service, account_id = await caller(request, write=True)
    body = json_object(await json_body(request))
    name = _name(body, required=True)
    assert name is not None
    try:
        queue = await service.create_queue(account_id, name, _settings(body))
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(queue_json(queue))


async def list_queues(request: web.Request) -> web.Response:
    """GET /queues?name=...&page=...&per_page=..."""
    service, account_id = await caller(request, write=False)
    try:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", str(DEFAULT_PER_PAGE)))
    except ValueError as exc:
        raise _bad(10207, "page and per_page must be whole numbers") from exc
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise _bad(10207, f"page must be at least 1 and per_page between 1 and {MAX_PER_PAGE}")
    names = request.query.getall("name", [])
    total, queues = await service.list_queues(account_id, names, page, per_page)
    return success([queue_json(q) for q in queues], result_info=page_info(page, per_page, len(queues), total))


async def get_queue(request: web.Request) -> web.Response:
    """GET /queues/{queue_id}."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    try:
        return success(queue_json(await service.get_queue(account_id, queue_id)))
    except QueueRejected as exc:
        raise rejected(exc) from exc


async def _update(request: web.Request, *, replace_all: bool) -> web.Response:
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request))
    try:
        queue = await service.update_queue(
            account_id,
            queue_id,
            name=_name(body, required=False),
            settings=_settings(body),
            replace_all=replace_all,
        )
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(queue_json(queue))


async def update_queue(request: web.Request) -> web.Response:
    """PUT /queues/{queue_id}: settings not given go back to their defaults."""
    return await _update(request, replace_all=True)


async def edit_queue(request: web.Request) -> web.Response:
    """PATCH /queues/{queue_id}: only what is given changes (pause and resume use this)."""
    return await _update(request, replace_all=False)


def _envelope_only() -> web.Response:
    # The SDK types queue and consumer deletes as the bare envelope (reference §1.2.1).
    return web.json_response({"success": True, "errors": [], "messages": []})


async def delete_queue(request: web.Request) -> web.Response:
    """DELETE /queues/{queue_id}."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    try:
        await service.delete_queue(account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return _envelope_only()


async def queue_metrics(request: web.Request) -> web.Response:
    """GET /queues/{queue_id}/metrics."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    try:
        return success(metrics_json(await service.backlog(account_id, queue_id)))
    except QueueRejected as exc:
        raise rejected(exc) from exc


# -- consumers ------------------------------------------------------------------------------------


def _consumer_spec(body: dict[str, Any]) -> ConsumerSpec:
    kind = body.get("type")
    if not isinstance(kind, str):
        raise _bad(100127, "type is required: 'http_pull' or 'http_push'")
    dlq = body.get("dead_letter_queue", "")
    if dlq is None:
        dlq = ""
    if not isinstance(dlq, str):
        raise _bad(100127, "dead_letter_queue must be a queue name")
    settings = json_object(body.get("settings") or {}, 100127)
    return ConsumerSpec(
        type=kind,
        dead_letter_queue=dlq,
        batch_size=_int(settings, "batch_size", 100127),
        max_retries=_int(settings, "max_retries", 100127),
        retry_delay=_int(settings, "retry_delay", 100127),
        visibility_timeout_ms=_int(settings, "visibility_timeout_ms", 100127),
        endpoint=_text(settings, "endpoint"),
        max_concurrency=_int(settings, "max_concurrency", 100127),
    )


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(100127, f"{name} must be a string")
    return value


def _consumer_id(request: web.Request) -> str:
    consumer_id = request.match_info["consumer_id"]
    if not ID.match(consumer_id):
        raise CfError(404, 10104, f"Consumer {consumer_id!r} does not exist")
    return consumer_id


async def _queue_name(service: QueueService, account_id: str, queue_id: str) -> str:
    return (await service.get_queue(account_id, queue_id)).row.name


async def create_consumer(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/consumers."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    spec = _consumer_spec(json_object(await json_body(request)))
    try:
        row = await service.create_consumer(account_id, queue_id, spec)
        name = await _queue_name(service, account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(consumer_json(row, name, service.secret_of(row)))


async def list_consumers(request: web.Request) -> web.Response:
    """GET /queues/{queue_id}/consumers."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    try:
        queue = await service.get_queue(account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success([consumer_json(c, queue.row.name) for c in queue.consumers])


async def get_consumer(request: web.Request) -> web.Response:
    """GET /queues/{queue_id}/consumers/{consumer_id}."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    consumer_id = _consumer_id(request)
    try:
        row = await service.get_consumer(account_id, queue_id, consumer_id)
        name = await _queue_name(service, account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(consumer_json(row, name))


async def update_consumer(request: web.Request) -> web.Response:
    """PUT /queues/{queue_id}/consumers/{consumer_id}."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    consumer_id = _consumer_id(request)
    spec = _consumer_spec(json_object(await json_body(request)))
    try:
        row = await service.update_consumer(account_id, queue_id, consumer_id, spec)
        name = await _queue_name(service, account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(consumer_json(row, name))


async def delete_consumer(request: web.Request) -> web.Response:
    """DELETE /queues/{queue_id}/consumers/{consumer_id}."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    consumer_id = _consumer_id(request)
    try:
        await service.delete_consumer(account_id, queue_id, consumer_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return _envelope_only()


# -- messages -------------------------------------------------------------------------------------


def parse_message(item: Any, where: str) -> Message:
    """One pushed message (``where`` names it in errors)."""
    m = json_object(item)
    if "body" not in m:
        raise _bad(10207, f"{where}: body is required")
    content_type = m.get("content_type", "json")
    body = m["body"]
    if content_type == "text":
        if not isinstance(body, str):
            raise _bad(10207, f"{where}: a text message's body must be a string")
        data = body.encode("utf-8")
    elif content_type == "json":
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    elif content_type in ("bytes", "v8"):
        if not isinstance(body, str):
            raise _bad(10207, f"{where}: a {content_type} message's body must be base64 text")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(10207, f"{where}: a {content_type} message's body must be base64 text") from exc
    else:
        raise _bad(10203, f"{where}: content_type must be one of text, json, bytes, v8")
    delay = _int(m, "delay_seconds", 10203)
    return Message(data, content_type, delay)


async def push(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    message = parse_message(await json_body(request), "message")
    try:
        await service.push(account_id, queue_id, [message])
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success({})


async def push_batch(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages/batch."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request))
    items = body.get("messages")
    if not isinstance(items, list):
        raise _bad(10207, "messages must be an array")
    messages = [parse_message(item, f"messages[{i}]") for i, item in enumerate(items)]
    delay = _int(body, "delay_seconds", 10202)
    try:
        await service.push(account_id, queue_id, messages, delay)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success({})


async def pull(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages/pull."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request, empty={}), 10026)
    visibility = _int(body, "visibility_timeout_ms", 10026)
    if visibility is None:
        # An older name for the same setting, still in Cloudflare's pull-consumer docs' curl example.
        visibility = _int(body, "visibility_timeout", 10026)
    try:
        delivered, backlog = await service.pull(
            account_id, queue_id, _int(body, "batch_size", 10026), visibility
        )
    except QueueRejected as exc:
        raise rejected(exc) from exc
    messages = [{**_message_json(d.message), "lease_id": d.lease_id} for d in delivered]
    return success(
        {
            "message_backlog_count": backlog.count,
            "messages": messages,
            "metadata": {"metrics": metrics_json(backlog)},
        }
    )


def _leases(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = body.get(name) or []
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("lease_id"), str) for i in items
    ):
        raise _bad(10026, f"{name} must be an array of objects with a lease_id")
    return items


async def ack(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages/ack: acks and retries in one call."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request), 10026)
    acks = [a["lease_id"] for a in _leases(body, "acks")]
    retries = [Retry(r["lease_id"], _int(r, "delay_seconds", 10026)) for r in _leases(body, "retries")]
    try:
        result = await service.ack(account_id, queue_id, acks, retries)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success({"ackCount": result.acked, "retryCount": result.retried, "warnings": result.warnings})


async def peek(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages/peek: deliverable messages, not leased."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request, empty={}), 10026)
    size = _int(body, "batch_size", 10026)
    try:
        found = await service.peek(account_id, queue_id, 5 if size is None else size)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success({"messages": [{**_message_json(m), "ref": message_id(m.seq)} for m in found]})


async def purge_messages(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/messages/purge: delete messages by the refs peek gave."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request))
    refs = body.get("refs")
    if not isinstance(refs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("ref"), str) for r in refs
    ):
        raise _bad(10207, "refs must be an array of objects with a ref")
    try:
        warnings = await service.delete_refs(account_id, queue_id, [r["ref"] for r in refs])
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success({"errors": [], "warnings": warnings})


# -- whole-queue purge ----------------------------------------------------------------------------


async def start_purge(request: web.Request) -> web.Response:
    """POST /queues/{queue_id}/purge: requires ``{"delete_messages_permanently": true}``."""
    service, account_id = await caller(request, write=True)
    queue_id = _queue_id(request)
    body = json_object(await json_body(request, empty={}))
    if body.get("delete_messages_permanently") is not True:
        raise _bad(10207, PURGE_UNCONFIRMED)
    try:
        queue = await service.start_purge(account_id, queue_id)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    return success(queue_json(queue))


async def purge_status(request: web.Request) -> web.Response:
    """GET /queues/{queue_id}/purge: ``started_at`` and ``completed`` (a string, as the SDK types it)."""
    service, account_id = await caller(request, write=False)
    queue_id = _queue_id(request)
    try:
        status = await service.purge_status(account_id, queue_id, count=False)
    except QueueRejected as exc:
        raise rejected(exc) from exc
    if status.started_at is None:
        return success({})
    return success(
        {"started_at": when(status.started_at), "completed": "true" if status.completed else "false"}
    )


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the queue routes under ``prefix``."""
    base = prefix + "/accounts/{account_id}/queues"
    one = base + "/{queue_id}"
    r = routes(app)
    r.add_route("GET", base, list_queues)
    r.add_route("POST", base, create_queue)
    r.add_route("GET", one, get_queue)
    r.add_route("PUT", one, update_queue)
    r.add_route("PATCH", one, edit_queue)
    r.add_route("DELETE", one, delete_queue)
    r.add_route("GET", one + "/metrics", queue_metrics)
    r.add_route("POST", one + "/messages", push)
    r.add_route("POST", one + "/messages/batch", push_batch)
    r.add_route("POST", one + "/messages/pull", pull)
    r.add_route("POST", one + "/messages/ack", ack)
    r.add_route("POST", one + "/messages/peek", peek)
    r.add_route("POST", one + "/messages/purge", purge_messages)
    r.add_route("POST", one + "/purge", start_purge)
    r.add_route("GET", one + "/purge", purge_status)
    r.add_route("GET", one + "/consumers", list_consumers)
    r.add_route("POST", one + "/consumers", create_consumer)
    r.add_route("GET", one + "/consumers/{consumer_id}", get_consumer)
    r.add_route("PUT", one + "/consumers/{consumer_id}", update_consumer)
    r.add_route("DELETE", one + "/consumers/{consumer_id}", delete_consumer)
