"""The long-running tasks of one process (housekeeping loops, probes), started once by name and
cancelled together at stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """Named background tasks: starting a name twice keeps the first (a process that serves both
    planes asks for the shared ones twice)."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` on the running loop unless a task of this name already runs."""
        if name not in self._tasks:
            self._tasks[name] = asyncio.get_running_loop().create_task(work(), name=name)

    async def stop(self) -> None:
        """Cancel every task and wait for each to end."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
