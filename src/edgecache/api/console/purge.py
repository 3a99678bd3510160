"""The Purge page and a job's live task list.

Rules: the form builds the same :class:`PurgeRequest` the Cloudflare dialect builds, and submits it
through the same calls (``items``, then ``submit`` with the account's rate limit), so every rule,
limit and message is the API's; the only checks made here are about the form itself (an empty
list, a malformed header line). The job's tasks are recorded with dialect ``console``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from edgecache.api.console.guard import signed_in
from edgecache.api.console.render import READ, allowed_zone, render, zones_allowing
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.credentials import Permission
from edgecache.control.purges import FileTarget, PurgeRejected, PurgeRequest
from edgecache.control.quotas import QuotaExceeded
from edgecache.db.tasks import TaskRow
from edgecache.edge.zones import ZoneRuntime
from edgecache.purge.selectors import Mode

PURGE = (Permission.CACHE_PURGE,)
KINDS = {
    "urls": ("URLs", "one URL per line, e.g. http://example.com/page.html"),
    "tags": ("Cache tags", "one tag per line (or separated by commas)"),
    "hosts": ("Hostnames", "one hostname per line (or separated by commas)"),
    "prefixes": ("Prefixes", "one host/path prefix per line, e.g. example.com/blog/"),
    "everything": ("Everything", "every cached object of the zone"),
}
FINAL = frozenset({"success", "failed", "timeout", "canceled", "invalid"})


class FormError(Exception):
    """The form itself is incomplete or malformed (before any purge rule is applied)."""


def _list(text: str, *, commas: bool) -> tuple[str, ...]:
    if commas:
        text = text.replace(",", "\n")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _headers(text: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise FormError(
                f"Cache-key header lines look like 'CF-Device-Type: mobile', not {line.strip()!r}"
            )
        out[name.strip()] = value.strip()
    return out or None


def request_from_form(kind: str, items: str, headers: str) -> PurgeRequest:
    """The purge the form asks for, in the dialect-neutral form."""
    if kind == "everything":
        return PurgeRequest(everything=True)
    if kind not in KINDS:
        raise FormError("Choose what to purge by: URLs, cache tags, hostnames, prefixes or everything.")
    values = _list(items, commas=kind in ("tags", "hosts"))
    if not values:
        raise FormError(f"Enter at least one item to purge ({KINDS[kind][1]}).")
    if kind == "urls":
        extra = _headers(headers)
        return PurgeRequest(files=tuple(FileTarget(url, extra) for url in values))
    if kind == "tags":
        return PurgeRequest(tags=values)
    if kind == "hosts":
        return PurgeRequest(hosts=values)
    return PurgeRequest(prefixes=values)


def _form_page(
    request: web.Request, zone: ZoneRuntime, form: dict[str, str], error: str, status: int
) -> web.Response:
    return render(
        request,
        "purge.html",
        {
            "page": "purge",
            "zone": zone,
            "zones": zones_allowing(request, signed_in(request), PURGE),
            "kinds": KINDS,
            "form": form,
            "error": error,
        },
        status=status,
    )


async def purge_home(request: web.Request) -> web.Response:
    """``GET /console/purge``: the Purge page of the first zone this token may purge."""
    zones = zones_allowing(request, signed_in(request), PURGE)
    if not zones:
        raise web.HTTPNotFound(reason="This token may not purge any zone of this node.")
    raise web.HTTPSeeOther(f"/console/zones/{zones[0].config.id}/purge")


async def purge_form(request: web.Request) -> web.Response:
    """``GET /console/zones/{zone_id}/purge``."""
    zone = allowed_zone(request, PURGE)
    return _form_page(request, zone, {"kind": "urls", "items": "", "headers": "", "mode": "hard"}, "", 200)


async def purge_submit(request: web.Request) -> web.StreamResponse:
    """``POST /console/zones/{zone_id}/purge``: validate and submit as the API does, then show the job."""
    zone = allowed_zone(request, PURGE)
    session = signed_in(request)
    raw = await request.post()
    form = {name: str(raw.get(name, "")) for name in ("kind", "items", "headers", "mode")}
    mode = Mode.INVALIDATE if form["mode"] == "soft" else Mode.DELETE
    ctx = request.config_dict[CONTEXT_KEY]
    try:
        req = request_from_form(form["kind"], form["items"], form["headers"])
        items = ctx.purges.items(zone, req)
        accepted = await ctx.purges.submit(
            zone, mode, items, req, principal=session.principal.ref, dialect="console", rate_limited=True
        )
    except (FormError, PurgeRejected) as exc:
        return _form_page(request, zone, form, str(exc), 400)
    except QuotaExceeded as exc:
        return _form_page(request, zone, form, f"Unable to purge: {exc}", 429)
    raise web.HTTPSeeOther(f"/console/jobs/{accepted.job_id}")


async def _job_rows(request: web.Request) -> tuple[ZoneRuntime, list[TaskRow]]:
    session = signed_in(request)
    ctx = request.config_dict[CONTEXT_KEY]
    rows = await asyncio.to_thread(ctx.tasks.by_job, request.match_info["job_id"])
    allowed = {z.config.id: z for z in zones_allowing(request, session, READ)}
    if not rows or rows[0].zone_id not in allowed:
        raise web.HTTPNotFound(reason="No such job, or this token may not see it.")
    return allowed[rows[0].zone_id], rows


def _job_context(zone: ZoneRuntime, rows: list[TaskRow]) -> dict[str, Any]:
    return {
        "zone": zone,
        "rows": rows,
        "job_id": rows[0].job_id,
        "done": all(r.status in FINAL for r in rows),
        "matched": sum(r.matched or 0 for r in rows),
    }


async def job(request: web.Request) -> web.Response:
    """``GET /console/jobs/{job_id}``: the job's tasks, updating until each is final."""
    zone, rows = await _job_rows(request)
    return render(request, "job.html", {"page": "purge", **_job_context(zone, rows)})


async def job_tasks(request: web.Request) -> web.Response:
    """``GET /console/jobs/{job_id}/tasks``: the task list fragment the job page polls."""
    zone, rows = await _job_rows(request)
    return render(request, "_job_tasks.html", _job_context(zone, rows))


def add_routes(app: web.Application) -> None:
    """Register the purge and job routes."""
    r = routes(app)
    r.add_route("GET", "/purge", purge_home)
    r.add_route("GET", "/zones/{zone_id}/purge", purge_form)
    r.add_route("POST", "/zones/{zone_id}/purge", purge_submit)
    r.add_route("GET", "/jobs/{job_id}", job)
    r.add_route("GET", "/jobs/{job_id}/tasks", job_tasks)
