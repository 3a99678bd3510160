"""The control listener: the HTTP application that carries the APIs and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from edgecache.api import native
from edgecache.api.cloudflare import routes as cloudflare
from edgecache.api.context import CONTEXT_KEY, ControlContext
from edgecache.api.edgeone import dispatch as edgeone_api
from edgecache.api.expectations import install, routes

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
    edgeone: edgeone_api.EdgeOneServices,
    console: web.Application | None = None,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """The control-plane application: Cloudflare v4 under ``/client/v4`` (and ``/zones/...``),
    EdgeOne API 3.0 at ``POST /``, metrics (gathered by ``refresh_metrics`` first, when the
    node's counters live in other processes) and health, and the web console under ``/console/``."""
    app = web.Application(
        middlewares=[cloudflare.envelope_errors, native.native_errors], client_max_size=MAX_BODY
    )
    app[REGISTRY_KEY] = registry
    if refresh_metrics is not None:
        app[REFRESH_KEY] = refresh_metrics
    app[CONTEXT_KEY] = context
    r = routes(app)
    r.add_route("GET", "/metrics", metrics)
    r.add_route("GET", "/healthz", health)
    cloudflare.add_routes(app)
    native.add_routes(app)
    edgeone_api.add_routes(app, edgeone)
    if console is not None:
        app.add_subapp("/console/", console)
    install(app, expectation_failed, root=True)
    return app


def expectation_failed(request: web.Request) -> web.StreamResponse:
    """The 417 of a path of this app, in the shape its other refusals have: the native API's under
    its prefix, EdgeOne's at ``/``, the v4 envelope anywhere else (as for an unknown route)."""
    if native.owns(request.path):
        return native.expectation_failed(request)
    if request.path == "/":
        return edgeone_api.expectation_failed(request)
    return cloudflare.expectation_failed(request)
