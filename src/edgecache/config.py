"""Configuration: a TOML file validated with pydantic, or the embedded demo defaults.

Rules: every setting has a default that works on a laptop; validation errors name the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator, model_validator

from edgecache.allocator import Setting
from edgecache.httpcache.headers import EDGE_ONLY

Plan = Literal["free", "pro", "business", "enterprise"]

ZONE_ID = re.compile(r"^[0-9a-f]{32}$")
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Model):
    """An address to listen on."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class CacheKeyOptions(_Model):
    """What goes into the cache key beyond scheme, host and path (see httpcache.key)."""

    query: Literal["include", "ignore", "sort"] = "include"
    device_type: bool = False
    country: bool = False
    country_header: str = "CF-IPCountry"
    language: bool = False
    origin: bool = False
    extra_headers: tuple[str, ...] = ()

    @field_validator("country_header")
    @classmethod
    def _lower_header(cls, v: str) -> str:
        return v.lower()

    @field_validator("extra_headers")
    @classmethod
    def _lower_headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({h.lower() for h in v}))


class ClientTrust(_Model):
    """Which edge-only request fields (CF-IPCountry, CF-Device-Type, CF-Connecting-IP, CF-Ray,
    CF-Visitor, True-Client-IP, X-Real-IP, X-Forwarded-For, and the zone's country header) a zone
    accepts from the peer, and from which peers: set it when a proxy you run sits in front of
    edgecache and sets them. Untrusted values are removed; the device type then comes from
    User-Agent, the country is empty, and CF-Connecting-IP / X-Forwarded-For name the real peer."""

    fields: tuple[str, ...] = ()
    proxies: tuple[IPvAnyNetwork, ...] = ()
    """Peer networks the fields are accepted from (``0.0.0.0/0`` and ``::/0`` for every peer)."""

    @field_validator("fields")
    @classmethod
    def _lower_fields(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({h.strip().lower() for h in v}))

    @model_validator(mode="after")
    def _proxies_named(self) -> ClientTrust:
        if self.fields and not self.proxies:
            raise ValueError("trusted fields need the proxies they are accepted from (trust.proxies)")
        return self


DEFAULT_ACCOUNT_ID = "9a7806061c88ada191ed06f989cc3dac"


class PurgeRate(_Model):
    """A token bucket: refill per second and bucket size."""

    per_second: float = Field(gt=0)
    burst: float = Field(ge=1)


class Account(_Model):
    """An account owns zones and credentials; purge rate limits apply per account."""

    id: str = DEFAULT_ACCOUNT_ID
    name: str = "default"
    plan: Plan = "enterprise"
    """Selects the default purge limits (Cloudflare's published numbers for that plan)."""
    flex_purge: PurgeRate | None = None
    """Override the tag/host/prefix/everything purge bucket."""
    single_file_purge: PurgeRate | None = None
    """Override the URLs-per-second bucket."""
    files_per_request: int | None = Field(default=None, ge=1)
    flex_items_per_request: int | None = Field(default=None, ge=1)

    @field_validator("id")
    @classmethod
    def _account_id(cls, v: str) -> str:
        if not ZONE_ID.match(v):
            raise ValueError("account id must be 32 lower-case hex characters")
        return v


class Quota(_Model):
    """Content-management quota of one task type: items per request and per day."""

    batch: int = Field(ge=1)
    daily: int = Field(ge=1)


TASK_TYPES = ("purge_url", "purge_prefix", "purge_host", "purge_all", "purge_cache_tag", "prefetch_url")

DEFAULT_QUOTAS: dict[str, Quota] = {
    # Batch sizes: EdgeOne's console FAQ (URL 5000, directory 1000, hostname 1000, Cache-Tag 100,
    # prefetch URL 5000); daily caps: its documented example (10,000), raised for URLs, which are
    # cheap for us. Self-hosted operators set their own per zone.
    "purge_url": Quota(batch=5000, daily=100_000),
    "purge_prefix": Quota(batch=1000, daily=10_000),
    "purge_host": Quota(batch=1000, daily=10_000),
    "purge_all": Quota(batch=1, daily=10_000),
    "purge_cache_tag": Quota(batch=100, daily=10_000),
    "prefetch_url": Quota(batch=5000, daily=10_000),
}


class CacheReserve(_Model):
    """A zone's Cache Reserve: which objects it keeps, how long, and how many bytes (whether it is
    on is runtime state, set through the API and kept in the control database)."""

    min_ttl: float = Field(default=36000.0, ge=0)
    """Freshness lifetime an object needs to be eligible (Cloudflare: 10 hours)."""
    max_object_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    retention_days: float = Field(default=30.0, gt=0)
    """An object not read for this long is removed; every read starts the period again."""
    budget_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)


