"""The origin client: one pooled aiohttp session per node, responses streamed, never decoded.

Rules of this module:
- What goes to the origin is the client's request minus hop-by-hop fields and minus our own control
  fields (credentials of the control plane, internal ``x-edgecache-*`` fields), plus the standard
  forwarding fields (``X-Forwarded-For``/``-Proto``/``-Host``, ``Via``).
- Bodies are never decompressed or re-encoded: the cache stores what the origin sent.
- Failures are typed: :class:`OriginUnreachable` (connection refused/reset, DNS, or an invalid
  response such as a status code outside 100..599) maps to 502,
  :class:`OriginTimeout` to 504. The caller decides about stale-if-error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from edgecache.httpcache.headers import HOP_BY_HOP

CONTROL_HEADERS = frozenset({"x-auth-key", "x-auth-email", "x-auth-user-service-key", "cf-connecting-ip"})
"""Request fields that carry control-plane credentials or that only we may set: never forwarded."""

CHUNK = 64 * 1024


class OriginError(Exception):
    """The origin could not give a response."""


class OriginUnreachable(OriginError):
    """Connection refused, reset or otherwise failed: answered with 502."""


class OriginTimeout(OriginError):
    """The origin did not connect or answer in time: answered with 504."""


class OriginInvalid(OriginUnreachable):
    """The origin answered with something that is not an HTTP response we may relay: 502."""


@dataclass(slots=True)
class OriginResponse:
    """A response head from the origin, with its body still to be read."""

    status: int
    headers: list[tuple[str, str]]
    content_length: int | None
    _resp: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives; raises :class:`OriginError` if the origin fails mid-body."""
        try:
            async for chunk in self._resp.content.iter_chunked(CHUNK):
                yield chunk
        except TimeoutError as exc:
            raise OriginTimeout("origin timed out while sending the body") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise OriginUnreachable(f"origin failed while sending the body: {exc}") from exc
        finally:
            self._resp.release()

    def close(self) -> None:
        """Drop the connection (the body will not be read)."""
        self._resp.close()


def forward_headers(
    headers: Mapping[str, str], client_ip: str, *, drop: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The request fields to send to the origin (RFC 9110 §7.6: hop-by-hop fields are not forwarded).

    Content-Length is left to the client library, which frames the body it sends itself.
    """
    connection_named = {t.strip().lower() for t in headers.get("connection", "").split(",") if t.strip()}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if (
            name in HOP_BY_HOP
            or name in CONTROL_HEADERS
            or name in connection_named
            or name in drop
            or name == "content-length"
            or name.startswith("x-edgecache-")
        ):
            continue
        out[name] = value
    prior = headers.get("x-forwarded-for")
    out["x-forwarded-for"] = f"{prior}, {client_ip}" if prior else client_ip
    out["x-forwarded-proto"] = "http"
    if "host" in headers:
        out["x-forwarded-host"] = headers["host"]
    via = headers.get("via")
    out["via"] = f"{via}, 1.1 edgecache" if via else "1.1 edgecache"
    return out


class OriginClient:
    """A pooled HTTP client to every zone's origin."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30, ttl_dns_cache=60),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> OriginResponse:
        """Send one request; returns once the response head has arrived."""
        session = self._open()
        try:
            resp = await session.request(
                method,
                url,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except TimeoutError as exc:
            raise OriginTimeout(f"origin did not answer in time: {url}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise OriginUnreachable(f"origin unreachable: {exc}") from exc
        if not 100 <= resp.status <= 599:
            # RFC 9110 §15: a status code outside 100..599 is invalid; the client parser lets 0xx
            # and 6xx..9xx through.
            resp.close()
            raise OriginInvalid(f"origin sent an invalid status code {resp.status}")
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        return OriginResponse(resp.status, raw, resp.content_length, resp)

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None
