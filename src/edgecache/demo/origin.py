"""The built-in demo origin: a small site whose pages exercise what the cache does.

Every page says in its body which caching headers it sends, so a newcomer can read what to expect
next to ``CF-Cache-Status``. Product pages carry ``Cache-Tag`` so that tag purges can be tried.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from email.utils import formatdate

from aiohttp import web

LARGE_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024
PRODUCTS = 20
BOOT = time.time()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _page(
    request: web.Request, body: str, *, cache_control: str, tags: str | None = None, **extra: str
) -> web.Response:
    data = body.encode()
    headers = {
        "Cache-Control": cache_control,
        "ETag": _etag(data),
        "Last-Modified": formatdate(BOOT, usegmt=True),
        **extra,
    }
    if tags:
        headers["Cache-Tag"] = tags
    etag = headers["ETag"]
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="text/html", charset="utf-8", headers=headers)


async def index(request: web.Request) -> web.Response:
    """The demo's home page, cached for a minute."""
    links = "".join(f'<li><a href="/products/{i}">product {i}</a></li>' for i in range(1, 6))
    body = (
        "<h1>edgecache demo origin</h1><p>Cache-Control: public, max-age=60; Cache-Tag: demo, home</p>"
        f"<ul>{links}<li><a href='/static/app.css'>app.css</a></li><li><a href='/slow'>slow</a></li>"
        "<li><a href='/large'>large (4 MiB)</a></li><li><a href='/time'>time</a></li></ul>"
    )
    return _page(request, body, cache_control="public, max-age=60", tags="demo,home")


async def product(request: web.Request) -> web.Response:
    """Tagged product pages: purge one with tag ``product-N`` or all with ``products``."""
    n = int(request.match_info["n"])
    if not 1 <= n <= PRODUCTS:
        raise web.HTTPNotFound(text="no such product\n", headers={"Cache-Control": "public, max-age=30"})
    body = f"<h1>product {n}</h1><p>Cache-Control: public, max-age=300; Cache-Tag: products, product-{n}</p>"
    return _page(request, body, cache_control="public, max-age=300", tags=f"demo,products,product-{n}")


async def update_product(request: web.Request) -> web.Response:
    """POST to a product: the cache invalidates that URL (RFC 9111 §4.4)."""
    return web.Response(text=f"product {request.match_info['n']} updated\n")


async def stylesheet(request: web.Request) -> web.Response:
    """A long-lived static asset."""
    body = "body { font-family: sans-serif; }\n"
    resp = _page(request, body, cache_control="public, max-age=86400, immutable", tags="demo,static")
    resp.content_type = "text/css"
    return resp


async def slow(request: web.Request) -> web.Response:
    """Two seconds to answer: shows request coalescing and the value of a HIT."""
    await asyncio.sleep(2.0)
    return _page(
        request,
        "<h1>slow page</h1><p>took 2 s at the origin</p>",
        cache_control="public, max-age=120",
        tags="demo,slow",
    )


async def clock(request: web.Request) -> web.Response:
    """The origin's time, fresh for 10 s then served stale for 30 s while revalidated."""
    return _page(
        request,
        f"<h1>origin time {time.time():.3f}</h1>",
        cache_control="public, max-age=10, stale-while-revalidate=30, stale-if-error=300",
        tags="demo,time",
    )


async def private(request: web.Request) -> web.Response:
    """Never stored by a shared cache."""
    return web.Response(text="private page\n", headers={"Cache-Control": "private, max-age=60"})


async def large(request: web.Request) -> web.StreamResponse:
    """A 4 MiB body sent in chunks: the cache streams it to the client while storing it."""
    resp = web.StreamResponse(
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(LARGE_BYTES),
            "Cache-Tag": "demo,large",
        }
    )
    await resp.prepare(request)
    block = b"x" * CHUNK
    for _ in range(LARGE_BYTES // CHUNK):
        await resp.write(block)
    await resp.write_eof()
    return resp


def build_app() -> web.Application:
    """The demo origin's routes."""
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/products/{n:\\d+}", product)
    app.router.add_post("/products/{n:\\d+}", update_product)
    app.router.add_get("/static/app.css", stylesheet)
    app.router.add_get("/slow", slow)
    app.router.add_get("/time", clock)
    app.router.add_get("/private", private)
    app.router.add_get("/large", large)
    return app


async def start(host: str, port: int) -> web.AppRunner:
    """Start the demo origin; returns its runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


DEMO_PATHS = ("/", "/products/1", "/static/app.css", "/time", "/slow", "/large", "/private")
