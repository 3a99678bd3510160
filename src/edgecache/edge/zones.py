"""Zones as the data plane sees them: hostname → zone, with everything precomputed for the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecache.config import Zone
from edgecache.httpcache.key import KeyOptions


@dataclass(frozen=True, slots=True)
class ZoneRuntime:
    """A configured zone plus what each request would otherwise recompute."""

    config: Zone
    key_options: KeyOptions
    has_variants: bool
    origin: str
    hostnames: frozenset[str]
    """The zone's hostnames as a set: purge validation tests membership per target."""
    key_memo: dict[str, str] = field(default_factory=dict, compare=False)
    """``host + " " + target`` → primary key, for zones without variant parts (bounded by the proxy)."""


def key_options(zone: Zone) -> KeyOptions:
    """The zone's cache-key options in the pure core's terms."""
    ck = zone.cache_key
    return KeyOptions(
        query=ck.query,
        device_type=ck.device_type,
        country=ck.country,
        country_header=ck.country_header,
        language=ck.language,
        origin=ck.origin,
        extra_headers=ck.extra_headers,
    )


HOST_MEMO_MAX = 4096
"""Distinct Host values remembered; a client sending random hosts only empties it now and then."""


class ZoneTable:
    """Hostname (lower-case, no port) → zone."""

    def __init__(self, zones: tuple[Zone, ...]) -> None:
        self.by_id: dict[str, ZoneRuntime] = {}
        self._by_eo_id: dict[str, ZoneRuntime] = {}
        self._by_host: dict[str, ZoneRuntime] = {}
        self._memo: dict[str, tuple[ZoneRuntime, str] | None] = {}
        for zone in zones:
            opts = key_options(zone)
            rt = ZoneRuntime(
                config=zone,
                key_options=opts,
                has_variants=bool(
                    opts.device_type or opts.country or opts.language or opts.origin or opts.extra_headers
                ),
                origin=zone.origin,
                hostnames=frozenset(zone.hostnames),
            )
            self.by_id[zone.id] = rt
            self._by_eo_id[zone.eo_id] = rt
            for host in zone.hostnames:
                self._by_host[host] = rt

    def lookup(self, zone_id: str) -> ZoneRuntime | None:
        """The zone with this id: ours (32 hex) or its EdgeOne-style one (``zone-2o3h21ed8bpu``)."""
        return self.by_id.get(zone_id) or self._by_eo_id.get(zone_id)

    def for_host(self, host_header: str) -> tuple[ZoneRuntime, str] | None:
        """The zone serving a Host header value, and the host as the cache key names it
        (lower-case, without port or trailing dot)."""
        try:
            return self._memo[host_header]
        except KeyError:
            pass
        found = self._resolve(host_header)
        if len(self._memo) >= HOST_MEMO_MAX:
            self._memo.clear()
        self._memo[host_header] = found
        return found

    def _resolve(self, host_header: str) -> tuple[ZoneRuntime, str] | None:
        host = host_header.lower()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif ":" in host:
            host = host.rsplit(":", 1)[0]
        host = host.rstrip(".")
        rt = self._by_host.get(host)
        return None if rt is None else (rt, host)
