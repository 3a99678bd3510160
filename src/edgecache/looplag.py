"""A loop-lag probe: how long the event loop went without running anything else.

Why: every request, hit or miss, waits while one callback holds the loop (a purge being reclaimed, a
compaction, a collection). The probe is a timer that asks to run every ``every`` seconds and records
how late it ran: a stall of S seconds shows up as a lateness between S - ``every`` and S, so the
period is the resolution. Reported in ``/metrics`` and by ``bench/purge_api.py``.
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
        self.stalls = 0
        """Wake-ups later than ``STALL``."""

    def reset(self) -> float:
        """Start a new window; returns the longest lateness of the one that ends."""
        longest, self.longest = self.longest, 0.0
        return longest

    async def run(self) -> None:
        """Probe until cancelled (a task on the loop it measures)."""
        every = self.every
        while True:
            due = time.perf_counter() + every
            await asyncio.sleep(every)
            late = time.perf_counter() - due
            if late > self.longest:
                self.longest = late
            if late > STALL:
                self.stalls += 1
