"""A loop-lag probe: how long the event loop went without running anything else.

Why: every request, hit or miss, waits while one callback holds the loop (a purge being reclaimed, a
compaction, a collection). The probe is a timer that asks to run every ``every`` seconds and records
how late it ran: a stall of S seconds shows up as a lateness between S - ``every`` and S, so the
period is the resolution. Reported in ``/metrics`` and by ``bench/purge_api.py``.

On a shared or overloaded machine wall-clock lateness also counts the time the process was not
scheduled at all, which no code of ours causes; so the probe also records the loop thread's own CPU
time over each period (``time.thread_time``): the work that held the loop, whatever the neighbours do.
"""

from __future__ import annotations

import asyncio
import time

STALL = 0.010
"""Lateness counted as a stall (the data plane's budget for one uninterrupted piece of work)."""


class LoopLag:
    """The longest lateness of a periodic timer on the running loop, and how often it exceeded
    ``STALL``."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.longest = 0.0
        """Seconds: the worst lateness since the start (or ``reset``)."""
        self.longest_cpu = 0.0
        """Seconds: the most CPU time the loop thread spent in one probe period (it ran something
        other than the probe for that long without a break, give or take the period)."""
        self.stalls = 0
        """Wake-ups later than ``STALL``."""

    def reset(self) -> tuple[float, float]:
        """Start a new window; returns ``(longest, longest_cpu)`` of the one that ends."""
        ended = (self.longest, self.longest_cpu)
        self.longest = self.longest_cpu = 0.0
        return ended

    async def run(self) -> None:
        """Probe until cancelled (a task on the loop it measures)."""
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
