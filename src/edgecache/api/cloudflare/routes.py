"""Mounting the v4 dialect: every route under ``/client/v4`` and, as the SDK allows, at ``/``.

Rules: every answer on these paths is the JSON envelope, errors included; an unknown route or an
unsupported method on a known one is 400 with 7003/7000, as the real API answers. A body over the
listener's size limit is 413 with code 6008 (ours: the real API answers from its edge with an HTML
page, no code; 6008 sits next to 6007, "Malformed JSON in request body").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgecache.api.cloudflare import cache_reserve, openapi, purge, queues, subscriptions
from edgecache.api.cloudflare.envelope import CfError, failure, internal_error, no_route
from edgecache.api.expectations import UNMET, routes

log = logging.getLogger(__name__)

PREFIXES = ("/client/v4", "")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    """Register the v4 routes on ``app`` under both prefixes."""
    r = routes(app)
    for prefix in PREFIXES:
        # The names are purge.MODES's (the control listener matches the same routes from it).
        r.add_route("POST", prefix + "/zones/{zone_id}/purge_cache", purge.purge_cache)
        r.add_route("DELETE", prefix + "/zones/{zone_id}/purge_cache", purge.purge_cache)
        r.add_route("POST", prefix + "/zones/{zone_id}/invalidate_cache", purge.invalidate_cache)
        r.add_route("GET", prefix + "/zones/{zone_id}/cache/cache_reserve", cache_reserve.get_setting)
        r.add_route("PATCH", prefix + "/zones/{zone_id}/cache/cache_reserve", cache_reserve.edit_setting)
        r.add_route("POST", prefix + "/zones/{zone_id}/cache/cache_reserve_clear", cache_reserve.start_clear)
        r.add_route("GET", prefix + "/zones/{zone_id}/cache/cache_reserve_clear", cache_reserve.clear_status)
        r.add_route("GET", prefix + "/openapi.json", openapi.document)
        queues.add_routes(app, prefix)
        subscriptions.add_routes(app, prefix)


def expectation_failed(request: web.Request) -> web.Response:
    """417/6003 in the envelope, shaped as the other refused headers are: the request's ``Expect``
    cannot be met (decision 0030). The real API has no code of its own for ``Expect``, so the
    chained detail repeats 6003."""
    return failure(
        CfError(417, 6003, "Invalid request headers", chain=[(6003, f"Invalid Expect header: {UNMET}")])
    )


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error on an API path into the v4 failure envelope."""
    try:
        return await handler(request)
    except CfError as err:
        return failure(err)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return failure(no_route(request.path))
    except web.HTTPRequestEntityTooLarge:
        return failure(
            CfError(413, 6008, f"Request body too large: the limit is {request.client_max_size} bytes")
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("control-plane request failed: %s %s", request.method, request.path)
        return failure(internal_error())
