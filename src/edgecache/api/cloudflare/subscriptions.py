"""``/accounts/{account_id}/event_subscriptions/subscriptions``: Cloudflare's event-subscriptions
wire format, carrying edgecache's own sources (see ``edgecache.control.subscriptions``).

Same rules as the queue routes (``queues.py``): ``queues_read`` or ``queues_write`` to read,
``queues_write`` to change; bodies that do not fit the schema are 400/10207; an unknown
subscription is 404.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.envelope import CfError, page_info, success
from edgecache.api.cloudflare.queues import bool_field, caller, json_body, json_object, rejected, when
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.queue_rules import QueueRejected
from edgecache.control.subscriptions import SubscriptionNotFound, SubscriptionSpec
from edgecache.db.subscriptions import SubscriptionRow

ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PER_PAGE = 100


def subscriptionjson_body(s: SubscriptionRow) -> dict[str, Any]:
    """A subscription as the API shows it."""
    return {
        "id": s.id,
        "name": s.name,
        "source": s.source,
        "events": list(s.events),
        "destination": {"type": "queues.queue", "queue_id": s.queue_id},
        "enabled": s.enabled,
        "created_at": when(s.created_at),
        "modified_at": when(s.modified_at),
    }


def _bad(message: str) -> CfError:
    return CfError(400, 10207, message)


def _spec(body: dict[str, Any]) -> SubscriptionSpec:
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad("name must be a string")
    source = body.get("source")
    if source is not None and not isinstance(source, dict):
        raise _bad("source must be an object")
    events = body.get("events")
    if events is not None and (not isinstance(events, list) or not all(isinstance(e, str) for e in events)):
        raise _bad("events must be an array of strings")
    destination = body.get("destination")
    queue_id = None
    if destination is not None:
        if (
            not isinstance(destination, dict)
            or destination.get("type") != "queues.queue"
            or not isinstance(destination.get("queue_id"), str)
        ):
            raise _bad('destination must be {"type": "queues.queue", "queue_id": "<queue id>"}')
        queue_id = destination["queue_id"]
    return SubscriptionSpec(
        name=name,
        source=source,
        events=None if events is None else tuple(events),
        queue_id=queue_id,
        enabled=bool_field(body, "enabled", 10207),
    )


def _failed(exc: QueueRejected) -> CfError:
    if isinstance(exc, SubscriptionNotFound):
        return CfError(404, 10104, exc.message)
    return rejected(exc)


def _subscription_id(request: web.Request) -> str:
    sid = request.match_info["subscription_id"]
    if not ID.match(sid):
        raise CfError(404, 10104, f"Event subscription {sid!r} does not exist")
    return sid


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET: the account's subscriptions, ``queue_id`` to narrow, V4 page pagination."""
    _, account_id = await caller(request, write=False)
    try:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", "20"))
    except ValueError as exc:
        raise _bad("page and per_page must be whole numbers") from exc
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise _bad(f"page must be at least 1 and per_page between 1 and {MAX_PER_PAGE}")
    service = request.app[CONTEXT_KEY].subscriptions
    total, rows = await service.list(account_id, request.query.get("queue_id"), page, per_page)
    info = page_info(page, per_page, len(rows), total)
    return success([subscriptionjson_body(r) for r in rows], result_info=info)


async def create_subscription(request: web.Request) -> web.Response:
    """POST: subscribe a queue to a source's events."""
    _, account_id = await caller(request, write=True)
    spec = _spec(json_object(await json_body(request)))
    try:
        row = await request.app[CONTEXT_KEY].subscriptions.create(account_id, spec)
    except QueueRejected as exc:
        raise _failed(exc) from exc
    return success(subscriptionjson_body(row))


async def get_subscription(request: web.Request) -> web.Response:
    """GET one."""
    _, account_id = await caller(request, write=False)
    sid = _subscription_id(request)
    try:
        row = await request.app[CONTEXT_KEY].subscriptions.get(account_id, sid)
    except QueueRejected as exc:
        raise _failed(exc) from exc
    return success(subscriptionjson_body(row))


async def update_subscription(request: web.Request) -> web.Response:
    """PATCH: change name, events, destination or enabled."""
    _, account_id = await caller(request, write=True)
    sid = _subscription_id(request)
    spec = _spec(json_object(await json_body(request)))
    try:
        row = await request.app[CONTEXT_KEY].subscriptions.update(account_id, sid, spec)
    except QueueRejected as exc:
        raise _failed(exc) from exc
    return success(subscriptionjson_body(row))


async def delete_subscription(request: web.Request) -> web.Response:
    """DELETE: answers with the subscription that was removed."""
    _, account_id = await caller(request, write=True)
    sid = _subscription_id(request)
    try:
        row = await request.app[CONTEXT_KEY].subscriptions.delete(account_id, sid)
    except QueueRejected as exc:
        raise _failed(exc) from exc
    return success(subscriptionjson_body(row))


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the event-subscription routes under ``prefix``."""
    base = prefix + "/accounts/{account_id}/event_subscriptions/subscriptions"
    one = base + "/{subscription_id}"
    r = routes(app)
    r.add_route("GET", base, list_subscriptions)
    r.add_route("POST", base, create_subscription)
    r.add_route("GET", one, get_subscription)
    r.add_route("PATCH", one, update_subscription)
    r.add_route("DELETE", one, delete_subscription)
