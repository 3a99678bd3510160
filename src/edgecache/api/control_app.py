"""The control listener: the HTTP application that carries the APIs and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from edgecache.api.cloudflare.routes import add_routes, envelope_errors
from edgecache.api.context import CONTEXT_KEY, ControlContext
from edgecache.api.edgeone.dispatch import EdgeOneServices
from edgecache.api.edgeone.dispatch import add_routes as add_edgeone_routes
from edgecache.api.native import add_routes as add_native_routes
from edgecache.api.native import native_errors

MAX_BODY = 4 * 1024 * 1024
"""The largest request body the control listener reads (aiohttp's ``client_max_size``)."""
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
REFRESH_KEY = web.AppKey("refresh_metrics", object)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    refresh = request.app.get(REFRESH_KEY)
    if callable(refresh):
        await refresh()
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    """Liveness: the node's event loop answers."""
    return web.json_response({"status": "ok"})


def build_control_app(
    registry: CollectorRegistry,
    context: ControlContext,
    edgeone: EdgeOneServices,
    console: web.Application | None = None,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """The control-plane application: Cloudflare v4 under ``/client/v4`` (and ``/zones/...``),
    EdgeOne API 3.0 at ``POST /``, metrics (gathered by ``refresh_metrics`` first, when the
    node's counters live in other processes) and health, and the web console under ``/console/``."""
    app = web.Application(middlewares=[envelope_errors, native_errors], client_max_size=MAX_BODY)
    app[REGISTRY_KEY] = registry
    if refresh_metrics is not None:
        app[REFRESH_KEY] = refresh_metrics
    app[CONTEXT_KEY] = context
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    add_routes(app)
    add_native_routes(app)
    add_edgeone_routes(app, edgeone)
    if console is not None:
        app.router.add_get("/console", to_console)
        app.add_subapp("/console/", console)
    return app


async def to_console(request: web.Request) -> web.Response:
    """``/console`` without the slash: the console's home."""
    raise web.HTTPPermanentRedirect("/console/")
