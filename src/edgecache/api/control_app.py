"""The control listener: the HTTP application that carries the APIs and ``/metrics``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    """Liveness: the node's event loop answers."""
    return web.json_response({"status": "ok"})


def build_control_app(registry: CollectorRegistry) -> web.Application:
    """The control-plane application."""
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    return app
