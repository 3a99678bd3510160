"""Zones as the data plane sees them: hostname → zone, with everything precomputed for the hot path.

Rules of this module:
- A Host value (or the authority of an absolute-form target) selects a zone by its host name alone,
  lower-cased and without port or trailing dot; the name returned is the zone's hostname as
  configured, and it is the only spelling the key and the origin ever see.
- A value that is not ``host[:port]`` by RFC 9110 §7.2 / RFC 3986 §3.2.2 (a port that is not a
  number, user information, characters a host cannot contain) is answered 400 (RFC 9112 §3.2); a
  well-formed host no zone serves, 421.
- Both verdicts are memoised per distinct value, so a plain hit pays one dict lookup for all of this.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from edgecache.config import Zone
from edgecache.httpcache.headers import EDGE_ONLY
from edgecache.httpcache.key import KeyOptions

BAD_HOST = 400
NO_ZONE = 421

_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
"""RFC 3986 §3.2.2 host (IP-literal, or reg-name, which covers IPv4) and an optional numeric port."""


@dataclass(frozen=True, slots=True)
class ZoneRuntime:
    """A configured zone plus what each request would otherwise recompute."""

    config: Zone
    key_options: KeyOptions
    has_variants: bool
    origin: str
    hostnames: frozenset[str]
    """The zone's hostnames as a set: purge validation tests membership per target."""
    trusted_fields: frozenset[str] = frozenset()
    """Edge-only request fields this zone accepts from a trusted proxy (see ``config.ClientTrust``)."""
    edge_only: frozenset[str] = EDGE_ONLY
    """The request fields only an edge may set: ``EDGE_ONLY``, and the country header when the key
    uses one (``edge/forwarding.py`` drops a client's values unless trusted)."""
    peer_memo: dict[str, bool] = field(default_factory=dict, compare=False)
    """Peer address → whether it is one of the trusted proxies (at most ``PEER_MEMO_MAX`` entries)."""
    id: str = field(init=False)
    """``config.id``; with the three below, what every fill reads of the zone's configuration, kept
    here: a read of a pydantic model's field is not specialised by CPython (its class has a
    ``__getattr__``) and costs ~330 instructions more than a slot's (decision 0008, update 12)."""
    cache_set_cookie: bool = field(init=False)
    heuristic_fraction: float = field(init=False)
    heuristic_max: float = field(init=False)

    def __post_init__(self) -> None:
        config = self.config
        object.__setattr__(self, "id", config.id)
        object.__setattr__(self, "cache_set_cookie", config.cache_set_cookie)
        object.__setattr__(self, "heuristic_fraction", config.heuristic_fraction)
        object.__setattr__(self, "heuristic_max", config.heuristic_max)

    def trusted_from(self, peer: str) -> frozenset[str]:
        """The edge-only fields whose values count for a request from ``peer``."""
        if not self.trusted_fields:
            return self.trusted_fields
        memo = self.peer_memo
        ok = memo.get(peer)
        if ok is None:
            ok = _in_networks(peer, self.config.trust.proxies)
            if len(memo) >= PEER_MEMO_MAX:
                memo.clear()
            memo[peer] = ok
        return self.trusted_fields if ok else frozenset()


PEER_MEMO_MAX = 4096


def _in_networks(peer: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


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
        self._memo: dict[str, tuple[ZoneRuntime, str] | int] = {}
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
                trusted_fields=frozenset(zone.trust.fields),
                edge_only=EDGE_ONLY | {opts.country_header} if opts.country else EDGE_ONLY,
            )
            self.by_id[zone.id] = rt
            self._by_eo_id[zone.eo_id] = rt
            for host in zone.hostnames:
                self._by_host[host] = rt

    def lookup(self, zone_id: str) -> ZoneRuntime | None:
        """The zone with this id: ours (32 hex) or its EdgeOne-style one (``zone-2o3h21ed8bpu``)."""
        return self.by_id.get(zone_id) or self._by_eo_id.get(zone_id)

    def for_host(self, host_header: str) -> tuple[ZoneRuntime, str] | int:
        """The zone serving a Host value or target authority, and its hostname as configured (which
        the key and the origin's Host use); else the status to answer: :data:`BAD_HOST` or
        :data:`NO_ZONE`."""
        try:
            return self._memo[host_header]
        except KeyError:
            pass
        found = self._resolve(host_header)
        if len(self._memo) >= HOST_MEMO_MAX:
            self._memo.clear()
        self._memo[host_header] = found
        return found

    def _resolve(self, host_header: str) -> tuple[ZoneRuntime, str] | int:
        if _AUTHORITY.fullmatch(host_header) is None:
            return BAD_HOST
        host = host_header.lower()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif ":" in host:
            host = host.rsplit(":", 1)[0]
        host = host.rstrip(".")
        rt = self._by_host.get(host)
        return NO_ZONE if rt is None else (rt, host)
