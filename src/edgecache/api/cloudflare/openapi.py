"""The OpenAPI 3.1 document of the v4 routes this node serves (``GET /client/v4/openapi.json``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

_STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_FILE_WITH_HEADERS = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
PURGE_BODY = {
    "anyOf": [
        {"title": "Purge by tags", "type": "object", "required": ["tags"], "properties": {"tags": _STRINGS}},
        {
            "title": "Purge by hostnames",
            "type": "object",
            "required": ["hosts"],
            "properties": {"hosts": _STRINGS},
        },
        {
            "title": "Purge by prefixes",
            "type": "object",
            "required": ["prefixes"],
            "properties": {"prefixes": _STRINGS},
        },
        {
            "title": "Purge everything",
            "type": "object",
            "required": ["purge_everything"],
            "properties": {"purge_everything": {"type": "boolean", "const": True}},
        },
        {
            "title": "Purge files",
            "type": "object",
            "required": ["files"],
            "properties": {"files": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        },
        {
            "title": "Purge files with URL and headers",
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"anyOf": [{"type": "string"}, _FILE_WITH_HEADERS]},
                }
            },
        },
    ]
}
_MESSAGE = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "integer", "minimum": 1000}, "message": {"type": "string"}},
}


def _envelope(success: bool, result: dict[str, Any]) -> dict[str, Any]:
    """The v4 envelope's schema: a failure has at least one error and a null result."""
    errors: dict[str, Any] = {"type": "array", "items": _MESSAGE}
    if not success:
        errors["minItems"] = 1
    return {
        "type": "object",
        "required": ["success", "errors", "messages", "result"],
        "properties": {
            "success": {"const": success},
            "errors": errors,
            "messages": {"type": "array", "items": _MESSAGE},
            "result": result,
        },
    }


_FAILURE = _envelope(False, {"type": "null"})
_SUCCESS = _envelope(True, {})
_PURGE_SUCCESS = _envelope(
    True,
    {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "Job id"}},
    },
)
SECURITY: list[dict[str, list[str]]] = [{"api_token": []}, {"api_email": [], "api_key": []}]


def _failure(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _FAILURE}}}


def _operation(summary: str, description: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "security": SECURITY,
        "parameters": [
            {
                "name": "zone_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": PURGE_BODY}}},
        "responses": {
            "200": {
                "description": "Accepted: durable and in effect on this node",
                "content": {"application/json": {"schema": _PURGE_SUCCESS}},
            },
            "400": _failure(
                "Invalid request: 6003/6007/9106 headers and JSON; 1012/1013/1014/1092 body shape; "
                "1094/1101/1111 too many items; 1100 tag; 1114/1115 host or prefix; 1082 URL outside "
                "the zone; 7003/7000 unknown zone or route"
            ),
            "403": _failure("10000: unknown credential, or no Cache Purge permission for this zone"),
            "429": _failure("1134: the account's purge rate limit; see Retry-After"),
        },
    }


PURGE_DESCRIPTION = (
    "Hard purge: matched entries are deleted. Selectors: files (URLs, optionally with cache-key "
    "headers selecting one variant), tags (case-insensitive), hosts, prefixes (host/path, string "
    "prefix, every query string), or purge_everything."
)
INVALIDATE_DESCRIPTION = (
    "Soft purge: matched entries become stale and are revalidated with the origin; "
    "stale-while-revalidate and stale-if-error count from the purge."
)

