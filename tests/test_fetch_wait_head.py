"""Readers waiting for a fill's head share one future (``Fetch.wait_head``): a client that goes
away while it waits must not end the others' wait."""

from __future__ import annotations

import asyncio

from edgecache.config import Zone
from edgecache.edge.fetch import Fetch
from edgecache.edge.zones import ZoneTable


def _fetch() -> Fetch:
    zone = Zone.model_validate(
        {"id": "a" * 32, "name": "a", "hostnames": ["a.example"], "origin": "http://127.0.0.1:9"}
    )
    runtime = ZoneTable((zone,)).by_id[zone.id]
    key = "http://a.example/x"
    return Fetch(
        runtime,
        "a.example",
        key,
        key,
        None,
        "GET",
        "http://127.0.0.1:9/x",
        {},
        "203.0.113.9",
        0,
        None,
        1 << 20,
        lambda entry, vary, headers: False,
        lambda fetch: None,
    )


def test_one_waiter_cancelled_leaves_the_others_waiting_for_the_head() -> None:
    async def run() -> tuple[bool, bool]:
        fetch = _fetch()
        gone = asyncio.create_task(fetch.wait_head())
        waiting = asyncio.create_task(fetch.wait_head())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert not waiting.done()
        fetch._head_is_in()
        await asyncio.wait({gone, waiting}, timeout=5)
        return gone.cancelled(), waiting.done() and not waiting.cancelled()

    assert asyncio.run(run()) == (True, True)
