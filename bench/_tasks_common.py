"""Shared by ``bench/tasks_api.py`` and its node launcher: the bench zone and the node's configuration.

The zone stands for ~1,000 sites' worth of purge traffic folded into one zone: it has ``hosts`` hostnames
(``s0000.shop.example`` ...), and the fill spreads its targets over them. Quotas are raised to 10^9 a
day: the defaults (100,000 URLs a day) would already be spent by the tasks the fill dates "today".
"""

from __future__ import annotations

from pathlib import Path

from edgecache.config import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_QUOTAS,
    TASK_TYPES,
    Account,
    Config,
    Listener,
    Quota,
    Zone,
)

ZONE_ID = "5e1f0c0de0000000000000000000beef"
ACCOUNT_ID = DEFAULT_ACCOUNT_ID
ZONE_NAME = "shop.example"
DAILY = 10**9


def hostnames(n: int) -> tuple[str, ...]:
    """The zone's hostnames: ``s0000.shop.example`` ... (``n`` of them)."""
    return tuple(f"s{i:04d}.{ZONE_NAME}" for i in range(n))


def make_config(data_dir: Path, hosts: int) -> Config:
    """One account, one zone with ``hosts`` hostnames, listeners on 127.0.0.1 port 0."""
    quotas = {t: Quota(batch=DEFAULT_QUOTAS[t].batch, daily=DAILY) for t in TASK_TYPES}
    zone = Zone(
        id=ZONE_ID,
        name=ZONE_NAME,
        account_id=ACCOUNT_ID,
        hostnames=hostnames(hosts),
        # Never contacted: purges do not go to the origin.
        origin="http://127.0.0.1:9",
        quotas=quotas,
    )
    return Config(
        data_dir=data_dir,
        data=Listener(host="127.0.0.1", port=0),
        control=Listener(host="127.0.0.1", port=0),
        accounts=(Account(id=ACCOUNT_ID),),
        zones=(zone,),
    )
