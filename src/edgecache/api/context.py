"""What the control-plane routes of every dialect reach: the node's domain services."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

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


CONTEXT_KEY = web.AppKey("context", ControlContext)
