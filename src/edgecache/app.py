"""The composition root: builds one node from a configuration and starts its listeners.

Nothing else in the code base wires components together; tests start nodes through here too.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from edgecache.api.control_app import build_control_app
from edgecache.config import Config
from edgecache.demo import origin as demo_origin
from edgecache.edge.http1 import HttpServer, start_server
from edgecache.edge.origin import OriginClient
from edgecache.edge.proxy import Proxy
from edgecache.edge.stats import EdgeStats
from edgecache.edge.zones import ZoneTable
from edgecache.metrics import EdgeCollector
from edgecache.store.memory import MemoryTier


class Node:
    """One edgecache node: data listener, control listener, and (for the demo) the origin."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = EdgeStats()
        self.store = MemoryTier(config.storage.memory_bytes)
        self.zones = ZoneTable(config.zones)
        self.origin = OriginClient(config.limits.origin_connect_timeout, config.limits.origin_read_timeout)
        self.proxy = Proxy(
            self.zones,
            self.store,
            self.origin,
            self.stats,
            max_object_bytes=config.storage.max_object_bytes,
        )
        self.registry = CollectorRegistry()
        self.registry.register(EdgeCollector(self.stats, self.store))
        self._data: HttpServer | None = None
        self._control: web.AppRunner | None = None
        self._demo: web.AppRunner | None = None
        self.data_port = 0
        self.control_port = 0

    async def start(self) -> None:
        """Bind every listener; ports given as 0 are chosen by the kernel (see ``*_port``)."""
        cfg = self.config
        if cfg.demo_origin is not None:
            self._demo = await demo_origin.start(cfg.demo_origin.host, cfg.demo_origin.port)
        self._data = await start_server(self.proxy, cfg.limits, cfg.data.host, cfg.data.port)
        self.data_port = self._data.port
        self._control = web.AppRunner(build_control_app(self.registry), access_log=None)
        await self._control.setup()
        await web.TCPSite(self._control, cfg.control.host, cfg.control.port).start()
        self.control_port = int(self._control.addresses[0][1])

    async def stop(self) -> None:
        """Close the listeners, then the origin pool."""
        if self._data is not None:
            await self._data.close()
        if self._control is not None:
            await self._control.cleanup()
        await self.origin.close()
        if self._demo is not None:
            await self._demo.cleanup()
