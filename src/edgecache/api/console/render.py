"""Rendering console pages: the templates' shared context, and which zones a user may see.

``READ`` (who may see a zone's tasks) is the native tasks API's rule and ``reserve.VIEW`` (who may
see a zone's Cache Reserve) the Cloudflare dialect's, imported, not restated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from edgecache.api.cloudflare import cache_reserve as reserve
from edgecache.api.cloudflare import queues
from edgecache.api.console.guard import SESSION, signed_in
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.native import READ
from edgecache.control.credentials import Permission
from edgecache.control.sessions import Session
from edgecache.edge.zones import ZoneRuntime

__all__ = ["READ", "allowed_zone", "render", "reserve_zones", "zones_allowing"]


def zones_allowing(
    request: web.Request, session: Session, permissions: Iterable[Permission]
) -> list[ZoneRuntime]:
    """The node's zones on which the session's token holds one of ``permissions``, by name."""
    wanted = tuple(permissions)
    principal = session.principal
    found = [
        zone
        for zone in request.config_dict[CONTEXT_KEY].zones.by_id.values()
        if any(principal.allows(p, zone.config.id, zone.config.account_id) for p in wanted)
    ]
    return sorted(found, key=lambda z: z.config.name)


def reserve_zones(request: web.Request, session: Session) -> list[ZoneRuntime]:
    """The zones whose Cache Reserve the session may see (none on a node without the service)."""
    if request.config_dict[CONTEXT_KEY].cache_reserve is None:
        return []
    return zones_allowing(request, session, reserve.VIEW)


def allowed_zone(request: web.Request, permissions: Iterable[Permission]) -> ZoneRuntime:
    """The zone named in the path, if the signed-in token holds one of ``permissions`` on it."""
    session = signed_in(request)
    zone_id = request.match_info["zone_id"]
    for zone in zones_allowing(request, session, permissions):
        if zone.config.id == zone_id:
            return zone
    # Unknown and forbidden zones look the same, as in the API.
    raise web.HTTPNotFound(reason="No such zone, or this token may not use it.")


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """A page: ``template`` with ``context`` and what every page shows (who is signed in, the
    navigation, the CSRF token for the sign-out form)."""
    session = request.get(SESSION)
    shared: dict[str, Any] = {
        "session": None,
        "csrf": "",
        "can_purge": False,
        "can_reserve": False,
        "can_queues": False,
        "page": "",
    }
    if session is not None:
        principal = session.principal
        shared.update(
            session=session,
            csrf=session.csrf,
            can_purge=bool(zones_allowing(request, session, (Permission.CACHE_PURGE,))),
            can_reserve=bool(reserve_zones(request, session)),
            can_queues=any(principal.allows_account(p, principal.account_id) for p in queues.VIEW),
        )
    return aiohttp_jinja2.render_template(template, request, {**shared, **context}, status=status)
