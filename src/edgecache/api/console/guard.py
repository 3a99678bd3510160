"""The console's door: the session cookie, CSRF checks, and headers on every answer.

Rules:
- The session id travels only in the ``edgecache_console`` cookie: ``HttpOnly`` (scripts cannot
  read it), ``SameSite=Strict`` (other sites' pages do not send it), ``Path=/console``, ``Secure``
  when the console is served over TLS, and ``Max-Age`` the session's remaining lifetime.
- Every POST must come from a page of this origin: when the browser says where it comes from
  (``Sec-Fetch-Site``, ``Origin``) it must be this origin; and it must carry the CSRF token of its
  session in the ``csrf`` field (sign-in, which has no session yet, carries the value of a
  short-lived ``edgecache_signin`` cookie instead: double submit). A refused POST changes nothing.
- Pages are never cached and never framed; scripts and styles load only from this origin.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from edgecache.control.sessions import Session, SessionService

COOKIE = "edgecache_console"
SIGNIN_COOKIE = "edgecache_signin"
PATH = "/console"
SESSIONS_KEY = web.AppKey("sessions", SessionService)
SESSION = web.RequestKey("console_session", Session)
"""Request key of the signed-in :class:`Session` (absent when nobody is signed in)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request the console refuses (CSRF, foreign origin); ``status`` and a message to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def same_origin(request: web.Request) -> bool:
    """Whether the browser's own account of where this request comes from is this origin.

    ``Sec-Fetch-Site`` (sent by current browsers, not settable by pages) must be ``same-origin``;
    ``Origin``, when present, must equal this origin. Clients that send neither (curl) pass here
    and still need the CSRF token.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def check_post(request: web.Request) -> None:
    """Refuse a POST that is cross-origin or lacks the right CSRF token."""
    if not same_origin(request):
        raise Refused(403, "This form was sent from another site; nothing was changed.")
    form = await request.post()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not sent:
        raise Refused(403, "The form is missing its security token; reload the page and try again.")
    session = request.get(SESSION)
    if session is not None:
        if session.csrf_matches(sent):
            return
    else:
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        if expected and hmac.compare_digest(expected.encode(), sent.encode()):
            return
    raise Refused(403, "The form's security token is not valid; reload the page and try again.")


async def load_session(request: web.Request) -> Session | None:
    """The session named by the request's cookie, or None."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    return await asyncio.to_thread(request.config_dict[SESSIONS_KEY].find, session_id)


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, session_id: str, max_age: int
) -> None:
    """Hand the session id to the browser."""
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    """Tell the browser to forget the session id."""
    response.del_cookie(COOKIE, path=PATH)


def signed_in(request: web.Request) -> Session:
    """The signed-in session; a page without one redirects to the sign-in form."""
    if SESSION in request:
        return request[SESSION]
    raise web.HTTPSeeOther(f"{PATH}/signin?" + urlencode({"next": request.rel_url.path_qs}))
