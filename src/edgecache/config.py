"""Configuration: a TOML file validated with pydantic, or the embedded demo defaults.

Rules: every setting has a default that works on a laptop; validation errors name the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Zone(_Model):
    """A site in front of one origin."""

    id: str
    name: str
    hostnames: tuple[str, ...]
    origin: str
    plan: Plan = "enterprise"
    cache_key: CacheKeyOptions = CacheKeyOptions()
    cache_set_cookie: bool = False
    """Store responses that carry Set-Cookie (the cookie is then shared with every client)."""
    heuristic_fraction: float = Field(default=0.1, ge=0, le=1)
    """Freshness from Last-Modified when nothing explicit is given (RFC 9111 §4.2.2)."""
    heuristic_max: float = Field(default=86400.0, ge=0)

    @field_validator("id")
    @classmethod
    def _zone_id(cls, v: str) -> str:
        if not ZONE_ID.match(v):
            raise ValueError("zone id must be 32 lower-case hex characters")
        return v

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
        return v.rstrip("/")


class Storage(_Model):
    """Cache tiers."""

    memory_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    max_object_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Larger responses stream through without being stored."""


class Limits(_Model):
    """Data-plane hardening limits."""

    max_request_line: int = Field(default=8192, ge=256)
    max_header_count: int = Field(default=100, ge=8)
    max_header_bytes: int = Field(default=32768, ge=1024)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    idle_timeout: float = Field(default=60.0, gt=0)
    origin_connect_timeout: float = Field(default=5.0, gt=0)
    origin_read_timeout: float = Field(default=30.0, gt=0)


class Config(_Model):
    """The whole node configuration."""

    data: Listener = Listener(port=8080)
    control: Listener = Listener(port=8081)
    demo_origin: Listener | None = None
    """Start the built-in demo origin on this address (the demo zone points at it)."""
    data_dir: Path = Path("data")
    zones: tuple[Zone, ...] = ()
    storage: Storage = Storage()
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _unique(self) -> Config:
        ids = [z.id for z in self.zones]
        if len(ids) != len(set(ids)):
            raise ValueError("zone ids must be unique")
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
