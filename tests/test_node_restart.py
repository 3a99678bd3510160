"""What a node finds when it starts on the data directory of an earlier run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from edgecache.app import Node
from edgecache.config import Config, Listener, Zone
from edgecache.db.ledger import LedgerStore, NewPurge
from edgecache.db.tasks import NewTask

ZONE = "c" * 32


def config(tmp_path: Path) -> Config:
    zone = Zone(id=ZONE, name="restart.example", hostnames=("restart.example",), origin="http://127.0.0.1:9")
    return Config(data_dir=tmp_path, data=Listener(port=0), control=Listener(port=0), zones=(zone,))


def test_restart_keeps_ledger_numbering_and_settles_interrupted_tasks(tmp_path: Path) -> None:
    async def first_run() -> int:
        node = Node(config(tmp_path))
        await node.start()
        await node.stop()
        # A purge accepted just before a crash: durable, its task still processing.
        return LedgerStore(node.database).append(
            NewPurge(
                zone_id=ZONE,
                mode="delete",
                selectors={"tags": ["t"]},
                principal="token:x",
                dialect="cloudflare",
                job_id="d" * 32,
                created_at=datetime.now(UTC),
                tasks=[NewTask("t", "purge_cache_tag", None, "delete")],
            )
        )

    async def second_run() -> tuple[int, str]:
        node = Node(config(tmp_path))
        await node.start()
        try:
            [task] = node.tasks.by_job("d" * 32)
            return node.index.position, task.status
        finally:
            await node.stop()

    seq = asyncio.run(first_run())
    position, status = asyncio.run(second_run())
    assert position == seq  # new entries are stored after the last durable purge
    assert status == "success"
