"""The web console, mounted at ``/console/`` on the control listener.

Server-rendered pages (Jinja2 templates shipped in this package), a few small scripts (htmx for the
job's live task list, uPlot for the Live charts, both vendored under ``static/vendor``). Nothing
is loaded from elsewhere at run time. Pages: sign in, zones, Purge (per zone), a job's tasks,
Tasks (the history), Live, Cache Reserve (per zone), Queues (the account's). See ``guard.py``
for sessions and CSRF.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from edgecache.api.console import live, purge, queues, reserve, tasks
from edgecache.api.console.guard import (
    COOKIE,
    PATH,
    SECURITY_HEADERS,
    SESSION,
    SESSIONS_KEY,
    SIGNIN_COOKIE,
    Handler,
    Refused,
    check_post,
    clear_session_cookie,
    load_session,
    set_session_cookie,
    signed_in,
)
from edgecache.api.console.render import READ, render, reserve_zones, zones_allowing
from edgecache.api.expectations import UNMET, install, routes
from edgecache.control.credentials import is_well_formed_token
from edgecache.control.livestats import LiveStats
from edgecache.control.sessions import SessionService

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SIGNIN_TTL = 3600
"""Seconds the sign-in form stays valid (its double-submit cookie's lifetime)."""


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the session, refuse cross-site POSTs, show errors as pages, add the security headers."""
    static = request.path.startswith(f"{PATH}/static/")
    session = None if static else await load_session(request)
    if session is not None:
        request[SESSION] = session
    try:
        if request.method == "POST":
            await check_post(request)
        response = await handler(request)
    except Refused as exc:
        log.warning(
            "console request refused",
            extra={"event": "console_refused", "path": request.path, "reason": exc.message},
        )
        response = render(
            request, "error.html", {"status": exc.status, "message": exc.message}, status=exc.status
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = render(
            request, "error.html", {"status": exc.status, "message": exc.reason}, status=exc.status
        )
    return _with_headers(response, static=static)


def _with_headers(response: web.StreamResponse, *, static: bool) -> web.StreamResponse:
    """The headers every console answer carries (a page is never stored)."""
    if not static:
        response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    return response


def expectation_failed(request: web.Request) -> web.StreamResponse:
    """The error page, 417: the request's ``Expect`` cannot be met (decision 0030). It is answered
    before this app's middleware runs, so with no session looked up."""
    page = render(
        request, "error.html", {"status": 417, "message": f"Expectation Failed: {UNMET}."}, status=417
    )
    return _with_headers(page, static=False)


async def to_home(request: web.Request) -> web.Response:
    """``/console`` without the slash: the console's home."""
    raise web.HTTPPermanentRedirect(f"{PATH}/")


def _safe_next(target: str) -> str:
    """Where to go after signing in: a console path, never another site."""
    if target.startswith(f"{PATH}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PATH}/"


async def signin_form(request: web.Request) -> web.Response:
    """``GET /console/signin``: the token form."""
    return _signin_page(request, request.query.get("next", ""), "", 200)


def _signin_page(request: web.Request, after: str, error: str, status: int) -> web.Response:
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        {"signin_csrf": nonce, "error": error, "next": _safe_next(after)},
        status=status,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=SIGNIN_TTL,
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    """``POST /console/signin``: exchange an API token for a session."""
    form = await request.post()
    token = str(form.get("token", "")).strip()
    sessions = request.config_dict[SESSIONS_KEY]
    opened = await asyncio.to_thread(sessions.sign_in, token) if is_well_formed_token(token) else None
    if opened is None:
        log.warning(
            "console sign-in refused",
            extra={
                "event": "signin_failed",
                "remote": request.remote,
                "well_formed": is_well_formed_token(token),
            },
        )
        message = "That token is not valid: unknown, revoked or expired."
        return _signin_page(request, str(form.get("next", "")), message, 403)
    session_id, session = opened
    log.info(
        "console sign-in",
        extra={"event": "signin", "principal": session.principal.ref, "token_name": session.principal.label},
    )
    response = web.HTTPSeeOther(_safe_next(str(form.get("next", ""))))
    set_session_cookie(response, request, session_id, max(1, int(session.deadline - time.time())))
    response.del_cookie(SIGNIN_COOKIE, path=PATH)
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    """``POST /console/signout``: end the session."""
    session_id = request.cookies.get(COOKIE, "")
    session = request.get(SESSION)
    if session_id:
        await asyncio.to_thread(request.config_dict[SESSIONS_KEY].sign_out, session_id)
    if session is not None:
        log.info("console sign-out", extra={"event": "signout", "principal": session.principal.ref})
    response = web.HTTPSeeOther(f"{PATH}/signin")
    clear_session_cookie(response)
    raise response


async def home(request: web.Request) -> web.Response:
    """``GET /console/``: the zones this token can see, with what it may do on each."""
    session = signed_in(request)
    readable = zones_allowing(request, session, READ)
    reservable = reserve_zones(request, session)
    # A token that may only change zone settings sees its zones too, with only what it may use.
    shown = {z.config.id: z for z in (*readable, *reservable)}
    return render(
        request,
        "home.html",
        {
            "page": "home",
            "zones": sorted(shown.values(), key=lambda z: z.config.name),
            "purgeable": {z.config.id for z in zones_allowing(request, session, purge.PURGE)},
            "tasks_readable": {z.config.id for z in readable},
            "reservable": {z.config.id for z in reservable},
        },
    )


def build_console_app(sessions: SessionService, live_stats: LiveStats) -> web.Application:
    """The console as a sub-application, to be added at ``/console/``."""
    app = web.Application(middlewares=[console_middleware])
    app[SESSIONS_KEY] = sessions
    app[live.LIVE_KEY] = live_stats
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("edgecache.api.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    r = routes(app)
    # The console's own path without the slash: a route of this app, not of the one it is added
    # to, so that everything under /console is answered in the console's dialect (its 417 too).
    r.add_route("GET", "", to_home)
    r.add_route("GET", "/", home)
    r.add_route("GET", "/signin", signin_form)
    r.add_route("POST", "/signin", signin)
    r.add_route("POST", "/signout", signout)
    purge.add_routes(app)
    tasks.add_routes(app)
    live.add_routes(app)
    reserve.add_routes(app)
    queues.add_routes(app)
    static = r.add_static("/static", HERE / "static", append_version=True)
    env.globals["asset"] = lambda name: str(static.url_for(filename=name))
    install(app, expectation_failed, root=False)
    app.on_shutdown.append(live.close_streams)
    return app
