"""The Queues pages: the account's queues with their backlog, pause and resume, purge with progress.

Rules: who may look (``VIEW``) and who may act (``CHANGE``), and the purge's confirmation and its
message, are the Cloudflare dialect's, imported; pausing, resuming and purging call the same
:class:`QueueService` methods the API calls (``update_queue`` with ``delivery_paused``,
``start_purge``). Queues belong to the token's account. A token that may look but not act sees no
buttons, and its POSTs are refused (403). A running purge's progress (messages left to delete) is
a fragment the queue's page polls every second until the purge completes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.queues import CHANGE, PURGE_UNCONFIRMED, VIEW
from edgecache.api.console.guard import signed_in
from edgecache.api.console.render import render
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.queue_rules import QueueNotFound, QueueRejected, QueueSettings
from edgecache.control.queues import QueueService
from edgecache.control.sessions import Session


def may_view(session: Session) -> bool:
    """Whether the session may see its account's queues."""
    principal = session.principal
    return any(principal.allows_account(p, principal.account_id) for p in VIEW)


def _may_change(session: Session) -> bool:
    principal = session.principal
    return any(principal.allows_account(p, principal.account_id) for p in CHANGE)


def _viewer(request: web.Request) -> tuple[QueueService, str]:
    session = signed_in(request)
    if not may_view(session):
        raise web.HTTPNotFound(reason="This token may not see this account's queues.")
    return request.config_dict[CONTEXT_KEY].queues, session.principal.account_id


def _changer(request: web.Request) -> tuple[QueueService, str]:
    service, account_id = _viewer(request)
    if not _may_change(signed_in(request)):
        raise web.HTTPForbidden(reason="This token may view this account's queues but not change them.")
    return service, account_id


async def _queue_context(request: web.Request) -> dict[str, Any]:
    service, account_id = _viewer(request)
    queue_id = request.match_info["queue_id"]
    try:
        queue = await service.get_queue(account_id, queue_id)
        backlog = await service.backlog(account_id, queue_id)
        purge = await service.purge_status(account_id, queue_id)
    except QueueNotFound as exc:
        raise web.HTTPNotFound(reason="No such queue, or this token may not see it.") from exc
    return {
        "queue": queue.row,
        "consumers": queue.consumers,
        "backlog": backlog,
        "purge": purge,
        "purging": purge.started_at is not None and not purge.completed,
    }


async def _queue_page(request: web.Request, error: str, status: int) -> web.Response:
    context = await _queue_context(request)
    can_change = _may_change(signed_in(request))
    return render(
        request,
        "queue.html",
        {"page": "queues", "can_change": can_change, "error": error, **context},
        status=status,
    )


async def queue_list(request: web.Request) -> web.Response:
    """``GET /console/queues``: the account's queues with their backlog."""
    service, account_id = _viewer(request)
    _, queues = await service.list_queues(account_id, per_page=1000)
    rows = [(q, await service.backlog(account_id, q.row.id)) for q in queues]
    return render(request, "queues.html", {"page": "queues", "rows": rows})


async def queue_page(request: web.Request) -> web.Response:
    """``GET /console/queues/{queue_id}``: one queue, its backlog and its last purge."""
    return await _queue_page(request, "", 200)


async def purge_fragment(request: web.Request) -> web.Response:
    """``GET /console/queues/{queue_id}/purge``: the purge progress fragment the page polls."""
    return render(request, "_queue_purge.html", await _queue_context(request))


async def set_delivery(request: web.Request) -> web.StreamResponse:
    """``POST /console/queues/{queue_id}/delivery``: pause or resume delivery, as the API does."""
    service, account_id = _changer(request)
    queue_id = request.match_info["queue_id"]
    paused = str((await request.post()).get("paused", "")) == "true"
    try:
        await service.update_queue(
            account_id, queue_id, name=None, settings=QueueSettings(delivery_paused=paused), replace_all=False
        )
    except QueueNotFound as exc:
        raise web.HTTPNotFound(reason="No such queue, or this token may not see it.") from exc
    except QueueRejected as exc:
        return await _queue_page(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/console/queues/{queue_id}")


async def start_purge(request: web.Request) -> web.StreamResponse:
    """``POST /console/queues/{queue_id}/purge``: purge every message, once confirmed, as the API does."""
    service, account_id = _changer(request)
    queue_id = request.match_info["queue_id"]
    if (await request.post()).get("delete_messages_permanently") != "true":
        return await _queue_page(request, PURGE_UNCONFIRMED, 400)
    try:
        await service.start_purge(account_id, queue_id)
    except QueueNotFound as exc:
        raise web.HTTPNotFound(reason="No such queue, or this token may not see it.") from exc
    except QueueRejected as exc:
        return await _queue_page(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/console/queues/{queue_id}")


def add_routes(app: web.Application) -> None:
    """Register the Queues routes."""
    r = routes(app)
    r.add_route("GET", "/queues", queue_list)
    r.add_route("GET", "/queues/{queue_id}", queue_page)
    r.add_route("GET", "/queues/{queue_id}/purge", purge_fragment)
    r.add_route("POST", "/queues/{queue_id}/delivery", set_delivery)
    r.add_route("POST", "/queues/{queue_id}/purge", start_purge)
