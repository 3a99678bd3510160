"""Garbage-collector policy for a process that holds a million long-lived cache entries.

Why: CPython's full (generation 2) collection walks every container object in the process. A node
holding 300k entries spends about 200 ms in one (measured: `docs/decisions/0006-gc-policy.md`), and
with the default thresholds one runs each time the long-lived heap has grown by a quarter, which on
a filling or churning cache is every few seconds: hundreds of milliseconds of stalled requests.

Policy:
- Every ``freeze_every`` seconds the survivors are moved to the permanent generation
  (``gc.freeze()``): full collections then walk only what was allocated since. Frozen objects are
  still freed by reference counting the moment they are dropped (cache entries have no cycles).
- Cycles among frozen objects would never be collected, so every ``sweep_every`` seconds the
  permanent generation is released and collected once (``gc.unfreeze()`` + ``gc.collect()``): one
  pause per sweep period instead of one per quarter of heap turnover.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)


async def keep_gc(freeze_every: float, sweep_every: float) -> None:
    """Run the policy until cancelled (a task on the node's event loop)."""
    gc.freeze()
    last_sweep = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every)
        if time.monotonic() - last_sweep >= sweep_every:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            last_sweep = time.monotonic()
            took = (time.perf_counter() - started) * 1e3
            log.info("gc sweep: %d unreachable objects, %.0f ms", found, took)
        gc.freeze()
