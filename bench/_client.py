"""A small HTTP/1.1 keep-alive client on asyncio streams, for warming caches and filling them.

Rules:
- `concurrency` connections each take the next path from one shared iterator, so every path is requested
  exactly once per pass, over keep-alive connections (Content-Length or chunked bodies).
- A connection that fails is reopened and the request retried once; after that the path counts as an error.
- Every call is bounded by a timeout; nothing here can hang the harness.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def get(self, path: str, header: bytes) -> tuple[int, str]:
        """GET `path`; return (status, value of `header` or "")."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        await self._read_body(headers)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers.get(header.decode(), "")

    async def _read_body(self, headers: dict[str, str]) -> None:
        assert self.reader is not None
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.read()
            await self.close()


@dataclass
class PassResult:
    """Outcome of requesting a set of paths once."""

    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    hits: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


async def _worker(port: int, paths: Iterator[str], header: bytes, result: PassResult) -> None:
    conn = _Conn(port)
    try:
        for path in paths:
            for attempt in (1, 2):
                try:
                    status, cache = await conn.get(path, header)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                    await conn.close()
                    if attempt == 2:
                        result.errors.append(f"{path}: {e!r}")
                    continue
                result.statuses[status] += 1
                if cache.upper() == "HIT":
                    result.hits.add(path)
                break
    finally:
        await conn.close()


async def _one_pass(port: int, paths: Iterable[str], header: bytes, concurrency: int) -> PassResult:
    result = PassResult(0.0)
    shared = iter(paths)
    start = time.monotonic()
    await asyncio.gather(*(_worker(port, shared, header, result) for _ in range(concurrency)))
    result.seconds = time.monotonic() - start
    return result


def request_all(
    port: int, paths: list[str], header: str = "", concurrency: int = 32, timeout: float = 300.0
) -> PassResult:
    """Request every path once over `concurrency` keep-alive connections."""
    return asyncio.run(asyncio.wait_for(_one_pass(port, paths, header.encode(), concurrency), timeout))


def warm(port: int, paths: list[str], header: str, passes: int = 5, timeout: float = 300.0) -> list[str]:
    """Request the paths until each has answered HIT once; return the ones that never did."""
    todo = list(paths)
    deadline = time.monotonic() + timeout
    for _ in range(passes):
        left = deadline - time.monotonic()
        if not todo or left <= 0:
            break
        result = request_all(port, todo, header, concurrency=min(32, len(todo)), timeout=left)
        todo = [p for p in todo if p not in result.hits]
    return todo