_Q = "/accounts/{account_id}/queues"
_QQ = _Q + "/{queue_id}"
_S = "/accounts/{account_id}/event_subscriptions/subscriptions"
OPERATIONS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("GET", "/zones/{zone_id}/cache/cache_reserve"): (
        "cache-reserve-get",
        "Get the zone's Cache Reserve setting",
        "Result {id: cache_reserve, value: on|off, editable, modified_on}. Zone Settings Read.",
    ),
    ("PATCH", "/zones/{zone_id}/cache/cache_reserve"): (
        "cache-reserve-edit",
        "Turn the zone's Cache Reserve on or off",
        'Body {"value": "on"|"off"}. 1153 while a clear is in progress. Zone Settings Write.',
    ),
    ("POST", "/zones/{zone_id}/cache/cache_reserve_clear"): (
        "cache-reserve-clear",
        "Start a Cache Reserve clear",
        "Removes every reserve object of the zone in the background; durable across restarts. "
        "1152 while the reserve is on. Zone Settings Write.",
    ),
    ("GET", "/zones/{zone_id}/cache/cache_reserve_clear"): (
        "cache-reserve-clear-status",
        "Get the latest Cache Reserve clear",
        "Result {id: cache_reserve_clear, state: In-progress|Completed, start_ts, end_ts}; 1142 when "
        "no clear ever ran. Zone Settings Read.",
    ),
    ("GET", "/openapi.json"): ("openapi", "This document", "The OpenAPI document of the v4 routes."),
    ("GET", _Q): ("queues-list", "List queues", "Filter by name; V4 page pagination. Queues Read."),
    ("POST", _Q): ("queues-create", "Create a queue", "Body {queue_name, settings}. Queues Write."),
    ("GET", _QQ): ("queues-get", "Get a queue", "Queues Read."),
    ("PUT", _QQ): (
        "queues-update",
        "Replace a queue's settings",
        "Settings not given return to their defaults.",
    ),
    ("PATCH", _QQ): (
        "queues-edit",
        "Edit a queue's settings",
        "Only what is given changes (pause and resume).",
    ),
    ("DELETE", _QQ): ("queues-delete", "Delete a queue", "Its messages and consumers go with it."),
    ("GET", _QQ + "/metrics"): (
        "queues-metrics",
        "Get a queue's backlog",
        "backlog_count, backlog_bytes, oldest_message_timestamp_ms.",
    ),
    ("POST", _QQ + "/messages"): (
        "queues-push",
        "Push a message",
        "Durable before the answer; optional delay_seconds.",
    ),
    ("POST", _QQ + "/messages/batch"): (
        "queues-push-batch",
        "Push messages",
        "Up to 100 messages in one durable write.",
    ),
    ("POST", _QQ + "/messages/pull"): (
        "queues-pull",
        "Pull messages",
        "Leases up to batch_size messages for visibility_timeout_ms.",
    ),
    ("POST", _QQ + "/messages/ack"): (
        "queues-ack",
        "Acknowledge or retry messages",
        "acks and retries (with delay_seconds) by lease id in one call.",
    ),
    ("POST", _QQ + "/messages/peek"): (
        "queues-peek",
        "Peek at messages",
        "Deliverable messages without leasing them.",
    ),
    ("POST", _QQ + "/messages/purge"): (
        "queues-purge-messages",
        "Delete peeked messages",
        "By the refs peek gave.",
    ),
    ("POST", _QQ + "/purge"): (
        "queues-purge",
        "Purge a queue",
        'Requires {"delete_messages_permanently": true}; every message pushed before it goes.',
    ),
    ("GET", _QQ + "/purge"): (
        "queues-purge-status",
        "Get a queue purge's status",
        "started_at and completed.",
    ),
    ("GET", _QQ + "/consumers"): ("queues-consumers-list", "List a queue's consumers", "Queues Read."),
    ("POST", _QQ + "/consumers"): (
        "queues-consumers-create",
        "Create a consumer",
        "http_pull or http_push (signed POSTs to an endpoint).",
    ),
    ("GET", _QQ + "/consumers/{consumer_id}"): ("queues-consumers-get", "Get a consumer", "Queues Read."),
    ("PUT", _QQ + "/consumers/{consumer_id}"): (
        "queues-consumers-update",
        "Update a consumer",
        "Batch size, retries, dead-letter queue, visibility timeout.",
    ),
    ("DELETE", _QQ + "/consumers/{consumer_id}"): (
        "queues-consumers-delete",
        "Delete a consumer",
        "Queues Write.",
    ),
    ("GET", _S): (
        "subscriptions-list",
        "List event subscriptions",
        "queue_id narrows the list; V4 page pagination.",
    ),
    ("POST", _S): (
        "subscriptions-create",
        "Subscribe a queue to events",
        "Purge jobs, prefetch jobs, queue purges and Cache Reserve clears.",
    ),
    ("GET", _S + "/{subscription_id}"): ("subscriptions-get", "Get an event subscription", "Queues Read."),
    ("PATCH", _S + "/{subscription_id}"): (
        "subscriptions-edit",
        "Edit an event subscription",
        "Name, events, destination or enabled.",
    ),
    ("DELETE", _S + "/{subscription_id}"): (
        "subscriptions-delete",
        "Delete an event subscription",
        "Answers with the subscription removed.",
    ),
}
"""Every v4 route other than the purges, by (method, path under the prefix): operation id, summary,
description. ``build`` refuses a route missing here, so a new route cannot go undocumented."""


def _parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


def _plain(path: str, op_id: str, summary: str, description: str, has_body: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "security": SECURITY,
        "parameters": _parameters(path),
        "responses": {
            "200": {"description": "Success", "content": {"application/json": {"schema": _SUCCESS}}},
            "400": _failure("Invalid request"),
            "403": _failure("10000: no permission"),
        },
    }
    if has_body:
        op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def build(routes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The document for ``routes``: (method, path under ``/client/v4``) of every registered route."""
    purge_op = _operation("Purge cached content", PURGE_DESCRIPTION)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        if path.endswith("/purge_cache"):
            op = {**purge_op, "operationId": "zone-purge" if method == "POST" else "zone-purge-delete"}
        elif path.endswith("/invalidate_cache"):
            op = {
                **_operation("Invalidate cached content", INVALIDATE_DESCRIPTION),
                "operationId": "zone-invalidate",
            }
        else:
            if (method, path) not in OPERATIONS:
                raise LookupError(f"{method} {path} is served but not documented in openapi.OPERATIONS")
            op_id, summary, description = OPERATIONS[(method, path)]
            op = _plain(path, op_id, summary, description, method in ("POST", "PUT", "PATCH"))
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgecache Cloudflare v4 API", "version": "1"},
        "servers": [{"url": "/client/v4"}, {"url": "/"}],
        "components": {
            "securitySchemes": {
                "api_token": {"type": "http", "scheme": "bearer"},
                "api_email": {"type": "apiKey", "in": "header", "name": "X-Auth-Email"},
                "api_key": {"type": "apiKey", "in": "header", "name": "X-Auth-Key"},
            }
        },
        "paths": paths,
    }


def served_routes(router: web.UrlDispatcher, prefix: str = "/client/v4") -> list[tuple[str, str]]:
    """(method, path under ``prefix``) of every route ``router`` serves there (HEAD aside)."""
    out: list[tuple[str, str]] = []
    for route in router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(prefix + "/") and route.method != "HEAD":
            out.append((route.method, path[len(prefix) :]))
    return out


async def document(request: web.Request) -> web.Response:
    """Serve the document, built from the routes the application really has."""
    return web.json_response(build(served_routes(request.app.router)))
