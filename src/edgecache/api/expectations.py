"""``Expect`` on the control listener: met when it is ``100-continue``, else refused in the dialect.

Why (decision 0030): aiohttp runs a route's expect handler before any middleware, so a dialect's
error middleware never sees what the handler answers. Its default handler answers an expectation
other than ``100-continue`` with a text/plain 417 (no envelope), and one whose bytes are not
UTF-8 with a 500: the header arrives surrogate-escaped and the 417's text cannot be encoded.

Rules:
- Every route of the control listener's applications is added through :func:`routes`, which gives
  it :func:`meet` as its expect handler; nothing else names it.
- ``100-continue``, in any case, is met as aiohttp meets it: the interim 100 is written once, to an
  HTTP/1.1 client only (an HTTP/1.0 one goes on without it, RFC 9110 §10.1.1).
- Any other value, undecodable bytes included, is answered 417 by the application's refusal
  (:data:`REFUSAL`, set by :func:`install`) before any middleware, handler, token check or read
  of the body runs, so it changes nothing. The 417 closes the connection (once aiohttp has read
  the body announced, for at most its lingering time): a client may withhold that body, and what it
  sent next must not be answered as a request.
- A path no route matches is refused the same way: :func:`install` adds a resource that matches
  any path only for such a request (every other unmatched request is aiohttp's 404 or 405, as
  before). Without it aiohttp's own handler would answer, with the same 500. The router must reach
  it: for a non-empty path the resource sits at the application's root in aiohttp's index, which
  the router looks at for every path, and a sub-application's copy is reached from inside it; the
  empty path, which the index is never looked at for, has a resource of its own (:class:`_Pathless`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import HttpVersion11, hdrs, web

# _InfoDict: the type aiohttp's resources describe themselves with; it exports no public name for it.
from aiohttp.web_urldispatcher import MatchedSubAppResource, _InfoDict
from yarl import URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refusal = Callable[[web.Request], web.StreamResponse]
"""The 417 of a dialect: its error shape, for a request whose expectation cannot be met."""

REFUSAL: web.AppKey[Refusal] = web.AppKey("expect_refusal")

CONTINUE = "100-continue"
UNMET = "only the expectation 100-continue can be met"
"""The reason every dialect's refusal gives (the value itself may not be printable)."""


def unmet(request: web.Request) -> bool:
    """Whether the request carries an expectation this server does not meet. An empty ``Expect``
    is none: aiohttp calls no expect handler for it."""
    value = request.headers.get(hdrs.EXPECT, "")
    return bool(value) and value.lower() != CONTINUE


async def meet(request: web.Request) -> web.StreamResponse | None:
    """The expect handler of every control route: None (go on) once ``100-continue`` is met, else
    the application's refusal."""
    if unmet(request):
        refusal = request.app[REFUSAL](request)
        # The client may withhold its body after a 417 (RFC 9110 §10.1.1): on an open connection
        # what it sends next would be read as that body.
        refusal.force_close()
        return refusal
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # As aiohttp's own handler: the interim answer is not part of the response's size.
        request.writer.output_size = 0
    return None


class Routes:
    """``app.router``'s ways of adding a route, each route with :func:`meet` as its expect handler."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        self._router = router

    def add_route(self, method: str, path: str, handler: Handler) -> web.AbstractRoute:
        """A route for ``method`` (``*``: any) at ``path``; ``GET`` answers ``HEAD`` too, as
        aiohttp's ``add_get`` does."""
        if method == hdrs.METH_GET:
            return self._router.add_get(path, handler, expect_handler=meet)
        return self._router.add_route(method, path, handler, expect_handler=meet)

    def add_static(self, prefix: str, directory: Path, **kwargs: Any) -> web.AbstractResource:
        """Files under ``directory`` at ``prefix`` (``kwargs`` as aiohttp's ``add_static``)."""
        return self._router.add_static(prefix, directory, expect_handler=meet, **kwargs)


def routes(app: web.Application) -> Routes:
    """Where every route of a control application is added."""
    return Routes(app.router)


def install(app: web.Application, refusal: Refusal, *, root: bool) -> None:
    """Make ``refusal`` the 417 of ``app``'s routes, and refuse an unmet expectation on a path no
    route of ``app`` matches; ``root`` for the application that is served, not added to another as
    a sub-application: only there can a request's path be empty. Where among the routes the
    resources go does not matter: whichever matches first, the answer is ``app``'s refusal."""
    app[REFUSAL] = refusal
    app.router.register_resource(_Unmatched())
    if root:
        app.router.register_resource(_Pathless())


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """The handler of :class:`_Unmatched`'s route. :func:`meet` answers every request that resource
    matches before this could run; should it run, the path has no route."""
    raise web.HTTPNotFound()


class _Unmatched(web.AbstractResource):
    """Any path, for a request with an unmet expectation only. Its canonical path is the
    application's root, so aiohttp's router reaches it for every non-empty path once no route of a
    longer path has matched; a sub-application's copy is reached from inside that sub-application."""

    def __init__(self) -> None:
        # Not super(): in _Pathless the next class is MatchedSubAppResource, whose __init__ wants
        # an application this resource has not got.
        web.AbstractResource.__init__(self)
        self._prefix = ""
        self._route = web.ResourceRoute(hdrs.METH_ANY, _unmatched, self, expect_handler=meet)

    @property
    def canonical(self) -> str:
        return self._prefix or "/"

    def url_for(self, *args: str, **kwargs: str) -> URL:
        raise RuntimeError("the resource of unmatched paths has no URL")

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        if not unmet(request):
            return None, set()
        return web.UrlMappingMatchInfo({}, self._route), set()

    def add_prefix(self, prefix: str) -> None:
        self._prefix = prefix + self._prefix

    def get_info(self) -> _InfoDict:
        return {"prefix": self.canonical}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        yield self._route


class _Pathless(_Unmatched, MatchedSubAppResource):
    """The empty path (``GET http://host HTTP/1.1``, ``CONNECT host:port``), for a request with an
    unmet expectation only. aiohttp's router looks up no indexed resource for an empty path, so
    :class:`_Unmatched` is never reached; it does ask every resource of this kind (made for
    ``add_domain``), first, whatever the path."""

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        if request.rel_url.path_safe:
            return None, set()
        return await super().resolve(request)
