"""What the origin receives: the request the cache keyed, never a spelling the key did not see.

Rules of this module:
- ``Host`` and ``X-Forwarded-Host`` are the zone hostname the key was built from (lower-case, no
  port, no trailing dot), whatever the client wrote in Host or in an absolute-form target; the
  origin's own address and port are the connection's business, not the Host field's.
- Hop-by-hop fields and the fields named in Connection are not forwarded (RFC 9110 §7.6.1). The
  proxy removes the Connection-named ones from a request before it keys a fill
  (``Proxy._drop_connection_options``), so the key never depends on a field the origin did not get;
  Host is set here whatever Connection says.
- Edge-only request fields (``httpcache.headers.EDGE_ONLY`` and the zone's country header) pass only
  when the zone trusts them from this peer. The edge sets its own: ``CF-Connecting-IP`` is the peer
  (or the trusted value), ``X-Forwarded-For`` is the peer appended to a trusted list or alone,
  ``CF-Visitor`` and ``X-Forwarded-Proto`` name the scheme, and ``CF-Device-Type`` is the device type
  the key selected when the zone keys on it, so the origin renders the variant it is filed under.
- ``Forwarded`` (RFC 7239) is the edge's too, and we do not emit it: a client's is removed.
- Control-plane credentials and our internal ``x-edgecache-*`` fields never leave.
- Fields that common origin frameworks read as an override of the URL, method, host, port or scheme
  (``UNKEYED_OVERRIDES``) never leave either: the key does not include them, so forwarding them would
  let one client choose what the origin renders under everyone's key.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgecache.edge.zones import ZoneRuntime
from edgecache.httpcache.headers import HOP_BY_HOP, connection_options
from edgecache.httpcache.key import variant_device_type

CONTROL_HEADERS = frozenset({"x-auth-key", "x-auth-email", "x-auth-user-service-key"})
"""Request fields that carry control-plane credentials: never forwarded."""

UNKEYED_OVERRIDES = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-host",
        "x-forwarded-server",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "front-end-https",
    }
)
"""Request fields that frameworks (IIS/ASP.NET, Symfony, Rails, Flask middlewares) honour as the real
URL, method, host, port or scheme: the classic unkeyed inputs of cache-poisoning attacks."""

EDGE_SET = frozenset({"host", "x-forwarded-host", "x-forwarded-proto", "via", "forwarded", "content-length"})
"""Fields this module writes itself (or, for Forwarded and Content-Length, leaves to others)."""


NEVER_FORWARDED = HOP_BY_HOP | EDGE_SET | CONTROL_HEADERS | UNKEYED_OVERRIDES
"""Names dropped whatever the zone and the peer: one set, so each field costs one probe."""

_BLOCKED: dict[tuple[frozenset[str], frozenset[str], frozenset[str]], frozenset[str]] = {}
"""(edge-only fields, trusted fields, caller's drop) → every name not forwarded for them. The keys
come from the configuration and the callers' constants, so the memo stays as small as they are."""


def _blocked(edge_only: frozenset[str], trusted: frozenset[str], drop: frozenset[str]) -> frozenset[str]:
    memo_key = (edge_only, trusted, drop)
    blocked = _BLOCKED.get(memo_key)
    if blocked is None:
        blocked = _BLOCKED[memo_key] = NEVER_FORWARDED | (edge_only - trusted) | drop
    return blocked


def forward_headers(
    headers: Mapping[str, str],
    client_ip: str,
    zone: ZoneRuntime,
    host: str,
    *,
    drop: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The request fields to send to ``zone``'s origin for a request from ``client_ip`` that the cache
    keyed under ``host``. Content-Length is left to the client library, which frames the body."""
    trusted = zone.trusted_from(client_ip)
    edge_only = zone.edge_only
    blocked = _blocked(edge_only, trusted, drop)
    connection = headers.get("connection")
    if connection:
        blocked = blocked | connection_options(connection)
    out = {
        name: value
        for name, value in headers.items()
        if name not in blocked and not name.startswith("x-edgecache-")
    }
    out["host"] = host
    out["x-forwarded-host"] = host
    out["x-forwarded-proto"] = "http"
    prior = out.get("x-forwarded-for")
    out["x-forwarded-for"] = f"{prior}, {client_ip}" if prior else client_ip
    if "cf-connecting-ip" not in out:
        out["cf-connecting-ip"] = client_ip
    if "cf-visitor" not in out:
        out["cf-visitor"] = '{"scheme":"http"}'
    if zone.key_options.device_type:
        out["cf-device-type"] = variant_device_type(headers, trusted)
    via = headers.get("via")
    out["via"] = f"{via}, 1.1 edgecache" if via else "1.1 edgecache"
    return out
