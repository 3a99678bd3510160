"""``/zones/{zone_id}/cache/cache_reserve`` and ``.../cache_reserve_clear``: the wire format.

Validation order: auth → zone (7003) → permission (10000: zone_settings_read for GETs, write for
changes) → body → domain rules (1152, 1153, 1142). Those three are 400, not 409: the SDK retries
409 twice (reference ``cloudflare-api.md`` §3.5). ``POST .../cache_reserve_clear`` ignores its body,
which the SDK sends empty with a JSON content type. Times are RFC 3339 with microseconds and "Z".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.auth import authenticate, denied
from edgecache.api.cloudflare.envelope import CfError, no_route, success
from edgecache.api.cloudflare.purge import zone_for
from edgecache.api.context import CONTEXT_KEY
from edgecache.api.jsonbody import BadJson, load_json
from edgecache.control.cache_reserve import (
    CacheReserveService,
    ClearProgress,
    ClearWhileOn,
    EnableWhileClearing,
    NeverCleared,
    ReserveRejected,
)
from edgecache.control.credentials import Permission
from edgecache.edge.zones import ZoneRuntime

CODES = {ClearWhileOn: 1152, EnableWhileClearing: 1153, NeverCleared: 1142}
VIEW = (Permission.ZONE_SETTINGS_READ, Permission.ZONE_SETTINGS_WRITE)
"""Who may see a zone's Cache Reserve setting and clear."""
CHANGE = (Permission.ZONE_SETTINGS_WRITE,)
"""Who may turn it on or off, and clear it."""
VALUES = ("on", "off")
BAD_VALUE = 'Invalid value for zone setting cache_reserve: "value" must be "on" or "off"'


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _service(request: web.Request, *allowed: Permission) -> tuple[CacheReserveService, ZoneRuntime]:
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticate(request, ctx.credentials)
    zone = zone_for(request)
    cfg = zone.config
    if not any(principal.allows(p, cfg.id, cfg.account_id) for p in allowed):
        raise denied()
    if ctx.cache_reserve is None:
        raise no_route(request.path)
    return ctx.cache_reserve, zone


def _rejected(exc: ReserveRejected) -> CfError:
    return CfError(400, CODES[type(exc)], str(exc))


def _setting(value: str, modified_on: datetime | None) -> dict[str, Any]:
    return {"id": "cache_reserve", "editable": True, "value": value, "modified_on": _time(modified_on)}


def _clear(progress: ClearProgress) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "cache_reserve_clear",
        "state": progress.state,
        "start_ts": _time(progress.start),
    }
    if progress.end is not None:
        out["end_ts"] = _time(progress.end)
    return out


async def get_setting(request: web.Request) -> web.Response:
    """The zone's Cache Reserve setting."""
    service, zone = await _service(request, *VIEW)
    return success(_setting(*service.setting(zone.config.id)))


async def edit_setting(request: web.Request) -> web.Response:
    """Turn the zone's Cache Reserve on or off."""
    service, zone = await _service(request, *CHANGE)
    try:
        body = load_json(await request.read())
    except BadJson as exc:
        raise CfError(400, 6007, f"Malformed JSON in request body: {exc}") from exc
    value = body.get("value") if isinstance(body, dict) else None
    if value not in VALUES:
        raise CfError(400, 1007, BAD_VALUE)
    try:
        return success(_setting(*await service.set(zone.config.id, value)))
    except ReserveRejected as exc:
        raise _rejected(exc) from exc


async def start_clear(request: web.Request) -> web.Response:
    """Start removing the zone's Cache Reserve objects (the reserve must be off)."""
    service, zone = await _service(request, *CHANGE)
    try:
        return success(_clear(await service.clear(zone.config.id)))
    except ReserveRejected as exc:
        raise _rejected(exc) from exc


async def clear_status(request: web.Request) -> web.Response:
    """The zone's latest Cache Reserve clear."""
    service, zone = await _service(request, *VIEW)
    try:
        return success(_clear(service.status(zone.config.id)))
    except ReserveRejected as exc:
        raise _rejected(exc) from exc
