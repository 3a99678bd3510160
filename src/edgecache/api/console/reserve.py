"""The Cache Reserve page: a zone's setting, the on/off switch, and the clear with its progress.

Rules: who may look (``VIEW``) and who may act (``CHANGE``), the accepted values and their message
are the Cloudflare dialect's, imported; turning on, off and clearing call the same
:class:`CacheReserveService` methods the API calls, so its refusals (enabling during a clear,
clearing while on) reach the page with the API's messages and change nothing. A token that may
look but not act sees no buttons, and its POSTs are refused (403). The clear's progress is a
fragment the page polls every second while the clear is in progress.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.cache_reserve import BAD_VALUE, CHANGE, VALUES, VIEW
from edgecache.api.console.guard import signed_in
from edgecache.api.console.render import allowed_zone, render, reserve_zones
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.expectations import routes
from edgecache.control.cache_reserve import IN_PROGRESS, CacheReserveService, ReserveRejected
from edgecache.edge.zones import ZoneRuntime


def _service(request: web.Request) -> CacheReserveService:
    service = request.config_dict[CONTEXT_KEY].cache_reserve
    if service is None:
        raise web.HTTPNotFound(reason="This node has no persistent tier, so no Cache Reserve.")
    return service


def _may_change(request: web.Request, zone: ZoneRuntime) -> bool:
    principal = signed_in(request).principal
    return any(principal.allows(p, zone.config.id, zone.config.account_id) for p in CHANGE)


def _url(zone: ZoneRuntime) -> str:
    return f"/console/zones/{zone.config.id}/reserve"


def _clear_context(service: CacheReserveService, zone: ZoneRuntime) -> dict[str, Any]:
    clear = service.clears().get(zone.config.id)
    return {"zone": zone, "clear": clear, "clearing": clear is not None and clear.state == IN_PROGRESS}


def _page(request: web.Request, zone: ZoneRuntime, error: str, status: int) -> web.Response:
    service = _service(request)
    value, modified_on = service.setting(zone.config.id)
    return render(
        request,
        "reserve.html",
        {
            "page": "reserve",
            "zones": reserve_zones(request, signed_in(request)),
            "value": value,
            "modified_on": modified_on,
            "can_change": _may_change(request, zone),
            "rules": zone.config.cache_reserve,
            "error": error,
            **_clear_context(service, zone),
        },
        status=status,
    )


def _changeable(request: web.Request) -> ZoneRuntime:
    zone = allowed_zone(request, VIEW)
    if not _may_change(request, zone):
        raise web.HTTPForbidden(reason="This token may view Cache Reserve on this zone but not change it.")
    return zone


async def reserve_home(request: web.Request) -> web.Response:
    """``GET /console/reserve``: the Cache Reserve page of the first zone this token may see."""
    _service(request)
    zones = reserve_zones(request, signed_in(request))
    if not zones:
        raise web.HTTPNotFound(reason="This token may not see Cache Reserve on any zone of this node.")
    raise web.HTTPSeeOther(_url(zones[0]))


async def reserve_page(request: web.Request) -> web.Response:
    """``GET /console/zones/{zone_id}/reserve``."""
    return _page(request, allowed_zone(request, VIEW), "", 200)


async def reserve_clear_status(request: web.Request) -> web.Response:
    """``GET /console/zones/{zone_id}/reserve/clear``: the progress fragment the page polls."""
    zone = allowed_zone(request, VIEW)
    return render(request, "_reserve_clear.html", _clear_context(_service(request), zone))


async def reserve_set(request: web.Request) -> web.StreamResponse:
    """``POST /console/zones/{zone_id}/reserve``: turn the reserve on or off, as the API does."""
    zone = _changeable(request)
    value = str((await request.post()).get("value", ""))
    if value not in VALUES:
        return _page(request, zone, BAD_VALUE, 400)
    try:
        await _service(request).set(zone.config.id, value)
    except ReserveRejected as exc:
        return _page(request, zone, str(exc), 400)
    raise web.HTTPSeeOther(_url(zone))


async def reserve_clear(request: web.Request) -> web.StreamResponse:
    """``POST /console/zones/{zone_id}/reserve/clear``: start the clear, as the API does."""
    zone = _changeable(request)
    try:
        await _service(request).clear(zone.config.id)
    except ReserveRejected as exc:
        return _page(request, zone, str(exc), 400)
    raise web.HTTPSeeOther(_url(zone))


def add_routes(app: web.Application) -> None:
    """Register the Cache Reserve routes."""
    r = routes(app)
    r.add_route("GET", "/reserve", reserve_home)
    r.add_route("GET", "/zones/{zone_id}/reserve", reserve_page)
    r.add_route("POST", "/zones/{zone_id}/reserve", reserve_set)
    r.add_route("GET", "/zones/{zone_id}/reserve/clear", reserve_clear_status)
    r.add_route("POST", "/zones/{zone_id}/reserve/clear", reserve_clear)
