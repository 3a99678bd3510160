"""The Tasks page: the purge and prefetch history of a zone, with DescribePurgeTasks' filters.

Filters (all optional, combined with AND; several values of one filter are ORed): time range
(UTC, default the last 24 hours), job id, target (substring), domain, status, type; newest first,
``PAGE_SIZE`` per page. Tasks from every dialect and the CLI are listed, with who asked.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edgecache.api.console.guard import signed_in
from edgecache.api.console.render import READ, render, zones_allowing
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.credentials import CredentialService
from edgecache.db.tasks import TaskQuery, TaskRow

PAGE_SIZE = 25
STATUSES = ("processing", "success", "failed", "timeout", "canceled", "invalid")
TYPES = {
    "purge": ("purge_url", "purge_prefix", "purge_host", "purge_all", "purge_cache_tag"),
    "prefetch": ("prefetch_url",),
}
TIME_FORMAT = "%Y-%m-%dT%H:%M"
"""What ``<input type="datetime-local">`` sends (seconds are optional)."""


class FilterError(Exception):
    """A filter value that cannot be used."""


def _time(text: str, default: datetime) -> datetime:
    if not text:
        return default
    for fmt in (TIME_FORMAT, TIME_FORMAT + ":%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise FilterError(f"Not a date and time: {text!r} (use YYYY-MM-DDTHH:MM, UTC)")


def _who(principal: str, credentials: CredentialService) -> str:
    """A task's principal as a person reads it: the token's name where it is a token."""
    kind, _, ident = principal.partition(":")
    if kind == "token":
        info = credentials.get_token(ident)
        if info is not None:
            return f"{info.name} (token {ident[:8]})"
    return principal


def query_from(params: dict[str, Any], zone_id: str, now: datetime) -> TaskQuery:
    """The task query a filter form asks for; raises :class:`FilterError`."""
    kind = params["kind"] if params["kind"] in TYPES else "purge"
    end = _time(params["end"], now)
    start = _time(params["start"], end - timedelta(days=1))
    if start >= end:
        raise FilterError("The start of the time range must be before its end.")
    try:
        page = max(1, int(params["page"] or "1"))
    except ValueError:
        raise FilterError("The page must be a number.") from None
    return TaskQuery(
        zone_id=zone_id,
        kind=kind,
        start=start,
        end=end,
        job_id=params["job_id"] or None,
        target=params["target"] or None,
        target_fuzzy=True,
        domains=(params["domain"],) if params["domain"] else (),
        statuses=tuple(s for s in params["status"] if s in STATUSES),
        types=tuple(t for t in params["type"] if t in TYPES[kind]),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )


async def task_list(request: web.Request) -> web.Response:
    """``GET /console/tasks``."""
    session = signed_in(request)
    zones = zones_allowing(request, session, READ)
    q = request.query
    params: dict[str, Any] = {
        name: q.get(name, "").strip()
        for name in ("zone", "kind", "start", "end", "job_id", "target", "domain", "page")
    }
    params["status"] = q.getall("status", [])
    params["type"] = q.getall("type", [])
    zone = next((z for z in zones if z.config.id == params["zone"]), zones[0] if zones else None)
    context: dict[str, Any] = {
        "page": "tasks",
        "zones": zones,
        "zone": zone,
        "params": params,
        "statuses": STATUSES,
        "types": TYPES,
        "rows": [],
        "who": {},
        "total": 0,
        "error": "",
        "prev_url": "",
        "next_url": "",
        "first": 0,
    }
    if zone is None:
        return render(request, "tasks.html", context)
    now = datetime.now(UTC)
    try:
        query = query_from(params, zone.config.id, now)
    except FilterError as exc:
        context["error"] = str(exc)
        return render(request, "tasks.html", context, status=400)
    ctx = request.config_dict[CONTEXT_KEY]
    total, rows = await asyncio.to_thread(ctx.tasks.query, query)
    who = await asyncio.to_thread(_names, rows, ctx.credentials)
    page = query.offset // PAGE_SIZE + 1
    context.update(
        rows=rows,
        who=who,
        total=total,
        first=query.offset + 1,
        prev_url=_page_url(request, page - 1) if page > 1 else "",
        next_url=_page_url(request, page + 1) if query.offset + len(rows) < total else "",
    )
    context["params"] = {
        **params,
        "kind": query.kind,
        "zone": zone.config.id,
        "start": query.start.strftime(TIME_FORMAT) if query.start else "",
        "end": query.end.strftime(TIME_FORMAT) if query.end else "",
    }
    return render(request, "tasks.html", context)


def _names(rows: list[TaskRow], credentials: CredentialService) -> dict[str, str]:
    return {p: _who(p, credentials) for p in {r.principal for r in rows}}


def _page_url(request: web.Request, page: int) -> str:
    pairs = [(k, v) for k, v in request.query.items() if k != "page"]
    return "/console/tasks?" + urlencode([*pairs, ("page", str(page))])


def add_routes(app: web.Application) -> None:
    """Register the tasks route."""
    r = routes(app)
    r.add_route("GET", "/tasks", task_list)
