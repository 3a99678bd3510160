"""What a miss keys on and what it forwards are the request the cache keyed, for any request head.

The miss path computes its key and the origin's target in one pass and carries them, and passes
the request's fields on without asking for them again (decision 0008, update 9). Here arbitrary
request heads are sent over loopback to a real node in front of an origin that records the bytes it
receives: the key the fill is stored under and the request the origin got must be what the
functions that define them say (``primary_key``, ``variant_suffix``, ``vary_suffix``,
``forward_headers`` framed by ``encode_request``) for the fields as decision 0012 reads them:
names lower-cased, trailing whitespace dropped, repeats joined, the fields named in Connection
removed; and the target the origin got is the key's own path and query, whatever the zone's query
option (what the cache keys on is what it asked the origin for).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.app import Node
from edgecache.config import CacheKeyOptions, Config, DiskStorage, Listener, Storage, Zone
from edgecache.edge.fetch import NOT_FORWARDED_TO_ORIGIN_ON_FILL
from edgecache.edge.forwarding import forward_headers
from edgecache.edge.origin import encode_request
from edgecache.edge.zones import ZoneRuntime
from edgecache.httpcache.headers import connection_options
from edgecache.httpcache.key import primary_key, variant_suffix, vary_suffix

T = TypeVar("T")

VARY = ("accept-language", "x-custom")
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600\r\nVary: Accept-Language, X-Custom\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


class Recorder(asyncio.Protocol):
    """An origin that keeps every request head it receives and answers each with ``RESPONSE``."""

    heads: list[bytes]

    def __init__(self, heads: list[bytes]) -> None:
        self.heads = heads
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.heads.append(self.buffer[: end + 4])
            self.buffer = self.buffer[end + 4 :]
            assert self.transport is not None
            self.transport.write(RESPONSE)


class Edge:
    """A memory-only node in front of the recorder, on its own loop thread: a plain zone, one
    keyed by device type and country, one that ignores the query and one that sorts it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.heads: list[bytes] = []
        server = self.run(self._listen())
        port = server.sockets[0].getsockname()[1]
        self.origin = server
        self.tmp = tempfile.TemporaryDirectory(prefix="edgecache-reqside-")
        origin = f"http://127.0.0.1:{port}"
        self.origin_authority = f"127.0.0.1:{port}"
        self.node = Node(
            Config(
                data_dir=Path(self.tmp.name),
                data=Listener(port=0),
                control=Listener(port=0),
                storage=Storage(disk=DiskStorage(enabled=False)),
                zones=(
                    Zone(id="1" * 32, name="example.com", hostnames=("example.com",), origin=origin),
                    Zone(
                        id="2" * 32,
                        name="v.example",
                        hostnames=("v.example",),
                        origin=origin,
                        cache_key=CacheKeyOptions(device_type=True, country=True),
                    ),
                    Zone(
                        id="3" * 32,
                        name="i.example",
                        hostnames=("i.example",),
                        origin=origin,
                        cache_key=CacheKeyOptions(query="ignore"),
                    ),
                    Zone(
                        id="4" * 32,
                        name="s.example",
                        hostnames=("s.example",),
                        origin=origin,
                        cache_key=CacheKeyOptions(query="sort"),
                    ),
                ),
            )
        )
        self.run(self.node.start())

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(lambda: Recorder(self.heads), "127.0.0.1", 0)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the node's loop (the store is the loop's)."""

        async def on_loop() -> Any:
            return fn(*args)

        return self.run(on_loop())

    def send(self, head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.node.data_port), timeout=10) as sock:
            sock.sendall(head)
            sock.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    def close(self) -> None:
        self.run(self.node.stop())
        self.call(self.origin.close)  # on its loop: asyncio.Server is not thread-safe
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    e = Edge()
    try:
        yield e
    finally:
        e.close()


def _odd_case(draw: st.DrawFn, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in name)


_piece = st.sampled_from(
    ["a", "B", "/", "/./", "/../", "/.", "/..", "%2e", "%2E", "%2e%2E/", "%41", "%7e", "%2F", "%25",
     "%c3%a9", "%g1", "x.y", "~", ";", ":", "//"]
)  # fmt: skip
_query = st.sampled_from(["", "?", "?a=1", "?b=2&a=1", "?a=%2e&a=/../x", "?%41=%7e", "?z&b=1&a"])
_value = st.text(alphabet="ab ,;=-q.0xyz", max_size=10)
_names = [
    "accept-language",
    "x-custom",
    "accept",
    "cookie",
    "user-agent",
    "x-forwarded-for",
    "cf-ipcountry",
    "cf-device-type",
    "via",
    "keep-alive",
    "x-original-url",
    "x-edgecache-debug",
]
_connection_values = ["", "keep-alive", "x-custom", "Accept-Language, keep-alive", "host", "via, cookie"]


HOSTS = [
    "example.com",
    "EXAMPLE.com",
    "example.com:80",
    "example.com.",
    "v.example",
    "i.example",
    "S.example",
]


@st.composite
def request_heads(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]]]:
    """(Host, target, the fields after Host as sent): paths with %-escapes, dot-segments and
    queries; repeated, odd-cased fields, the Vary-relevant ones among them, and Connection."""
    host = draw(st.sampled_from(HOSTS))
    target = "/" + "".join(draw(st.lists(_piece, max_size=8))) + draw(_query)
    fields = [
        (_odd_case(draw, name), draw(_value).strip(" ") + draw(st.sampled_from(["", " ", "  "])))
        for name in draw(st.lists(st.sampled_from(_names), max_size=8))
    ]
    connection = draw(st.sampled_from(_connection_values))
    if connection:
        fields.insert(draw(st.integers(0, len(fields))), (_odd_case(draw, "connection"), connection))
    return host, target, fields


def _headers(host: str, fields: list[tuple[str, str]]) -> dict[str, str]:
    """The request's fields as decision 0012 reads them, spelled out: lower-case names, trailing
    whitespace dropped, repeats joined (Cookie with "; "), the fields Connection names removed (but
    Host)."""
    out: dict[str, str] = {"host": host}
    for name, value in fields:
        key, text = name.lower(), value.rstrip(" \t")
        if key in out:
            out[key] += ("; " if key == "cookie" else ", ") + text
        else:
            out[key] = text
    if out.get("connection"):
        for named in connection_options(out["connection"]):
            if named not in ("host", "connection"):
                out.pop(named, None)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_heads())
def test_a_miss_stores_under_and_forwards_the_request_the_key_names(
    edge: Edge, head: tuple[str, str, list[tuple[str, str]]]
) -> None:
    host, target, fields = head
    found = edge.node.proxy.zones.for_host(host)
    assert not isinstance(found, int)
    zone, zone_host = found
    assert isinstance(zone, ZoneRuntime)
    headers = _headers(host, fields)
    opts = zone.key_options
    primary = primary_key("http", zone_host, target, opts)
    # Nothing stored under the URL: the request is a miss, whether or not its key was made before
    # (the key memo's path) or its Vary names are known.
    edge.call(edge.node.store.delete_primary, primary)
    before = len(edge.heads)
    wire = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    answer = edge.send(wire.encode("latin-1") + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\r\ncf-cache-status: miss\r\n" in answer.lower()
    assert len(edge.heads) == before + 1
    forwarded = forward_headers(headers, "127.0.0.1", zone, zone_host, drop=NOT_FORWARDED_TO_ORIGIN_ON_FILL)
    # The key names what the origin was asked: its path and query after "http://" and the host.
    asked = "/" + primary.split("/", 3)[3]
    assert edge.heads[-1] == encode_request("GET", asked, forwarded, b"", edge.origin_authority)
    key = primary + variant_suffix(headers, opts, zone.trusted_from("127.0.0.1")) + vary_suffix(VARY, headers)
    assert edge.call(edge.node.store.variants, primary) == [key]
