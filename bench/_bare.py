"""The ceiling column of the hit benchmark: a bare asyncio Protocol on httptools + uvloop that answers
prebuilt bytes.

It does what any Python server on this stack must do per request (the loop's read callback, llhttp
parsing the request, one ``write`` of a response) and nothing else: no cache key, no lookup beyond one
dict probe on the raw path, no Age, no conditionals. Each response carries the same fields as the
origin's (Content-Type, Cache-Control, Cache-Tag, ...) plus ``X-Cache: HIT``, so the bytes on the wire
are close to a cache's hit. Paths other than ``/medium`` get the 1 KiB body, like the origin's
``/obj/NNNNNN``. This is the reference anchors' server (b), kept so that every run says how far from
the ceiling edgecache is.

Run: ``python bench/_bare.py PORT`` (the benchmark starts and stops it).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import cast

import httptools
import uvloop


def _response(body: bytes, tag: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Cache-Control: public, max-age=3600\r\nCache-Tag: " + tag + b"\r\nX-Cache: HIT\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


SMALL = _response(b"a" * 1024, b"bench small")
BY_PATH = {b"/medium": _response(b"b" * 65536, b"bench medium")}


class Bare(asyncio.Protocol):
    """One connection: parse with llhttp, answer each complete request with prebuilt bytes."""

    def __init__(self) -> None:
        self.url = b""
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(BY_PATH.get(self.url, SMALL))
        self.url = b""
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.get_running_loop().create_server(Bare, sock=sock, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
