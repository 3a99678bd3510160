"""edgecache's own REST API for tasks: ``/edgecache/v1/...`` on the control listener.

Rules: bearer tokens as in the Cloudflare dialect; a caller sees a zone's tasks with Cache Purge or
Zone Settings Read on that zone. Answers are plain JSON; errors, unknown paths under
``/edgecache/`` included, are ``{"error": {"code": <http status>, "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import UNMET, routes
from edgecache.control.credentials import Permission, Principal, is_well_formed_token
from edgecache.db.tasks import MAX_OFFSET, TaskQuery, TaskRow
from edgecache.edge.zones import ZoneRuntime

log = logging.getLogger(__name__)

PREFIX = "/edgecache/"
FINAL = frozenset({"success", "failed", "timeout", "canceled", "invalid"})
MAX_SINCE = 10 * 366 * 86400.0
"""Ten years, in seconds: longer than any task retention, and far from the calendar's limits."""

READ = (Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ)


class NativeError(Exception):
    """An error answer of the native API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_error(status: int, message: str) -> NativeError:
    return NativeError(status, message)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _error(err: NativeError) -> web.Response:
    return web.json_response({"error": {"code": err.status, "message": err.message}}, status=err.status)


def _answers_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except NativeError as err:
            return _error(err)

    return wrapped


@web.middleware
async def native_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every answer under ``/edgecache/`` in this API's error shape: unknown routes and methods,
    and (logged) unexpected failures."""
    if not owns(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(NativeError(404, f"no route for {request.path}"))
    except web.HTTPMethodNotAllowed:
        return _error(NativeError(405, f"{request.method} is not allowed on {request.path}"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("native API request failed: %s %s", request.method, request.path)
        return _error(NativeError(500, "internal error; the server log has the details"))


async def _principal(request: web.Request) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not is_well_formed_token(token.strip()):
        raise _json_error(401, "an API token is required: Authorization: Bearer <token>")
    credentials = request.app[CONTEXT_KEY].credentials
    principal = credentials.cached_token(token.strip()) or await asyncio.to_thread(
        credentials.verify_token, token.strip()
    )
    if principal is None:
        raise _json_error(403, "unknown, revoked or expired token")
    return principal


def _allowed(principal: Principal, zone_id: str, account_id: str) -> bool:
    return any(principal.allows(p, zone_id, account_id) for p in READ)


def task_json(row: TaskRow) -> dict[str, Any]:
    """A task as the native API and the CLI show it."""
    return {
        "job_id": row.job_id,
        "kind": row.kind,
        "zone_id": row.zone_id,
        "target": row.target,
        "type": row.type,
        "method": row.method,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "fail_type": row.fail_type,
        "fail_message": row.fail_message,
        "matched": row.matched,
        "principal": row.principal,
        "dialect": row.dialect,
    }


@_answers_errors
async def job(request: web.Request) -> web.Response:
    """``GET /edgecache/v1/jobs/{job_id}``: every task of a job and whether all are final."""
    principal = await _principal(request)
    ctx = request.app[CONTEXT_KEY]
    rows = await asyncio.to_thread(ctx.tasks.by_job, request.match_info["job_id"])
    zone = ctx.zones.by_id.get(rows[0].zone_id) if rows else None
    if zone is None or not _allowed(principal, zone.config.id, zone.config.account_id):
        raise _json_error(404, "no such job")
    return web.json_response(
        {
            "job_id": rows[0].job_id,
            "zone_id": zone.config.id,
            "done": all(r.status in FINAL for r in rows),
            "tasks": [task_json(r) for r in rows],
        }
    )


def _zone(request: web.Request, principal: Principal) -> ZoneRuntime:
    """The zone named in the path (by either id) if the caller may read it; else 404."""
    zone = request.app[CONTEXT_KEY].zones.lookup(request.match_info["zone_id"])
    if zone is None or not _allowed(principal, zone.config.id, zone.config.account_id):
        raise _json_error(404, "no such zone")
    return zone


@_answers_errors
async def zone_info(request: web.Request) -> web.Response:
    """``GET /edgecache/v1/zones/{zone_id}``: the zone's ids (ours and the EdgeOne-style one), name
    and hostnames; ``zone_id`` may be either id."""
    zone = _zone(request, await _principal(request))
    return web.json_response(
        {
            "id": zone.config.id,
            "edgeone_id": zone.config.eo_id,
            "name": zone.config.name,
            "hostnames": list(zone.config.hostnames),
        }
    )


@_answers_errors
async def zone_tasks(request: web.Request) -> web.Response:
    """``GET /edgecache/v1/zones/{zone_id}/tasks``: filtered, newest first; ``zone_id`` may be either
    id.

    Query: ``kind`` (purge|prefetch), ``status``, ``type`` (repeatable), ``target`` (substring),
    ``domain``, ``job_id``, ``since`` (seconds back, default 86400), ``limit`` (≤ 1000), ``offset``.
    """
    zone = _zone(request, await _principal(request))
    ctx = request.app[CONTEXT_KEY]
    q = request.query
    try:
        since = float(q.get("since", "86400"))
        limit = int(q.get("limit", "50"))
        offset = int(q.get("offset", "0"))
    except ValueError as exc:
        raise _json_error(400, f"invalid number: {exc}") from exc
    # "not (a <= x <= b)" also refuses NaN, which fails every comparison.
    if not (1 <= limit <= 1000 and 0 <= offset <= MAX_OFFSET and 0 < since <= MAX_SINCE):
        raise _json_error(
            400,
            f"limit must be 1..1000, offset 0..{MAX_OFFSET}, "
            f"since a number of seconds in (0, {MAX_SINCE:.0f}]",
        )
    kind = q.get("kind", "purge")
    if kind not in ("purge", "prefetch"):
        raise _json_error(400, "kind must be purge or prefetch")
    query = TaskQuery(
        zone_id=zone.config.id,
        kind=kind,
        start=datetime.now(UTC) - timedelta(seconds=since),
        job_id=q.get("job_id"),
        target=q.get("target"),
        target_fuzzy=True,
        domains=tuple(q.getall("domain", [])),
        statuses=tuple(q.getall("status", [])),
        types=tuple(q.getall("type", [])),
        offset=offset,
        limit=limit,
    )
    total, rows = await asyncio.to_thread(ctx.tasks.query, query)
    return web.json_response({"total": total, "tasks": [task_json(r) for r in rows]})


@_answers_errors
async def zone_reserve(request: web.Request) -> web.Response:
    """A zone's Cache Reserve: the setting and the latest clear with its progress (objects and
    bytes removed), which the v4 objects do not carry (``edgecache reserve status``)."""
    principal = await _principal(request)
    ctx = request.app[CONTEXT_KEY]
    zone = ctx.zones.by_id.get(request.match_info["zone_id"])
    if zone is None or not _allowed(principal, zone.config.id, zone.config.account_id):
        raise _json_error(404, "no such zone")
    if ctx.cache_reserve is None:
        raise _json_error(404, "this node has no persistent tier")
    value, modified_on = ctx.cache_reserve.setting(zone.config.id)
    clear = ctx.cache_reserve.clears().get(zone.config.id)
    return web.json_response(
        {
            "value": value,
            "modified_on": None if modified_on is None else modified_on.isoformat(),
            "clear": None
            if clear is None
            else {
                "state": clear.state,
                "start": clear.start.isoformat(),
                "end": None if clear.end is None else clear.end.isoformat(),
                "objects": clear.objects,
                "bytes": clear.bytes,
            },
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the native routes."""
    r = routes(app)
    r.add_route("GET", "/edgecache/v1/zones/{zone_id}/cache_reserve", zone_reserve)
    r.add_route("GET", "/edgecache/v1/jobs/{job_id}", job)
    r.add_route("GET", "/edgecache/v1/zones/{zone_id}", zone_info)
    r.add_route("GET", "/edgecache/v1/zones/{zone_id}/tasks", zone_tasks)


def owns(path: str) -> bool:
    """Whether ``path`` is this API's (its errors, unknown routes included, are in its shape)."""
    return path.startswith(PREFIX)


def expectation_failed(request: web.Request) -> web.Response:
    """417 in this API's error shape: the request's ``Expect`` cannot be met (decision 0030)."""
    return _error(NativeError(417, f"the Expect header cannot be met: {UNMET}"))
