"""Raw-socket HTTP helpers for tests: an origin that misbehaves on purpose, and a client that shows
exactly the bytes a server sent (interim responses, missing terminators, early closes).

The origin listens on 127.0.0.1 (free port) and runs ``handler(sock, n)`` in a thread for the n-th
connection it accepts; the handler reads requests with :func:`read_request` and writes whatever
bytes the test wants, including none.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

Handler = Callable[[socket.socket, int], None]


class RawOrigin:
    """A scripted-at-the-byte-level origin; ``connections`` counts accepted connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            n = self.connections
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        with contextlib.suppress(OSError), conn:
            self.handler(conn, n)

    def close(self) -> None:
        self._closed = True
        self._sock.close()


@contextlib.contextmanager
def raw_origin(handler: Handler) -> Iterator[RawOrigin]:
    origin = RawOrigin(handler)
    try:
        yield origin
    finally:
        origin.close()


def read_request(sock: socket.socket, log: list[bytes] | None = None) -> bytes | None:
    """One request's head and Content-Length body, or None when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    request = head + b"\r\n\r\n" + rest
    if log is not None:
        log.append(request)
    return request


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw request bytes, read until the server closes (or resets), return everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk
