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
"""

from __future__ import annotations

import asyncio
import os
import time

STALL = 0.010
"""Lateness counted as a stall (the data plane's budget for one uninterrupted piece of work)."""


def _schedstat(fd: int) -> tuple[int, int]:
    """This thread's nanoseconds on a CPU and runnable waiting for one, from an open schedstat file."""
    run, queued, _ = os.pread(fd, 64, 0).split()
    return int(run), int(queued)


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
                run0, queued0 = _schedstat(fd)
                await asyncio.sleep(every)
                late = time.perf_counter() - due
                run1, queued1 = _schedstat(fd)
                busy = (run1 - run0) / 1e9
                queued = (queued1 - queued0) / 1e9
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