class Zone(_Model):
    """A site in front of one origin."""

    id: str
    name: str
    account_id: str = DEFAULT_ACCOUNT_ID
    edgeone_id: str | None = None
    """The zone's EdgeOne-style id (``zone-`` + 12 characters); derived from ``id`` when not set."""
    quotas: dict[str, Quota] = Field(default_factory=dict)
    """Per task type (purge_url, purge_prefix, purge_host, purge_all, purge_cache_tag, prefetch_url);
    types not given use ``DEFAULT_QUOTAS``."""
    hostnames: tuple[str, ...]
    origin: str
    plan: Plan = "enterprise"
    cache_key: CacheKeyOptions = CacheKeyOptions()
    trust: ClientTrust = ClientTrust()
    """Edge-only request fields accepted from a proxy in front of this node; none by default."""
    cache_set_cookie: bool = False
    """Store responses that carry Set-Cookie (the cookie is then shared with every client)."""
    heuristic_fraction: float = Field(default=0.1, ge=0, le=1)
    """Freshness from Last-Modified when nothing explicit is given (RFC 9111 §4.2.2)."""
    heuristic_max: float = Field(default=86400.0, ge=0)
    stale_if_error: float = Field(default=0.0, ge=0)
    """Seconds past its freshness a stored response may still be served when the origin cannot be
    reached, closes early, times out or answers 5xx, for responses that allow less themselves
    (RFC 9111 §4.2.4); must-revalidate and no-cache still forbid it."""
    cache_reserve: CacheReserve = CacheReserve()

    @field_validator("id")
    @classmethod
    def _zone_id(cls, v: str) -> str:
        if not ZONE_ID.match(v):
            raise ValueError("zone id must be 32 lower-case hex characters")
        return v

    @field_validator("edgeone_id")
    @classmethod
    def _edgeone_id(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^zone-[0-9a-z]{6,32}$", v):
            raise ValueError("edgeone_id must look like zone-2o3h21ed8bpu")
        return v

    @field_validator("quotas")
    @classmethod
    def _quota_types(cls, v: dict[str, Quota]) -> dict[str, Quota]:
        unknown = set(v) - set(TASK_TYPES)
        if unknown:
            raise ValueError(f"unknown quota types {sorted(unknown)}; known: {', '.join(TASK_TYPES)}")
        return v

    @model_validator(mode="after")
    def _trusted_fields_known(self) -> Zone:
        unknown = set(self.trust.fields) - EDGE_ONLY - {self.cache_key.country_header}
        if unknown:
            raise ValueError(
                f"trust.fields {sorted(unknown)} are not edge-only fields or the zone's country header"
            )
        return self

    @property
    def eo_id(self) -> str:
        """The EdgeOne-style id of this zone."""
        return self.edgeone_id or "zone-" + self.id[:12]

    def quota(self, task_type: str) -> Quota:
        """The quota of one task type."""
        return self.quotas.get(task_type) or DEFAULT_QUOTAS[task_type]

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(h.lower().rstrip(".") for h in v)
        for h in out:
            if not HOSTNAME.match(h):
                raise ValueError(f"invalid hostname {h!r}")
        if not out:
            raise ValueError("a zone needs at least one hostname")
        return out

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+/?$", v):
            raise ValueError("origin must be http(s)://host[:port] with no path")
        # The origin client splits it as urlsplit does: a port out of range, a port that is not a
        # number or an unclosed IPv6 bracket passes the pattern and would fail every fill instead.
        try:
            parts = urlsplit(v)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"origin must be http(s)://host[:port] with no path ({exc})") from None
        if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
            raise ValueError("origin must be http(s)://host[:port] with no path")
        if port == 0:
            raise ValueError("origin port must be 1-65535")
        return v.rstrip("/")


