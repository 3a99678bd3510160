"""Cloudflare v4 authentication: API tokens (``Authorization: Bearer``) and the legacy
``X-Auth-Email`` + ``X-Auth-Key`` pair, with the real API's error codes.

Rules, in the order they are applied (reference ``cloudflare-api.md`` §1.4 to 1.5):
- ``X-Auth-Email``/``X-Auth-Key`` win when either is present (the SDK sends them instead of a
  token when both are configured). A malformed email or key is 400/6003 with 6102 or 6103 chained.
- Otherwise ``Authorization`` must be ``Bearer <40 url-safe characters>``, else 400/6003 with 6111.
- No credential at all is 400/9106. A well-formed credential that is unknown, revoked or expired is
  403/10000, the same answer as for a credential that lacks the permission: callers cannot tell
  which, as with Cloudflare.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from edgecache.api.cloudflare.envelope import CfError
from edgecache.control.credentials import (
    CredentialService,
    Principal,
    is_well_formed_email,
    is_well_formed_global_key,
    is_well_formed_token,
)


def missing() -> CfError:
    """400/9106: no credentials at all. A new error per refusal: one shared exception object would
    gather every raise's frames in its traceback (and with them each request's fields and body)."""
    return CfError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")


def denied() -> CfError:
    """403/10000: unknown credential, or one without the permission for this resource."""
    return CfError(403, 10000, "Authentication error")


def _malformed(code: int, what: str) -> CfError:
    return CfError(400, 6003, "Invalid request headers", chain=[(code, f"Invalid format for {what} header")])


async def authenticate(request: web.Request, credentials: CredentialService) -> Principal:
    """The caller of ``request``, or a :class:`CfError` to answer with."""
    return await caller(request.headers, credentials)


async def caller(headers: Mapping[str, str], credentials: CredentialService) -> Principal:
    """The caller who sent ``headers`` (a request's, looked up case-insensitively), or a
    :class:`CfError` to answer with."""
    email = headers.get("X-Auth-Email")
    key = headers.get("X-Auth-Key")
    if email is not None or key is not None:
        if email is None or not is_well_formed_email(email.strip()):
            raise _malformed(6102, "X-Auth-Email")
        if key is None or not is_well_formed_global_key(key.strip()):
            raise _malformed(6103, "X-Auth-Key")
        principal = await asyncio.to_thread(credentials.verify_global_key, email.strip(), key.strip())
    else:
        auth = headers.get("Authorization")
        if auth is None:
            raise missing()
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not is_well_formed_token(token):
            raise _malformed(6111, "Authorization")
        principal = credentials.cached_token(token) or await asyncio.to_thread(
            credentials.verify_token, token
        )
    if principal is None:
        raise denied()
    return principal
