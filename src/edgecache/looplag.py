"""A loop-lag probe: how long the event loop went without running anything else.

Why: every request, hit or miss, waits while one callback holds the loop (a purge being reclaimed, a
compaction, a collection). The probe is a timer that asks to run every ``every`` seconds and records
how late it ran: a stall of S seconds shows up as a lateness between S - ``every`` and S, so the
period is the resolution. Reported in ``/metrics`` and by ``bench/purge_api.py``.

On a shared or overloaded machine wall-clock lateness also counts the time the process was not
scheduled at all, which no code of ours causes; so the probe also records the loop thread's own CPU
time over each period (``time.thread_time``): the work that held the loop, whatever the neighbours do.

A loop can also stall without computing: its thread blocked on a lock another thread of the process
holds (glibc's arena lock during a ``malloc_trim``, the GIL during a long C call). With
``schedstat`` the probe reads the kernel's per-thread scheduler statistics each period
(``/proc/thread-self/schedstat``: time on a CPU and time runnable but waiting for one), so that a
period's lateness splits into computing, waiting for a CPU (the machine's load) and the rest:
blocked in the process. One small read per period, so benchmarks turn it on, the node does not.
The CPU time is ``time.thread_time`` in both modes, never the schedstat file's first field: the
kernel brings a running thread's figure there up to date only at a scheduler tick or a switch, so
two reads can be a tick apart in error (4 ms at this kernel's 250 Hz: a millisecond of computing
read as 0, 11.4 ms as 8.8; docs/benchmarks.md, the "Purges" subsection of 2026-11-30, `stall`).
The wait for a CPU is exact there: the kernel adds it when the thread gets a CPU again, before it
can read the file.

What held the loop: ``StepTimer`` times each step of every task (one ``send`` into its coroutine,
from one ``await`` that suspended to the next) and keeps the longest, named by the coroutine's
function and by where it resumed and where it suspended again (the innermost coroutine's function
and line at each end), so that a benchmark can say which task held the loop when the probe saw a
stall, and between which two awaits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Generator
from typing import Any

STALL = 0.010
"""Lateness counted as a stall (the data plane's budget for one uninterrupted piece of work)."""


def _queued(fd: int) -> int:
    """This thread's nanoseconds runnable waiting for a CPU so far, from an open schedstat file."""
    return int(os.pread(fd, 64, 0).split()[1])


class LoopLag:
    """The longest lateness of a periodic timer on the running loop, and how often it exceeded
    ``STALL``."""

    def __init__(self, every: float, schedstat: bool = False) -> None:
        self.every = every
        self.schedstat = schedstat
        """Whether to split lateness with the kernel's per-thread statistics (see the module)."""
        self.longest = 0.0
        """Seconds: the worst lateness since the start (or ``reset``)."""
        self.longest_cpu = 0.0
        """Seconds: the most CPU time the loop thread spent in one probe period (it ran something
        other than the probe for that long without a break, give or take the period)."""
        self.longest_unqueued = 0.0
        """Seconds (``schedstat`` only): the worst lateness less the time the loop thread waited for
        a CPU in that period: what the process itself caused, computing or blocked."""
        self.worst = (0.0, 0.0, 0.0)
        """(lateness, CPU, waited for a CPU) of the period with the worst ``longest_unqueued``
        (``schedstat`` only), so that a stall can be told computing from blocked."""
        self.worst_end = 0.0
        """``time.perf_counter()`` at the end of that period (to find what ran meanwhile)."""
        self.stalls = 0
        """Wake-ups later than ``STALL``."""

    def reset(self) -> tuple[float, float]:
        """Start a new window; returns ``(longest, longest_cpu)`` of the one that ends."""
        ended = (self.longest, self.longest_cpu)
        self.longest = self.longest_cpu = self.longest_unqueued = 0.0
        self.worst = (0.0, 0.0, 0.0)
        self.worst_end = 0.0
        return ended

    async def run(self) -> None:
        """Probe until cancelled (a task on the loop it measures)."""
        if self.schedstat:
            await self._run_schedstat()
            return
        every = self.every
        while True:
            due = time.perf_counter() + every
            cpu = time.thread_time()
            await asyncio.sleep(every)
            late = time.perf_counter() - due
            busy = time.thread_time() - cpu
            if late > self.longest:
                self.longest = late
            if busy > self.longest_cpu:
                self.longest_cpu = busy
            if late > STALL:
                self.stalls += 1

    async def _run_schedstat(self) -> None:
        every = self.every
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            while True:
                due = time.perf_counter() + every
                cpu = time.thread_time()
                queued0 = _queued(fd)
                await asyncio.sleep(every)
                late = time.perf_counter() - due
                busy = time.thread_time() - cpu
                queued = (_queued(fd) - queued0) / 1e9
                if late > self.longest:
                    self.longest = late
                if busy > self.longest_cpu:
                    self.longest_cpu = busy
                if late - queued > self.longest_unqueued:
                    self.longest_unqueued = late - queued
                    self.worst = (late, busy, queued)
                    self.worst_end = due + late
                if late > STALL:
                    self.stalls += 1
        finally:
            os.close(fd)


class StepTimer:
    """The longest step of any task on a loop (see the module): install it as the loop's task
    factory before the tasks to watch are created. Each step costs four clock reads and a Python
    call more (+1.6 µs on uvloop over a bare step's 0.85 µs: docs/benchmarks.md): for benchmarks
    that run a node in process, not the node; it sits beside ``LoopLag``, whose windows it names.
    Only task steps are timed: plain callbacks (``call_soon``, timers, protocols) are not. Finding
    where a step ended walks the task's chain of awaited coroutines (about a microsecond more)."""

    def __init__(self) -> None:
        self.longest: tuple[str, float, float] = ("", 0.0, 0.0)
        """(name, loop-thread CPU seconds, wall seconds) of the step with the most CPU since the
        start (or ``reset``); the name is the task's function, then where the step resumed and
        where it suspended, e.g. ``Reclaimer._run (Reclaimer._pause:270 → Reclaimer.compact:391)``."""

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time the steps of every task created on ``loop`` from now on."""

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            return asyncio.Task(_Timed(coro, self), loop=loop, **kwargs)

        loop.set_task_factory(factory)

    def reset(self) -> tuple[str, float, float]:
        """Start a new window; returns the longest step of the one that ends."""
        ended = self.longest
        self.longest = ("", 0.0, 0.0)
        return ended


_ASYNCIO = os.path.dirname(asyncio.__file__)


def _where(coro: Any) -> str:
    """Where a suspended coroutine waits: the function and line of the innermost coroutine in the
    chain it awaits, asyncio's own (``sleep``'s) left out; "start" before its first step, "end" after
    its last."""
    frame = None
    while coro is not None:
        inner = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if inner is None or inner.f_code.co_filename.startswith(_ASYNCIO):
            break
        frame = inner
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if frame is None:
        return "end"
    if frame.f_lasti < 0:
        return "start"
    return f"{frame.f_code.co_qualname}:{frame.f_lineno}"


class _Timed(Coroutine[Any, Any, Any]):
    """A coroutine that times each step of the one it wraps (what a task runs in one callback)."""

    __slots__ = ("_at", "_coro", "_name", "_timer")

    def __init__(self, coro: Coroutine[Any, Any, Any], timer: StepTimer) -> None:
        self._coro = coro
        self._name: str = getattr(coro, "__qualname__", type(coro).__name__)
        self._timer = timer
        self._at = "start"
        """Where the coroutine waits between two steps (``_where``)."""

    def _stepped(self, cpu: float, wall: float) -> None:
        resumed, self._at = self._at, _where(self._coro)
        timer = self._timer
        if cpu > timer.longest[1]:
            timer.longest = (f"{self._name} ({resumed} → {self._at})", cpu, wall)

    def send(self, value: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return self._coro.send(value)
        finally:
            self._stepped(time.thread_time() - cpu, time.perf_counter() - wall)

    def throw(self, *args: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return self._coro.throw(*args)
        finally:
            self._stepped(time.thread_time() - cpu, time.perf_counter() - wall)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        # A task drives the wrapper through send/throw and never awaits it; this is here for the
        # Coroutine interface, untimed.
        return self._coro.__await__()
