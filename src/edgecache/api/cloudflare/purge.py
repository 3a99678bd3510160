"""``/zones/{zone_id}/purge_cache`` and ``/zones/{zone_id}/invalidate_cache``: the wire format.

Validation order (reference ``cloudflare-api.md`` §2.7, "recommended validation order"): auth →
zone exists and is accessible (7003/10000) → body is a JSON object → exactly-one-field rule
(1012/1092/1013) → array types (1014) → per-plan item counts (1094/1101/1111) → each item (1100,
1114/1115, 1082) → the account's token bucket (429/1134) → 200 ``{"id": <job id>}``.

Combinations: ``purge_everything`` must be alone and ``true``; ``tags``, ``hosts`` and ``prefixes``
may be combined (the historical API accepted it; they are ORed); ``files`` must be alone.
The answer's ``id`` is the purge's own job id (Cloudflare answers with the zone id; a 32-hex
string either way, and ours lets the tasks API find the purge).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from edgecache.api.cloudflare.auth import caller, denied
from edgecache.api.cloudflare.envelope import CfError, no_route, success_id
from edgecache.api.context import CONTEXT_KEY, ControlContext
from edgecache.api.jsonbody import BadJson, load_json
from edgecache.control.credentials import Permission
from edgecache.control.purges import (
    FileTarget,
    HostTooLong,
    InvalidHost,
    InvalidPrefix,
    InvalidTag,
    InvalidUrl,
    PurgeRejected,
    PurgeRequest,
    RateLimited,
    TagTooLong,
    TooManyItems,
)
from edgecache.control.quotas import QuotaExceeded
from edgecache.control.ratelimit import retry_after
from edgecache.edge.zones import ZoneRuntime, ZoneTable
from edgecache.purge.selectors import Mode

ZONE_ID = re.compile(r"^[0-9a-f]{32}$")
FIELDS = ("purge_everything", "files", "tags", "hosts", "prefixes")
FLEX_FIELDS = ("tags", "hosts", "prefixes")
MSG_1012 = 'Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"'
TOO_MANY_CODES = {"files": 1094, "tags": 1101, "hosts": 1111, "prefixes": 1101}


def _bad(code: int, message: str) -> CfError:
    return CfError(400, code, message)


def parse_body(raw: bytes) -> PurgeRequest:
    """The request body as a :class:`PurgeRequest`, or the v4 error for it."""
    try:
        body = load_json(raw)
    except BadJson as exc:
        raise _bad(6007, f"Malformed JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad(1012, MSG_1012)
    present = [f for f in FIELDS if f in body]
    if not present:
        raise _bad(1012, MSG_1012)
    if "purge_everything" in present:
        if len(present) > 1:
            raise _bad(
                1092, "Request cannot contain 'purge_everything' and any of 'files', 'tags', or 'hosts'"
            )
        if body["purge_everything"] is not True:
            raise _bad(1013, "'purge_everything' must be true")
        return PurgeRequest(everything=True)
    if "files" in present and len(present) > 1:
        raise _bad(1012, 'Request must contain only one of "files" or "tags", "hosts", "prefixes"')
    for name in present:
        if not isinstance(body[name], list):
            raise _bad(1014, '"files", "tags", or "hosts" must be an array')
        if not body[name]:
            raise _bad(1012, MSG_1012)
    if "files" in present:
        return PurgeRequest(files=tuple(_file(item) for item in body["files"]))
    # Only the fields present are checked (in FLEX_FIELDS' order, which ``present`` keeps): an
    # absent one is an empty list, which passes.
    lists: dict[str, tuple[str, ...]] = dict.fromkeys(FLEX_FIELDS, ())
    for name in present:
        items = body[name]
        # A loop rather than ``all`` over a generator: no generator to make and resume per item.
        for i in items:
            if not isinstance(i, str):
                raise _bad(1014, f'"{name}" must be an array of strings')
        lists[name] = tuple(items)
    return PurgeRequest(tags=lists["tags"], hosts=lists["hosts"], prefixes=lists["prefixes"])


def _file(item: Any) -> FileTarget:
    if isinstance(item, str):
        return FileTarget(item)
    if isinstance(item, dict) and isinstance(item.get("url"), str):
        headers = item.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise _bad(1012, '"files[].headers" must be an object of header names to string values')
        return FileTarget(item["url"], headers or None)
    raise _bad(1012, MSG_1012)


def rejected(exc: PurgeRejected) -> CfError:
    """The v4 error for a domain rejection."""
    match exc:
        case TooManyItems(kind=kind):
            return _bad(TOO_MANY_CODES[kind], exc.message)
        case TagTooLong() | InvalidTag():
            return _bad(1100, exc.message)
        case HostTooLong():
            return _bad(1114, exc.message)
        case InvalidHost() | InvalidPrefix():
            return _bad(1115, exc.message)
        case InvalidUrl():
            return _bad(1082, exc.message)
        case RateLimited(retry_after=wait):
            return CfError(429, 1134, exc.message, headers={"Retry-After": str(retry_after(wait))})
    return _bad(1012, exc.message)


QUOTA_KIND = {
    "purge_url": "files",
    "purge_cache_tag": "tags",
    "purge_host": "hosts",
    "purge_prefix": "prefixes",
    "purge_all": "tags",
}


def quota_error(exc: QuotaExceeded) -> CfError:
    """A zone quota: too many items in one request is a 400 like the plan's item limits; the daily
    cap is a 429 whose Retry-After runs to the next UTC midnight, when it resets."""
    if exc.kind == "batch":
        return _bad(TOO_MANY_CODES[QUOTA_KIND[exc.task_type]], f"Unable to purge: {exc}")
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    wait = str(max(1, int((midnight - now).total_seconds())))
    return CfError(429, 1134, f"Unable to purge: {exc}", headers={"Retry-After": wait})


def zone_for(request: web.Request) -> ZoneRuntime:
    """The zone named in the path, or 7003 for an identifier that names no zone."""
    return zone_named(request.app[CONTEXT_KEY].zones, request.match_info["zone_id"], request.path)


def zone_named(zones: ZoneTable, zone_id: str, path: str) -> ZoneRuntime:
    """The zone ``zone_id`` names, or 7003 (about ``path``) for an identifier that names none."""
    zone = zones.by_id.get(zone_id) if ZONE_ID.match(zone_id) else None
    if zone is None:
        raise no_route(path)
    return zone


MODES = {"purge_cache": Mode.DELETE, "invalidate_cache": Mode.INVALIDATE}
"""The purge routes' last path segment and the mode each asks for (the control listener matches
its own route from this)."""


async def accept(
    ctx: ControlContext,
    headers: Mapping[str, str],
    zone_id: str,
    path: str,
    read_body: bytes | Callable[[], Awaitable[bytes]],
    mode: Mode,
) -> str:
    """Decide a purge request and, accepted, write it durably: returns its job id, or raises the
    :class:`CfError` to answer with (nothing charged or written then). The one decision for both
    listeners of the route: the aiohttp handler below and the control listener's own
    (``api/control_listener.py``). ``read_body`` is called only once the caller may purge the zone:
    the aiohttp handler reads no body of a caller it refuses; the control listener has the body
    (at most 64 KiB: it leaves longer ones to aiohttp) buffered before it calls this, passes the
    bytes themselves, and they are dropped unparsed."""
    principal = await caller(headers, ctx.credentials)
    zone = zone_named(ctx.zones, zone_id, path)
    if not principal.allows(Permission.CACHE_PURGE, zone.config.id, zone.config.account_id):
        raise denied()
    req = parse_body(read_body if isinstance(read_body, bytes) else await read_body())
    try:
        items = ctx.purges.items(zone, req)
        accepted = await ctx.purges.submit(
            zone, mode, items, req, principal=principal.ref, dialect="cloudflare", rate_limited=True
        )
    except PurgeRejected as exc:
        raise rejected(exc) from exc
    except QuotaExceeded as exc:
        raise quota_error(exc) from exc
    return accepted.job_id


async def _purge(request: web.Request, mode: Mode) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    return success_id(
        await accept(ctx, request.headers, request.match_info["zone_id"], request.path, request.read, mode)
    )


async def purge_cache(request: web.Request) -> web.Response:
    """Hard purge: matched entries are deleted; the next request is a MISS."""
    return await _purge(request, MODES["purge_cache"])


async def invalidate_cache(request: web.Request) -> web.Response:
    """Soft purge: matched entries are stale; the next request revalidates (REVALIDATED/EXPIRED)."""
    return await _purge(request, MODES["invalidate_cache"])
