"""The origin client: one pooled aiohttp session per node, responses streamed, never decoded.

Rules of this module:
- The caller gives the request fields to send (``edge/forwarding.py`` decides them).
- Bodies are never decompressed or re-encoded: the cache stores what the origin sent.
- Failures are typed: :class:`OriginUnreachable` (connection refused/reset, DNS, or an invalid
  response such as a status code outside 100..599) maps to 502,
  :class:`OriginTimeout` to 504. The caller decides about stale-if-error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

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
