"""The loop-lag probe's CPU figure is the loop thread's exact CPU, and ``StepTimer`` names the task
that held the loop: what a benchmark reports as the longest stall and its cause."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
import uvloop

from edgecache.looplag import LoopLag, StepTimer


def spin(seconds: float) -> None:
    """Hold the loop's thread for ``seconds`` of its own CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def work(n: int) -> int:
    """Computing without a system call (reading the thread's CPU clock would bring the kernel's
    per-thread run time up to date, and hide what the test is about)."""
    return sum(i * i for i in range(n))


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")
def test_the_schedstat_probe_reads_a_short_stall_s_cpu_exactly() -> None:
    """1.5 ms of computing, less than a scheduler tick: the kernel's schedstat run time read it as
    what ran up to the last tick (often 0: a tick is 4 ms at 250 Hz); the probe reads the thread's
    CPU clock instead."""
    n = 20_000
    c0 = time.thread_time()
    work(n)
    per = (time.thread_time() - c0) / n
    n = int(0.0015 / per)
    costs = []
    for _ in range(3):
        c0 = time.thread_time()
        work(n)
        costs.append(time.thread_time() - c0)
    cost = min(costs)

    async def go() -> LoopLag:
        probe = LoopLag(0.001, schedstat=True)
        task = asyncio.get_running_loop().create_task(probe.run())
        await asyncio.sleep(0.01)
        work(n)
        await asyncio.sleep(0.005)
        task.cancel()
        return probe

    probe = asyncio.run(go())
    assert cost * 0.9 <= probe.longest_cpu < cost * 1.5 + 0.001


RUNNERS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]


@pytest.mark.parametrize("run", RUNNERS)
def test_the_step_timer_names_the_task_that_held_the_loop(run: Any) -> None:
    async def hog() -> str:
        await asyncio.sleep(0)
        spin(0.02)  # one step of 20 ms
        await asyncio.sleep(0)
        return "done"

    async def chatter() -> int:
        for _ in range(50):
            spin(0.0002)
            await asyncio.sleep(0)
        return 50

    async def go() -> tuple[StepTimer, str, int]:
        timer = StepTimer()
        timer.install(asyncio.get_running_loop())
        named = asyncio.get_running_loop().create_task(chatter(), name="chatter-task")
        a, b = await asyncio.gather(asyncio.ensure_future(hog()), named)
        assert named.get_name() == "chatter-task"  # the factory passes the task's name on
        return timer, a, b

    timer, a, b = run(go())
    assert (a, b) == ("done", 50)  # results go through the timed steps unchanged
    name, cpu, wall = timer.longest
    # The task's function, then the two awaits around the step: hog's first and second sleep.
    first, second = (hog.__code__.co_firstlineno + n for n in (1, 3))
    q = hog.__qualname__
    assert name == f"{q} ({q}:{first} → {q}:{second})" and cpu >= 0.02
    assert timer.reset() == (name, cpu, wall) and timer.longest == ("", 0.0, 0.0)


@pytest.mark.parametrize("run", RUNNERS)
def test_timed_tasks_still_raise_and_cancel(run: Any) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def waits(started: asyncio.Event) -> None:
        started.set()
        await asyncio.sleep(10)

    async def go() -> tuple[BaseException | None, bool, str]:
        timer = StepTimer()
        timer.install(asyncio.get_running_loop())
        bad = asyncio.ensure_future(fails())
        with pytest.raises(ValueError):
            await bad
        started = asyncio.Event()
        slow = asyncio.ensure_future(waits(started))
        await started.wait()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return bad.exception(), slow.cancelled(), timer.longest[0]

    error, cancelled, name = run(go())
    assert (
        isinstance(error, ValueError) and cancelled and name.split(" (")[0].endswith(("fails", "waits", "go"))
    )
