"""The Live page: the node's traffic, cache and purge figures, one sample a second over
server-sent events.

The figures are the node's (every zone together), the same ones ``/metrics`` on this listener
shows without authentication; any signed-in user may watch them (decision 0011).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from edgecache.api.console.guard import SESSION, signed_in
from edgecache.api.console.render import render
from edgecache.api.expectations import routes
from edgecache.control.livestats import LiveStats

LIVE_KEY = web.AppKey("live", LiveStats)
STREAMS_KEY: web.AppKey[set[EventSourceResponse]] = web.AppKey("live_streams")


async def live_page(request: web.Request) -> web.Response:
    """``GET /console/live``."""
    signed_in(request)
    return render(request, "live.html", {"page": "live"})


async def live_events(request: web.Request) -> web.StreamResponse:
    """``GET /console/live/events``: ``history`` once (the samples kept so far), then a
    ``sample`` event every second."""
    if request.get(SESSION) is None:
        raise web.HTTPUnauthorized(reason="Sign in to watch the live figures.")
    stats = request.config_dict[LIVE_KEY]
    queue = stats.subscribe()
    try:
        async with sse_response(request) as stream:
            streams = request.app[STREAMS_KEY]
            streams.add(stream)
            closed = asyncio.ensure_future(stream.wait())
            try:
                await stream.send(json.dumps([s.as_json() for s in stats.history]), event="history")
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait((getter, closed), return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        break
                    await stream.send(json.dumps(getter.result().as_json()), event="sample")
            except ConnectionError:
                pass
            finally:
                closed.cancel()
                streams.discard(stream)
    finally:
        stats.unsubscribe(queue)
    return stream


async def close_streams(app: web.Application) -> None:
    """At shutdown: end every open stream, so the listener can close without waiting for them."""
    streams = app[STREAMS_KEY]
    for stream in tuple(streams):
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            stream.stop_streaming()
    await app[LIVE_KEY].stop()


def add_routes(app: web.Application) -> None:
    """Register the live routes."""
    r = routes(app)
    app[STREAMS_KEY] = set()
    r.add_route("GET", "/live", live_page)
    r.add_route("GET", "/live/events", live_events)
