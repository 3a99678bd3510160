"""Prefetch's fetch: one request through this node's own data plane, so that a warmed object is
stored exactly as a client's request would store it (same key, same forwarding, same tiers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import quote

from edgecache.edge.origin import OriginClient

TARGET_SAFE = "/?[]@!$&'()*+,;=:%~-._"
"""Characters a prefetch target keeps as they are; others (spaces, non-ASCII) are percent-encoded."""


class Warmer:
    """Requests a path from the data listener at ``listen``; ``port`` is read at each call, since
    the listener binds after the prefetch service is built."""

    def __init__(self, client: OriginClient, listen: str, port: Callable[[], int]) -> None:
        # A wildcard listen address is reached on loopback.
        self._address = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
        self._client = client
        self._port = port

    async def __call__(self, host: str, path: str, headers: Mapping[str, str]) -> int:
        """Fetch ``path`` on ``host``; the body is read and dropped; answers the status."""
        fields = {name.lower(): value for name, value in headers.items()}
        fields["host"] = host
        target = quote(path, safe=TARGET_SAFE)
        resp = await self._client.request("GET", f"http://{self._address}:{self._port()}{target}", fields)
        async for _ in resp.chunks():
            pass
        return resp.status
