"""The origin client: keep-alive pools of our own HTTP/1.1 connections, responses streamed, never decoded.

Rules of this module:
- The caller gives the request fields to send (``edge/forwarding.py`` decides them);
  :func:`encode_request` only frames them (request line, ``Host`` when none was given,
  ``Content-Length``). A caller that sends the same fields again may encode them once
  (:class:`FieldLines`): the fill path remembers the lines per distinct request (``fetch.py``).
- Bodies are never decompressed or re-encoded: the cache stores what the origin sent.
- One pool per origin (``origin_pool.py``), one request at a time per connection
  (``origin_conn.py``). A request is retried once, on a new connection, only when it is idempotent
  (RFC 9110 §9.2.2), was sent on a reused connection, and the connection failed before any byte of
  the response arrived: the usual sign that the origin closed an idle connection as we used it.
  Anything else is not retried: the origin may have acted on the request.
- Two ways to send. ``request()`` awaits the head and streams the body through ``chunks()`` (and
  retries by itself). The fill path instead calls ``send_idle()``, which sends at once on an idle
  keep-alive connection without awaiting anything, and falls back to ``send_new()`` (awaited: it may
  connect, or wait for a free connection) when none is idle or when :func:`retryable` says a failed
  exchange may be re-sent; the response then goes to a listener (``origin_conn.py``, rule 8).
- Failures are typed: :class:`OriginUnreachable` (refused, reset, closed early) and its subclass
  :class:`OriginInvalid` (bytes that are not a response we may relay: bad framing, a status code
  outside 100..599) map to 502, :class:`OriginTimeout` to 504. The caller decides about
  stale-if-error.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from edgecache.edge.origin_conn import (
    Deadlines,
    Interim,
    OriginError,
    OriginInvalid,
    OriginResponse,
    OriginTimeout,
    OriginUnreachable,
    ResponseListener,
)
from edgecache.edge.origin_pool import OriginPool, OriginStats

__all__ = [
    "FieldLines",
    "OriginClient",
    "OriginError",
    "OriginInvalid",
    "OriginResponse",
    "OriginStats",
    "OriginTimeout",
    "OriginUnreachable",
    "ResponseListener",
    "encode_request",
    "retryable",
]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 §9.2.2."""
CONTENT_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose request is framed with Content-Length even when empty (RFC 9110 §8.6)."""
FRAMING_FIELDS = frozenset({"content-length", "transfer-encoding", "connection"})
"""Set by :func:`encode_request` alone, whatever the caller passed."""


def _encode_fields(headers: Mapping[str, str]) -> str:
    lines = []
    for name, value in headers.items():
        if name in FRAMING_FIELDS:
            continue
        if "\r" in value or "\n" in value:
            raise ValueError(f"CR or LF in the value of request field {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


class FieldLines(str):
    """Request fields encoded once (``name: value`` lines, the framing fields left out, ``Host``
    among them), for a caller that sends the same fields again: :func:`encode_request` takes them
    as they are."""

    __slots__ = ()

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> FieldLines:
        """Encode ``headers``, which must carry ``host``. Raises ValueError for a value with CR or
        LF (it would change how the origin splits the request), or without ``host``."""
        if "host" not in headers:
            raise ValueError("encoded request fields must carry host")
        return cls(_encode_fields(headers))


def encode_request(
    method: str, target: str, headers: Mapping[str, str] | FieldLines, body: bytes, authority: str
) -> bytes:
    """The request as bytes: request line, the given fields (a mapping, or :class:`FieldLines`),
    ``Host`` if a mapping has none, Content-Length.

    Raises ValueError for a target with whitespace or a field value with CR or LF (either would
    change how the origin splits the request).
    """
    if " " in target or "\r" in target or "\n" in target or "\t" in target:
        raise ValueError(f"whitespace in the request target {target!r}")
    if isinstance(headers, FieldLines):
        fields: str = headers
    else:
        fields = _encode_fields(headers)
        if "host" not in headers:
            fields = f"host: {authority}\r\n{fields}"
    if body or method in CONTENT_METHODS:
        fields += f"content-length: {len(body)}\r\n"
    head = f"{method} {target} HTTP/1.1\r\n{fields}\r\n".encode("latin-1")
    return head + body if body else head


def retryable(resp: OriginResponse) -> bool:
    """Whether a failed exchange may be re-sent on a new connection (the module's retry rule)."""
    return resp.reused and not resp.received_any and resp.method in IDEMPOTENT


class OriginClient:
    """Pooled HTTP/1.1 (and HTTPS) connections to every zone's origin."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        *,
        first_byte_timeout: float | None = None,
        idle_timeout: float = 30.0,
        max_connections: int = 512,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._first_byte_timeout = read_timeout if first_byte_timeout is None else first_byte_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._pools: dict[str, tuple[OriginPool, str]] = {}
        self._deadlines: Deadlines | None = None
        self.stats = OriginStats()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        on_interim: Interim | None = None,
    ) -> OriginResponse:
        """Send one request; returns once the final response head has arrived.

        ``url`` is the origin's ``scheme://authority`` followed by the origin-form target.
        ``on_interim(status, fields)`` is called for each 1xx response that precedes the final one.
        """
        pool, data = self._prepare(method, url, headers, body)
        self.stats.requests += 1
        conn = pool.take_idle()
        reused = conn is not None
        if conn is None:
            conn, reused = await pool.acquire()
        resp = conn.send(data, method, on_interim, reused=reused)
        try:
            assert resp.head is not None
            await resp.head
        except OriginUnreachable:
            if not retryable(resp):
                raise
            self.stats.retries += 1
            self.stats.requests += 1
            conn = await pool.connect()
            resp = conn.send(data, method, on_interim)
            await self._head(resp)
        except BaseException:
            resp.close()
            raise
        return resp

    def send_idle(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | FieldLines,
        listener: ResponseListener,
        on_interim: Interim | None = None,
    ) -> OriginResponse | None:
        """Send a bodiless request at once on an idle keep-alive connection to ``listener``, or
        return None, having sent nothing, when the origin has no idle connection."""
        # _route, inline (every fill); a pool is made by send_new, which any first request takes.
        scheme_end = url.find("://") + 3
        slash = url.find("/", scheme_end)
        found = self._pools.get(url if slash < 0 else url[:slash])
        if found is None:
            return None
        pool, authority = found
        target = "/" if slash < 0 else url[slash:]
        conn = pool.take_idle()
        if conn is None:
            # Encoded only once a connection is had: send_new encodes it for the one it gets.
            return None
        if (
            type(headers) is FieldLines
            and method not in CONTENT_METHODS
            and " " not in target
            and target.isprintable()
        ):
            # encode_request's answer for a fill's remembered fields (the usual miss), without its
            # call: a target without whitespace (isprintable is False for CR, LF and tab; any
            # other target takes encode_request, which refuses or frames it), the lines as they
            # are, no body and no Content-Length.
            # A join, not an f-string: formatting a str subclass copies it first.
            data = "".join((method, " ", target, " HTTP/1.1\r\n", headers, "\r\n")).encode("latin-1")
        else:
            data = encode_request(method, target, headers, b"", authority)
        self.stats.requests += 1
        return conn.send(data, method, on_interim, listener=listener, reused=True)

    async def send_new(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | FieldLines,
        listener: ResponseListener,
        *,
        on_interim: Interim | None = None,
        retry: bool = False,
    ) -> OriginResponse:
        """Send a bodiless request to ``listener`` on any usable connection, opening one or waiting
        for one if need be; with ``retry``, on a new connection, counted as the retry of an exchange
        that :func:`retryable` allowed. Raises :class:`OriginError` when no connection was had."""
        pool, data = self._prepare(method, url, headers, b"")
        self.stats.requests += 1
        if retry:
            self.stats.retries += 1
            conn, reused = await pool.connect(), False
        else:
            conn, reused = await pool.acquire()
        return conn.send(data, method, on_interim, listener=listener, reused=reused)

    async def close(self) -> None:
        """Close every idle connection; busy ones close when their response ends."""
        for pool, _ in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._deadlines is not None:
            self._deadlines.stop()
            self._deadlines = None

    def _prepare(
        self, method: str, url: str, headers: Mapping[str, str] | FieldLines, body: bytes
    ) -> tuple[OriginPool, bytes]:
        pool, target, authority = self._route(url)
        return pool, encode_request(method, target, headers, body, authority)

    def _route(self, url: str) -> tuple[OriginPool, str, str]:
        """The pool of ``url``'s origin (made on first use), the request-target and the authority."""
        scheme_end = url.find("://") + 3
        slash = url.find("/", scheme_end)
        origin, target = (url, "/") if slash < 0 else (url[:slash], url[slash:])
        found = self._pools.get(origin)
        if found is None:
            found = self._pools[origin] = self._new_pool(origin)
        pool, authority = found
        return pool, target, authority

    @staticmethod
    async def _head(resp: OriginResponse) -> None:
        try:
            assert resp.head is not None
            await resp.head
        except BaseException:
            resp.close()
            raise

    def _new_pool(self, origin: str) -> tuple[OriginPool, str]:
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            # An origin the zone's configuration should have refused: a 502 for the fill, which
            # the fetch reports, rather than an error that ends its task with the client waiting.
            raise OriginUnreachable(f"not an http(s) origin: {origin!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OriginUnreachable(f"not an http(s) origin: {origin!r}")
        if self._deadlines is None:
            shortest = min(self._first_byte_timeout, self._read_timeout)
            self._deadlines = Deadlines(asyncio.get_running_loop(), min(max(shortest / 4, 0.01), 0.5))
        tls = parts.scheme == "https"
        context = None
        if tls:
            context = self._ssl or ssl.create_default_context()
        pool = OriginPool(
            deadlines=self._deadlines,
            stats=self.stats,
            host=parts.hostname,
            port=port or (443 if tls else 80),
            ssl_context=context,
            connect_timeout=self._connect_timeout,
            first_byte_timeout=self._first_byte_timeout,
            read_timeout=self._read_timeout,
            idle_timeout=self._idle_timeout,
            max_connections=self._max_connections,
        )
        return pool, parts.netloc