class DiskStorage(_Model):
    """The persistent tier (LMDB under ``path``, relative to ``data_dir``)."""

    enabled: bool = True
    path: Path = Path("cache")
    budget_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of records in the disk cache (the Cache Reserve has its own budgets, per zone)."""
    admission: Literal["every_fill", "second_fill"] = "every_fill"
    """Which fills are written to disk (memory takes every one): ``every_fill`` (write-through: an
    object one worker fetched is a disk hit for the others, and survives a restart, from its first
    fill) or ``second_fill`` (only a key's second fill within about the memory tier's entry count of
    fills, per process, as nginx's ``proxy_cache_min_uses 2``: a stream of one-hit wonders costs the
    disk nothing, at the price of a fetch per worker before an object is shared). Decision 0018."""
    fill_writer: Literal["process", "thread"] = "process"
    """Who writes fills to disk: a child process per data-plane process, fed through a shared-memory
    ring (its Python does not take the event loop's interpreter lock), or the disk writer thread
    of the data-plane process itself. Decision 0020."""


class Storage(_Model):
    """Cache tiers."""

    memory_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    max_object_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Larger responses stream through without being stored."""
    disk: DiskStorage = DiskStorage()


class Tasks(_Model):
    """Purge and prefetch task tracking."""

    timeout: float = Field(default=60.0, gt=0)
    """A task not acknowledged by every node within this many seconds ends ``timeout``."""
    retention_days: float = Field(default=30.0, gt=0)
    prefetch_concurrency: int = Field(default=8, ge=1, le=256)
    prefetch_timeout: float = Field(default=60.0, gt=0)
    """Per-target limit for a prefetch fetch."""


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


class Runtime(_Model):
    """Process-level tuning (see ``edgecache.gcpolicy``, ``edgecache.looplag`` and ``edgecache.cluster``)."""

    gc_freeze_every: float = Field(default=5.0, gt=0)
    gc_sweep_every: float = Field(default=3600.0, gt=0)
    workers: int = Field(default_factory=usable_cores, ge=1, le=256)
    """Data-plane processes of ``edgecache serve``."""
    control_plane: Literal["auto", "inline", "process"] = "auto"
    """Where the control plane (APIs, ``/metrics``, the ledger writer, tasks) runs: ``process``, in
    the process ``edgecache serve`` starts, which supervises the data-plane workers (always so with
    ``workers`` > 1); ``inline``, in the one data-plane process (``workers = 1`` only, which is
    then the default count); ``auto``: inline with one worker, a process of its own with more
    (decision 0026)."""
    listen: Literal["auto", "reuseport", "shared"] = "auto"
    """How the workers of a supervised node listen on the data port: ``reuseport``, a socket each
    with SO_REUSEPORT (the kernel spreads connections); ``shared``, one listening socket the
    supervisor holds and every worker inherits; ``auto``, shared with one worker (nothing to spread,
    and the supervisor's backlog keeps new connections while a killed worker is replaced, where
    ``reuseport`` would refuse them), reuseport with more (decisions 0014 and 0026)."""
    shutdown_grace: float = Field(default=10.0, gt=0)
    """Seconds a stopping worker lets in-flight responses finish before it resets what is left."""
    fill_lock_timeout: float = Field(default=5.0, ge=0)
    """Seconds a worker waits for another worker's fill of the same new object to reach the shared
    disk tier before it fetches the object itself (nginx's ``proxy_cache_lock_timeout``; decision
    0021). 0: every worker fetches on its own. Only with ``workers`` > 1 and a disk tier that
    takes every fill (``storage.disk.admission = "every_fill"``)."""
    loop_probe_every: float = Field(default=0.005, gt=0)
    """Period of the loop-lag probe (``edgecache.looplag``): the resolution of the stall it reports."""
    allocator: Setting = "auto"
    """``malloc`` of ``edgecache serve`` (``edgecache.allocator``, decision 0019): ``auto`` runs on
    jemalloc when the library is found, else on the system's; ``jemalloc`` refuses to start without
    it; ``system`` is glibc's (the reclaimer then trims after mass purges)."""
    jemalloc_path: Path | None = None
    """The jemalloc shared library; default: the first ``libjemalloc.so.2`` in the usual directories."""

    @model_validator(mode="before")
    @classmethod
    def _inline_defaults_to_one_worker(cls, data: object) -> object:
        # The default worker count is the machine's cores: "inline" without a count would be
        # accepted on one core and refused on two. Inline means one worker, so that is its default.
        if isinstance(data, dict) and data.get("control_plane") == "inline" and "workers" not in data:
            return {**data, "workers": 1}
        return data

    @model_validator(mode="after")
    def _inline_needs_one_worker(self) -> Runtime:
        if self.control_plane == "inline" and self.workers > 1:
            raise ValueError(
                f'control_plane = "inline" runs the control plane in the one data-plane process: '
                f"it needs workers = 1, not {self.workers} (with more workers the control plane "
                f'runs in a process of its own: "process" or "auto")'
            )
        return self

    @property
    def supervised(self) -> bool:
        """Whether ``edgecache serve`` runs the control plane in a process of its own that
        supervises the data-plane workers (``edgecache.cluster``), rather than one process for both."""
        return self.workers > 1 or self.control_plane == "process"

    @property
    def shares_listener(self) -> bool:
        """Whether a supervised node's workers accept from one listening socket the supervisor
        holds, rather than from a ``SO_REUSEPORT`` socket each (``listen``)."""
        return self.listen == "shared" or (self.listen == "auto" and self.workers == 1)

    @field_validator("jemalloc_path")
    @classmethod
    def _preloadable(cls, v: Path | None) -> Path | None:
        # LD_PRELOAD looks a name without a slash up in the linker's path (not this one) and splits
        # entries at colons and spaces.
        if v is not None and (not v.is_absolute() or any(c in str(v) for c in ": \t")):
            raise ValueError("jemalloc_path must be an absolute path without colons or spaces")
        return v


class Limits(_Model):
    """Data-plane hardening limits."""

    max_request_line: int = Field(default=8192, ge=256)
    max_header_count: int = Field(default=100, ge=8)
    max_header_bytes: int = Field(default=32768, ge=1024)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    """Longest pause between two pieces of a request body."""
    body_deadline: float = Field(default=300.0, gt=0)
    """Longest time from the end of a request's head to the end of its body, however it trickles in."""
    idle_timeout: float = Field(default=60.0, gt=0)
    origin_connect_timeout: float = Field(default=5.0, gt=0)
    origin_first_byte_timeout: float = Field(default=30.0, gt=0)
    """Seconds from sending a request until the origin's whole response head has arrived."""
    origin_read_timeout: float = Field(default=30.0, gt=0)
    """Seconds the origin may stay silent mid-body."""
    origin_keepalive_timeout: float = Field(default=30.0, gt=0)
    """Idle pooled connections to an origin are closed after this many seconds."""
    origin_max_connections: int = Field(default=512, ge=1)
    """Open connections per origin; further requests wait for one (within the connect timeout)."""
    origin_ca_file: Path | None = None
    """PEM bundle of CAs trusted for https origins instead of the system's (a private CA)."""


class Console(_Model):
    """The web console on the control listener (``/console/``)."""

    enabled: bool = True
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """A console session ends this long after sign-in (or when its token expires or is revoked)."""


class Logging(_Model):
    """Application logs (stderr) and the data plane's access log."""

    format: Literal["text", "json"] = "text"
    """Application log lines as plain text or as JSON objects, one per line."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: Path | None = None
    """Write one line per data-plane request to this file (off when unset)."""
    access_log_format: Literal["combined", "json"] = "combined"
    """``combined``: Apache/nginx combined format plus cache fields; ``json``: JSON lines."""
    access_log_ring_mib: Literal[1, 2, 4, 8, 16, 32, 64, 128, 256] = 16
    """Shared memory per data-plane process for records the formatter has not read yet (about
    100,000 hits at 16 MiB); when the formatter falls further behind, records are lost and counted."""


class Config(_Model):
    """The whole node configuration."""

    data: Listener = Listener(port=8080)
    control: Listener = Listener(port=8081)
    demo_origin: Listener | None = None
    """Start the built-in demo origin on this address (the demo zone points at it)."""
    data_dir: Path = Path("data")
    database_url: str | None = None
    """SQLAlchemy URL of the control-plane database; default: SQLite under ``data_dir``."""
    accounts: tuple[Account, ...] = (Account(),)
    zones: tuple[Zone, ...] = ()
    storage: Storage = Storage()
    limits: Limits = Limits()
    tasks: Tasks = Tasks()
    runtime: Runtime = Runtime()
    console: Console = Console()
    logging: Logging = Logging()

    @model_validator(mode="after")
    def _unique(self) -> Config:
        ids = [z.id for z in self.zones]
        if len(ids) != len(set(ids)):
            raise ValueError("zone ids must be unique")
        eo_ids = [z.eo_id for z in self.zones]
        if len(eo_ids) != len(set(eo_ids)):
            raise ValueError("zone EdgeOne ids must be unique (set edgeone_id where derived ids collide)")
        accounts = {a.id for a in self.accounts}
        if len(accounts) != len(self.accounts):
            raise ValueError("account ids must be unique")
        for z in self.zones:
            if z.account_id not in accounts:
                raise ValueError(f"zone {z.id} names account {z.account_id}, which is not configured")
        hosts = [h for z in self.zones for h in z.hostnames]
        if len(hosts) != len(set(hosts)):
            raise ValueError("a hostname may belong to one zone only")
        return self


DEMO_ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"


def demo_config(data_port: int = 8080, control_port: int = 8081, origin_port: int = 8082) -> Config:
    """Embedded defaults: one demo zone in front of the built-in demo origin."""
    return Config(
        data=Listener(port=data_port),
        control=Listener(port=control_port),
        demo_origin=Listener(port=origin_port),
        zones=(
            Zone(
                id=DEMO_ZONE_ID,
                name="demo.test",
                hostnames=("localhost", "127.0.0.1", "demo.test"),
                origin=f"http://127.0.0.1:{origin_port}",
            ),
        ),
    )


def load_config(path: Path) -> Config:
    """Read and validate a TOML configuration file."""
    with path.open("rb") as f:
        return Config.model_validate(tomllib.load(f))
