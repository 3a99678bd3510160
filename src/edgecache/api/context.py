"""What the control-plane routes of every dialect reach: the node's domain services."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from edgecache.control.cache_reserve import CacheReserveService
from edgecache.control.credentials import CredentialService
from edgecache.control.prefetch import PrefetchService
from edgecache.control.purges import PurgeService
from edgecache.control.queues import QueueService
from edgecache.control.quotas import QuotaService
from edgecache.control.subscriptions import SubscriptionService
from edgecache.db.tasks import TaskStore
from edgecache.edge.zones import ZoneTable


@dataclass(frozen=True, slots=True)
class ControlContext:
    """The services behind the APIs."""

    zones: ZoneTable
    credentials: CredentialService
    purges: PurgeService
    tasks: TaskStore
    quotas: QuotaService
    prefetch: PrefetchService
    queues: QueueService
    subscriptions: SubscriptionService
    cache_reserve: CacheReserveService | None = None
    """None when the node has no persistent tier."""


CONTEXT_KEY = web.AppKey("context", ControlContext)
