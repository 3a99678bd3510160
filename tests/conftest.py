"""Shared fixtures: a scripted origin and a real edgecache node, both on 127.0.0.1 with free ports.

The node and the origin run on their own event loop in a background thread; tests talk to them
over real sockets with blocking clients, as a user's curl would.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import settings
from multidict import CIMultiDict

from edgecache.app import Node
from edgecache.config import (
    DEFAULT_ACCOUNT_ID,
    Account,
    CacheKeyOptions,
    ClientTrust,
    Config,
    Limits,
    Listener,
    Quota,
    Storage,
    Zone,
)
from edgecache.control.credentials import Permission

T = TypeVar("T")

ZONE_ID = "0123456789abcdef0123456789abcdef"
VARIANT_ZONE_ID = "fedcba9876543210fedcba9876543210"
LIMITED_ZONE_ID = "aaaabbbbccccddddeeeeffff00001111"
LIMITED_ACCOUNT_ID = "11112222333344445555666677778888"


@dataclass
class Route:
    """What the scripted origin answers for one path."""

    body: bytes = b"hello"
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Cache-Control": "public, max-age=60"})
    delay: float = 0.0
    chunks: int = 1
    chunk_delay: float = 0.0
    chunked: bool = False
    honour_inm: bool = True
    """Answer 304 when If-None-Match equals our ETag."""
    ranges: bool = False
    """Honour a single-range Range (and If-Range) with 206, as origins serving media do."""
    repeated: list[tuple[str, str]] = field(default_factory=list)
    """Fields sent after ``headers``, where a name may repeat (``Expires`` twice, say)."""


class ScriptedOrigin:
    """An origin whose answers tests set per path, counting what it receives."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body_in = await request.read()
        self.hits[request.path_qs] += 1
        self.requests.append((request.method, request.path_qs, dict(request.headers), body_in))
        route = self.routes.get(request.path_qs) or self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found", headers={"Cache-Control": "no-store"})
        if route.delay:
            await asyncio.sleep(route.delay)
        etag = route.headers.get("ETag")
        if route.honour_inm and etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=route.headers)
        headers = CIMultiDict(route.headers)
        for name, value in route.repeated:
            headers.add(name, value)
        status, body = route.status, route.body
        if route.ranges:
            status, body = _answer_range(request, route, headers)
        if not route.chunked:
            headers["Content-Length"] = str(len(body))
        resp = web.StreamResponse(status=status, headers=headers)
        if route.chunked:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        n = max(1, route.chunks)
        step = max(1, -(-len(body) // n))
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
            if route.chunk_delay:
                await asyncio.sleep(route.chunk_delay)
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _answer_range(request: web.Request, route: Route, headers: CIMultiDict[str]) -> tuple[int, bytes]:
    """What an origin that honours one byte range sends (RFC 9110 §14): written independently of
    the cache's own range code, so that the two check each other."""
    headers["Accept-Ranges"] = "bytes"
    spec = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range")
    size = len(route.body)
    if route.status != 200 or not spec.startswith("bytes=") or "," in spec:
        return route.status, route.body
    if if_range is not None and if_range not in (
        route.headers.get("ETag"),
        route.headers.get("Last-Modified"),
    ):
        return route.status, route.body
    first_text, _, last_text = spec[len("bytes=") :].partition("-")
    if first_text:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
    else:
        first, last = max(0, size - int(last_text)), size - 1
    if first >= size:
        headers["Content-Range"] = f"bytes */{size}"
        return 416, b""
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return 206, route.body[first : last + 1]


class Stack:
    """A running origin + node, driven from the test thread."""

    def __init__(
        self,
        extra_zones: tuple[Zone, ...] = (),
        storage: Storage | None = None,
        limits: Limits | None = None,
        database_url: str | None = None,
    ) -> None:
        """``extra_zones`` (with hostnames of their own) join the three zones every test module has;
        ``database_url`` replaces the SQLite database under the data directory (PostgreSQL)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.origin = ScriptedOrigin()
        self.run(self.origin.start())
        self.tmp = tempfile.TemporaryDirectory(prefix="edgecache-test-")
        origin_url = f"http://127.0.0.1:{self.origin.port}"
        self.config = Config(
            data_dir=Path(self.tmp.name),
            database_url=database_url,
            data=Listener(port=0),
            control=Listener(port=0),
            accounts=(Account(), Account(id=LIMITED_ACCOUNT_ID, name="limited", plan="free")),
            zones=(
                Zone(
                    id=ZONE_ID,
                    name="test.example",
                    hostnames=("test.example", "127.0.0.1"),
                    origin=origin_url,
                ),
                Zone(
                    id=VARIANT_ZONE_ID,
                    name="variants.example",
                    hostnames=("variants.example",),
                    origin=origin_url,
                    cache_key=CacheKeyOptions(device_type=True, country=True, language=True),
                    # As if behind a proxy of ours that sets these: the tests are that proxy.
                    trust=ClientTrust(fields=("cf-ipcountry", "cf-device-type"), proxies=("127.0.0.1/32",)),
                    quotas={"purge_host": Quota(batch=2, daily=3)},
                ),
                Zone(
                    id=LIMITED_ZONE_ID,
                    name="limited.example",
                    hostnames=("limited.example",),
                    origin=origin_url,
                    account_id=LIMITED_ACCOUNT_ID,
                    plan="free",
                ),
                *(z.model_copy(update={"origin": origin_url}) for z in extra_zones),
            ),
            limits=limits or Limits(origin_first_byte_timeout=2.0, origin_read_timeout=2.0),
            storage=storage or Storage(),
        )
        self.node = Node(self.config)
        self.run(self.node.start())

    def restart(self) -> None:
        """Stop the node and start a new one on the same configuration and data directory (new
        ports): what survives is what the database and the persistent tier kept."""
        self.run(self.node.stop())
        self.node = Node(self.config)
        self.run(self.node.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    @contextlib.contextmanager
    def origin_at(self, url: str) -> Iterator[None]:
        """Point the test zone at another origin for the duration of a ``with`` block."""
        zone = self.node.zones.by_id[ZONE_ID]
        original = zone.origin
        object.__setattr__(zone, "origin", url)
        try:
            yield
        finally:
            object.__setattr__(zone, "origin", original)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the node's loop (the store is not thread-safe)."""

        async def wrap() -> T:
            return fn()

        return self.run(wrap())

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        host: str = "test.example",
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.data_port, timeout=20)
        try:
            hdrs = {"Host": host, **(headers or {})}
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def token(
        self,
        permissions: tuple[Permission, ...] = (Permission.CACHE_PURGE,),
        zones: list[str] | None = None,
        account: str = DEFAULT_ACCOUNT_ID,
    ) -> str:
        """A new API token (plaintext) from the node's credential service."""
        _, secret = self.node.credentials.create_token(account, "test", list(permissions), zones)
        return secret

    def close(self) -> None:
        self.run(self.node.stop())
        self.run(self.origin.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.tmp.cleanup()


settings.register_profile("edgecache", deadline=None)
settings.load_profile("edgecache")
"""No per-example deadline: what the properties assert is behaviour, and a deadline is a timing
assertion that a loaded machine (CI's, or helpers sharing two cores) fails at random."""


@pytest.fixture(scope="module", autouse=True)
def environment_kept() -> Iterator[None]:
    """Fails the module that leaves ``os.environ`` changed: what one module sets (a proxy variable,
    a master key) would otherwise decide how the modules after it run."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    # pytest itself names the running test in the environment.
    changed = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and k != "PYTEST_CURRENT_TEST"
    )
    assert not changed, f"this module changed {changed} in os.environ for the modules after it"


PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def direct_to_loopback() -> Iterator[None]:
    """The official SDKs' HTTP clients go through a proxy named in the environment: unset the proxy
    variables and name loopback in ``NO_PROXY`` for one module, and put them back after it."""
    with pytest.MonkeyPatch.context() as mp:
        for var in PROXY_VARIABLES:
            mp.delenv(var, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1")
        yield


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh() -> Iterator[Stack]:
    """A node of its own for one test (``stack`` is shared by a module's tests)."""
    s = Stack()
    try:
        yield s
    finally:
        s.close()
