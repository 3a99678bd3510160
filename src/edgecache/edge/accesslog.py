"""The data plane's access log: one line per answered request, written off the event loop.

Theory of operation:
- Off by default. When on, the server is built with :class:`LoggedConnection` (a ``Connection``
  that notes what the handler writes) and :class:`LoggedHandler` (which stamps the request's start);
  when off, neither exists and the hit path is untouched.
- On the loop, each request costs a few attribute stores, three clock reads and one tuple appended to
  a deque: no formatting, no I/O. The status, ``CF-Cache-Status`` and zone are recovered later from
  what was written (the response head) and the Host field.
- A writer thread wakes every ``FLUSH_EVERY`` seconds, formats what gathered (letting the loop run
  every ``YIELD_EVERY`` records: the thread shares CPython's interpreter lock with the loop, so
  formatting here keeps file I/O off the loop, not CPU), writes it with one ``write`` and flushes,
  so a crash loses at most the last interval.
- If the writer falls behind by ``MAX_PENDING`` records, new records are dropped and counted
  (``dropped``), and a warning says how many: memory stays bounded and the loop never waits.
- What is timed: ``total`` from the complete request to the end of the response; ``origin`` from
  the complete request to the response head, for answers that needed the origin (MISS, EXPIRED,
  REVALIDATED, BYPASS, DYNAMIC; for a collapsed request this is its wait for the shared fetch).
- Requests the server rejects itself (400, 408, 413, ... before any handler) are counted in the
  metrics, not logged here.

Formats: ``combined`` is Apache/nginx's combined log format (bytes are all bytes sent, head
included, as nginx's ``$bytes_sent``) followed by ``cache= zone= origin_ms= total_ms=``;
``json`` is one JSON object per line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Literal

from edgecache.edge.http1 import Connection, Handler, HttpServer, Request
from edgecache.edge.zones import ZoneTable

log = logging.getLogger(__name__)
_monotonic = time.monotonic

FLUSH_EVERY = 0.1
MAX_PENDING = 200_000
YIELD_EVERY = 128
"""Records the writer formats before it lets the event loop run (it shares the interpreter lock)."""
ORIGIN_STATUSES = frozenset({"MISS", "EXPIRED", "REVALIDATED", "BYPASS", "DYNAMIC"})
_CF = b"\r\nCF-Cache-Status: "

Record = tuple[Request, float, float, float, bytes | None, int]
"""request, start, head written, end (monotonic), first bytes written, bytes sent."""


class AccessLog:
    """The buffer between the loop and the writer thread, and the writer."""

    def __init__(self, path: Path, fmt: Literal["combined", "json"], zones: ZoneTable) -> None:
        self.path = path
        self.format = fmt
        self.zones = zones
        self.pending: deque[Record] = deque()
        self.written = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._stamp = (0, "")
        self._iso = (0, "")
        self._zone_names: dict[str, str] = {}
        """Host field → zone name (or "-"), filled by the writer thread only."""

    def record(self, item: Record) -> None:
        """Queue one request's record (on the loop: O(1), never blocks)."""
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.append(item)

    def start(self) -> None:
        """Open the file and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._run, name="edgecache-access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, stop the thread and close the file (blocking: call off the loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._file is not None:
            self._file.close()

    def _run(self) -> None:
        reported = 0
        while not self._stop.wait(FLUSH_EVERY):
            self._drain()
            if self.dropped != reported:
                log.warning(
                    "access log fell behind; %d records dropped so far",
                    self.dropped,
                    extra={"event": "access_log_dropped", "dropped": self.dropped},
                )
                reported = self.dropped
        self._drain()

    def _drain(self) -> None:
        pending = self.pending
        if not pending or self._file is None:
            return
        # Wall-clock time of a record = now - (monotonic now - its monotonic end).
        offset = time.time() - _monotonic()
        line = self._json if self.format == "json" else self._combined
        lines = []
        # What is queued now, not what arrives meanwhile: each write stays bounded.
        for i in range(1, len(pending) + 1):
            lines.append(line(pending.popleft(), offset))
            if i % YIELD_EVERY == 0:
                # Hand the interpreter back to the event loop now, rather than at the
                # interpreter's 5 ms switch interval: a burst of records must not stall requests.
                time.sleep(0)
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except OSError:
            log.exception("writing the access log to %s failed", self.path)
            return
        self.written += len(lines)

    def _fields(self, rec: Record) -> tuple[str, str, str, str, str]:
        """Status, cache status, zone name, origin ms and total ms of a record."""
        req, start, head_at, end, head, _ = rec
        status = cache = "-"
        if head is not None:
            if head.startswith(b"HTTP/1."):
                status = head[9:12].decode("latin-1")
            i = head.find(_CF, 0, 8192)
            if i >= 0:
                i += len(_CF)
                cache = head[i : head.find(b"\r", i)].decode("latin-1")
        host = req.headers.get("host", "")
        zone = self._zone_names.get(host)
        if zone is None:
            found = self.zones.for_host(host)
            zone = found[0].config.name if isinstance(found, tuple) else "-"
            if len(self._zone_names) >= 4096:
                self._zone_names.clear()
            self._zone_names[host] = zone
        origin = "%.3f" % ((head_at - start) * 1000) if cache in ORIGIN_STATUSES else "-"
        return status, cache, zone, origin, "%.3f" % ((end - start) * 1000)

    def _clf_time(self, at: float) -> str:
        second = int(at)
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)))
        return self._stamp[1]

    def _combined(self, rec: Record, offset: float) -> str:
        req = rec[0]
        status, cache, zone, origin, total = self._fields(rec)
        h = req.headers
        target = req.target
        referer = h.get("referer", "-")
        agent = h.get("user-agent", "-")
        if _UNSAFE.search(target) or _UNSAFE.search(referer) or _UNSAFE.search(agent):
            target, referer, agent = _q(target), _q(referer), _q(agent)
        return _COMBINED % (
            req.client_ip or "-",
            self._clf_time(rec[3] + offset),
            req.method,
            target,
            req.http_version,
            status,
            rec[5],
            referer,
            agent,
            cache,
            zone,
            origin,
            total,
        )

    def _json(self, rec: Record, offset: float) -> str:
        req = rec[0]
        status, cache, zone, origin, total = self._fields(rec)
        h = req.headers
        at = rec[3] + offset
        return _JSON % (
            self._iso_time(at),
            int((at % 1) * 1000),
            _js(req.client_ip),
            _js(req.method),
            _js(req.target),
            req.http_version,
            status if status != "-" else "null",
            rec[5],
            _js(h.get("host")),
            _js(None if zone == "-" else zone),
            _js(None if cache == "-" else cache),
            "null" if origin == "-" else origin,
            total,
            _js(h.get("referer")),
            _js(h.get("user-agent")),
        )

    def _iso_time(self, at: float) -> str:
        second = int(at)
        if self._iso[0] != second:
            self._iso = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return self._iso[1]


_COMBINED = '%s - - [%s] "%s %s HTTP/%s" %s %d "%s" "%s" cache=%s zone=%s origin_ms=%s total_ms=%s\n'
_JSON = (
    '{"time": "%s.%03dZ", "client": %s, "method": %s, "target": %s, "protocol": "HTTP/%s", '
    '"status": %s, "bytes": %d, "host": %s, "zone": %s, "cache": %s, "origin_ms": %s, "total_ms": %s, '
    '"referer": %s, "user_agent": %s}\n'
)
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
"""What a quoted combined-format field may not contain as is."""


def _js(text: str | None) -> str:
    return "null" if text is None else encode_basestring(text)


def _q(text: str) -> str:
    """A request value inside a quoted combined-format field: quotes, backslashes and control
    characters escaped, so a client cannot forge a line or a field."""
    return "".join("\\" + c if c in '"\\' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class LoggedConnection(Connection):
    """A data-plane connection that notes, per request, what its handler writes and when."""

    __slots__ = ("_access", "_pending", "al_bytes", "al_head", "al_head_at", "al_req", "al_start")

    def __init__(self, server: HttpServer, access: AccessLog) -> None:
        super().__init__(server)
        self._access = access
        self._pending = access.pending
        self.al_req: Request | None = None
        self.al_start = self.al_head_at = 0.0
        self.al_head: bytes | None = None
        self.al_bytes = 0

    def write(self, data: bytes) -> None:
        if self.al_head is None:
            self.al_head = data
            self.al_head_at = _monotonic()
        self.al_bytes += len(data)
        Connection.write(self, data)

    def writelines(self, pieces: list[bytes]) -> None:
        if self.al_head is None:
            self.al_head = pieces[0]
            self.al_head_at = _monotonic()
        self.al_bytes += sum(map(len, pieces))
        Connection.writelines(self, pieces)

    def respond(self, data: bytes, keep_alive: bool) -> None:
        # Through write() and finish(), so that the record sees the response: the base class's
        # fast path calls neither.
        self.write(data)
        self.finish(keep_alive)

    def finish(self, keep_alive: bool) -> None:
        req = self.al_req
        if req is not None:
            # AccessLog.record, inlined: this runs once per request on the loop.
            self.al_req = None
            pending = self._pending
            if len(pending) < MAX_PENDING:
                pending.append(
                    (req, self.al_start, self.al_head_at, _monotonic(), self.al_head, self.al_bytes)
                )
            else:
                self._access.dropped += 1
        Connection.finish(self, keep_alive)

    def abort(self) -> None:
        req = self.al_req
        if req is not None:
            self.al_req = None
            self._access.record(
                (req, self.al_start, self.al_head_at, _monotonic(), self.al_head, self.al_bytes)
            )
        Connection.abort(self)


class LoggedHandler:
    """Wraps the data-plane handler: stamps each request's start on its connection."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def __call__(self, req: Request, conn: Connection) -> Awaitable[None] | None:
        if isinstance(conn, LoggedConnection):
            conn.al_req = req
            conn.al_start = _monotonic()
            conn.al_head = None
            conn.al_bytes = 0
        return self._handler(req, conn)


def connection_factory(access: AccessLog) -> Callable[[HttpServer], Connection]:
    """What the server builds per TCP connection when the access log is on."""
    return lambda server: LoggedConnection(server, access)
