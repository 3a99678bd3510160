"""The data plane's access log: a binary record per answered request, put in a shared-memory ring
on the event loop, and a formatter process that turns records into lines (decision 0016).

Theory of operation:
- Off by default. When on, the server is built with :class:`LoggedConnection`, a ``Connection``
  that sets its own ``_alog`` hook (``Connection._alog``) and times what the handler writes;
  when off, it does not exist and the hit path pays three ``is not None`` tests.
- A fresh hit is answered through ``Connection.respond`` (the cache's one-write answer), which
  calls the hook: the ring's C capture (:attr:`RingWriter.hit`, ``edge/_logcapture.c``,
  decision 0017). In C it reads the request's ``raw`` and ``client_ip`` slots, the clock and the
  status digits of the response, and packs one record into its batch buffer; no Python object is
  made. Its cache status is HIT by what ``respond`` is for, so the head is not searched. The
  request is, as a rule, the bytes of the read its head began (the server keeps that read when
  it began between requests), which the formatter parses for method, target, version, Host,
  Referer and User-Agent; otherwise (a head split over reads, a pipelined request after the
  first, a read of more than 4 KiB) its values. Any other answer goes through
  ``write``/``writelines``/``finish``, where the clock is read at the handler's return (a task's
  start, or a ``PENDING`` return), the first write and the end, the head is searched for
  ``CF-Cache-Status``, and the same capture packs the record (:attr:`RingWriter.add`).
- Every 64 requests (or 50 ms) the capture copies its batch into the shared-memory ring (one
  memcpy and a CRC-32C). No formatting, no clock conversion, no I/O, no lock, never a wait.
- Every data-plane process writes its own ring (``<pid>-<token>.ring`` in the node's ring
  directory, on tmpfs when there is one); :class:`FormatterProcess` runs
  ``edgecache.edge.logtail`` as a child process that reads every ring in that directory and
  writes the file, and starts it again if it dies. Its CPU is its own: it does not take the
  interpreter lock from the loop, as a writer thread would.
- What is timed: ``total`` from the handler's return (for answers a task or the handler's
  callbacks write) or from the end (for answers written at once: a hit logs 0) to the end of the
  response; ``origin`` to the response head (the formatter shows it for answers that needed the
  origin). As nginx's cached clock, the log's resolution stops at the work of one callback: a hit
  takes microseconds.
- Requests the server rejects itself (400, 408, 413, ... before any handler) are counted in the
  metrics, not logged here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from edgecache.edge.http1 import Connection, HttpServer
from edgecache.edge.logformat import Format
from edgecache.edge.logring import RingWriter, read_counts

log = logging.getLogger(__name__)
_monotonic = time.monotonic

_CF = b"\r\nCF-Cache-Status: "
_CF_LEN = len(_CF)
RESTART_AFTER = 1.0
"""Seconds between a formatter's unexpected exit and its restart."""
READY = b"ready\n"
READY_WITHIN = 30.0
STOP_GRACE = 10.0
"""Seconds a stopping formatter has to write what is left before it is killed."""


class LoggedConnection(Connection):
    """A data-plane connection that records, per request, what its handler wrote and when. A fresh
    hit is recorded by the server's own ``respond`` (through the ring's C capture,
    :attr:`RingWriter.hit`); this class times and records every other answer."""

    __slots__ = ("_add", "al_bytes", "al_head", "al_head_at", "al_start")

    def __init__(self, server: HttpServer, ring: RingWriter) -> None:
        super().__init__(server)
        self._alog = ring.hit
        self._add = ring.add
        self.al_start = self.al_head_at = 0.0
        self.al_head: bytes | None = None
        self.al_bytes = 0

    def _run(self, awaitable: Awaitable[None], seq: int) -> Coroutine[Any, Any, None]:
        # Answered by a task: its time runs from the handler's return (the lookup before took
        # microseconds). A request answered at once reads the clock once, when it is done. An
        # answer handed to a task after a PENDING return keeps the time it started with.
        if not self.al_start:
            self.al_start = _monotonic()
        return Connection._run(self, awaitable, seq)

    def _answers_later(self) -> None:
        # Answered from the handler's callbacks (PENDING): timed from the handler's return too.
        self.al_start = _monotonic()

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

    def finish(self, keep_alive: bool) -> None:
        if self._areq is not None:
            self._record()
        Connection.finish(self, keep_alive)

    def abort(self) -> None:
        if self._areq is not None:
            self._record()
        Connection.abort(self)

    def _record(self) -> None:
        """Record a request answered through write() (anything but a fresh hit)."""
        req = self._areq
        assert req is not None
        self._areq = None
        end = _monotonic()
        start = self.al_start or end
        head = self.al_head
        status = cache = b""
        head_at = end
        if head is not None:
            head_at = self.al_head_at
            status = head[9:12]
            i = head.find(_CF, 0, 4096)
            if i >= 0:
                i += _CF_LEN
                cache = head[i : head.find(b"\r", i)]
        self._add(req, end, start, head_at, cache, self.al_bytes, status)
        self.al_start = 0.0
        self.al_head = None
        self.al_bytes = 0


def connection_factory(ring: RingWriter) -> Callable[[HttpServer], Connection]:
    """What the server builds per TCP connection when the access log is on."""
    return lambda server: LoggedConnection(server, ring)


class FormatterProcess:
    """The node's access-log formatter as a supervised child process."""

    def __init__(self, ring_dir: Path, output: Path, fmt: Format) -> None:
        self.ring_dir = ring_dir
        self.output = output
        self.format = fmt
        self.restarts = 0
        self.started = False
        """Whether this process runs the formatter (a node's control plane does, its workers not)."""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the formatter and keep it running until :meth:`stop`."""
        self.started = True
        self._proc = await self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgecache.edge.logtail",
            "--dir",
            str(self.ring_dir),
            "--format",
            self.format,
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.PIPE,
        )
        # Ready once it has its signal handlers and its file: a stop from then on loses nothing.
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), READY_WITHIN)
        except TimeoutError:
            ready = b""
        if ready != READY:
            log.error("the access-log formatter did not start (it said %r)", ready)
        return proc

    async def _supervise(self) -> None:
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning(
                "access-log formatter exited with status %s; starting it again",
                code,
                extra={"event": "access_log_formatter_exited", "status": code},
            )
            await asyncio.sleep(RESTART_AFTER)
            if self._stopping:
                return
            self._proc = await self._spawn()

    async def stop(self) -> None:
        """Let the formatter write what the rings hold, then end it."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.error("access-log formatter did not stop in %g s; killing it", STOP_GRACE)
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def close_ring(ring: RingWriter) -> None:
    """Unmap a process's ring; remove it if the formatter read all of it (else a later formatter
    will, and remove it then)."""
    counts = read_counts(ring.path)
    ring.close(unlink=counts.logged + counts.lost >= counts.written)
