"""A node in its own process, for tests that kill it:
``python crash_node.py DATA_DIR ORIGIN_URL [MAX_OBJECT_BYTES]``.

Prints one JSON line with its ports and an API token once it serves, then runs until killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import uvloop

from edgecache.app import Node
from edgecache.config import Config, Listener, Storage, Zone
from edgecache.control.credentials import Permission

ZONE = "0123456789abcdef0123456789abcdef"


async def main(data_dir: Path, origin: str, storage: Storage) -> None:
    zone = Zone(id=ZONE, name="crash.example", hostnames=("crash.example",), origin=origin)
    node = Node(
        Config(
            data_dir=data_dir, data=Listener(port=0), control=Listener(port=0), zones=(zone,), storage=storage
        )
    )
    await node.start()
    _, token = await asyncio.to_thread(
        node.credentials.create_token, zone.account_id, "crash", [Permission.CACHE_PURGE], None
    )
    print(json.dumps({"data": node.data_port, "control": node.control_port, "token": token}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    limit = {"max_object_bytes": int(sys.argv[3])} if len(sys.argv) > 3 else {}
    uvloop.run(main(Path(sys.argv[1]), sys.argv[2], Storage(**limit)))
