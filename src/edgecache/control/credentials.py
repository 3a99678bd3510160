"""Credentials and permissions: API tokens, legacy global API keys, and who may do what.

Rules:
- No wire formats: the API layers turn headers into calls here and ``None``/``Principal`` results
  into their own error codes (Cloudflare 9106/6003/6111/6102/6103/10000). The ``is_well_formed_*``
  checks exist so they can tell a malformed header (400) from an unknown credential (403).
- Secrets are shown once, at creation, and only their SHA-256 is stored. A fast hash is right here,
  unlike for passwords: a token is 40 random url-safe characters (240 bits) and a global key 37
  random hex digits (148 bits), so there is nothing to brute-force that a slow hash
  (bcrypt/argon2) would protect, while verification runs on every API request.
- Hashes are compared with ``hmac.compare_digest``. The row is found by an index lookup on the
  hash; that lookup's timing can only reveal facts about SHA-256 outputs, which do not help to
  find a token.
- Verification is read-only except for ``last_used_at``, written at most once per
  ``touch_interval`` per token (and never blocking the answer if the write fails).
- Time comes from an injectable clock returning aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from edgecache.config import Config
from edgecache.db.identity import (
    ConflictError,
    GlobalKeyRecord,
    IdentityStore,
    TokenRecord,
)
from edgecache.db.schema import PLANS

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{40}")
_GLOBAL_KEY = re.compile(r"[0-9a-f]{37}")
# Deliberately loose (one @, a dot in the domain, no spaces): Cloudflare's 6102 is about the header
# being unusable, and RFC 5322 addresses are too varied for a strict pattern to be right.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+", re.ASCII)
TOKEN_NAME_MAX = 120
VERIFIED_TTL = 10.0
"""Seconds a verified token is trusted without reading the database again: each API call would
otherwise cost a worker-thread hop and a query (measured: the largest part of a purge's latency
after the commit). Revocation through this process applies at once; through another (the CLI),
within this time."""
VERIFIED_MAX = 10_000
"""Cloudflare's limit on a token name."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Permission(StrEnum):
    """What a credential may do. Zone-level permissions are limited by a token's zone scope;
    account-level ones (queues) apply to the whole account."""

    CACHE_PURGE = "cache_purge"
    ZONE_SETTINGS_READ = "zone_settings_read"
    ZONE_SETTINGS_WRITE = "zone_settings_write"
    QUEUES_READ = "queues_read"
    QUEUES_WRITE = "queues_write"

    @property
    def label(self) -> str:
        """The name Cloudflare's dashboard shows, e.g. "Cache Purge"."""
        return _LABELS[self]

    @property
    def level(self) -> Literal["zone", "account"]:
        return "account" if self in (Permission.QUEUES_READ, Permission.QUEUES_WRITE) else "zone"

    @classmethod
    def parse(cls, text: str) -> Permission:
        """Accept the value (``cache_purge``), the label (``Cache Purge``) or Cloudflare's scope
        notation (``#cache_purge:edit``, ``#zone_settings:read``); raise ``ValueError`` otherwise."""
        key = text.strip()
        for p in cls:
            if key == p.value or key.lower() == p.label.lower():
                return p
        if key in _SCOPES:
            return _SCOPES[key]
        names = ", ".join(p.value for p in cls)
        raise ValueError(f"unknown permission {text!r} (known: {names}, or {ALL} for every one)")


_LABELS = {
    Permission.CACHE_PURGE: "Cache Purge",
    Permission.ZONE_SETTINGS_READ: "Zone Settings Read",
    Permission.ZONE_SETTINGS_WRITE: "Zone Settings Write",
    Permission.QUEUES_READ: "Queues Read",
    Permission.QUEUES_WRITE: "Queues Write",
}
# Cloudflare's x-cfPermissionsRequired names (reference §1.4).
_SCOPES = {
    "#cache_purge:edit": Permission.CACHE_PURGE,
    "#zone_settings:read": Permission.ZONE_SETTINGS_READ,
    "#zone_settings:edit": Permission.ZONE_SETTINGS_WRITE,
}

ALL_PERMISSIONS = frozenset(Permission)
ALL = "all"
"""Shorthand for every permission wherever permissions are named (``--permission all``)."""


def parse_permissions(items: Iterable[Permission | str]) -> frozenset[Permission]:
    """Permissions by value, label or scope (see :meth:`Permission.parse`), or ``all``; raises
    ``ValueError`` for an unknown name."""
    out: set[Permission] = set()
    for item in items:
        if isinstance(item, Permission):
            out.add(item)
        elif item.strip().lower() == ALL:
            out |= ALL_PERMISSIONS
        else:
            out.add(Permission.parse(item))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    kind: Literal["token", "global_key", "secret"]
    id: str
    account_id: str
    permissions: frozenset[Permission]
    zones: frozenset[str] | None
    """Zone scope of a token; None means every zone of the account."""
    label: str
    """Token name or global-key email, for logs and the ledger."""

    def allows(self, permission: Permission, zone_id: str, zone_account_id: str) -> bool:
        """May this caller use ``permission`` on the zone ``zone_id`` owned by ``zone_account_id``?"""
        return (
            permission in self.permissions
            and zone_account_id == self.account_id
            and (self.zones is None or zone_id in self.zones)
        )

    def allows_account(self, permission: Permission, account_id: str) -> bool:
        """May this caller use an account-level ``permission`` (queues) on ``account_id``?

        A zone scope does not restrict account-level permissions, as in Cloudflare, where a token's
        account policies and zone policies are separate.
        """
        return (
            permission.level == "account" and permission in self.permissions and account_id == self.account_id
        )

    @property
    def ref(self) -> str:
        """A stable reference for records such as the purge ledger: ``token:<id>``."""
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about a token (never the secret)."""

    id: str
    account_id: str
    name: str
    permissions: frozenset[Permission]
    zones: frozenset[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    id: str
    account_id: str
    name: str
    plan: str


class CredentialError(ValueError):
    """A request to create or change credentials that cannot be honoured; the message says why."""


def is_well_formed_token(s: str) -> bool:
    """Cloudflare's API token shape: 40 characters of ``[A-Za-z0-9_-]``."""
    return _TOKEN.fullmatch(s) is not None


def is_well_formed_global_key(s: str) -> bool:
    """Cloudflare's Global API Key shape: 37 lower-case hex digits."""
    return _GLOBAL_KEY.fullmatch(s) is not None


def is_well_formed_email(s: str) -> bool:
    return len(s) <= 254 and _EMAIL.fullmatch(s) is not None


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a token or global key (see the module docstring for why SHA-256)."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _new_id() -> str:
    return secrets.token_hex(16)


def stored_permissions(stored: Iterable[str], holder: str = "a token") -> frozenset[Permission]:
    """Permissions read back from the database; unknown names are dropped with a warning."""
    out = set()
    for name in stored:
        try:
            out.add(Permission(name))
        except ValueError:
            # Written by a newer release: ignoring it can only take rights away, never add them.
            log.warning("ignoring unknown permission %r stored on %s", name, holder)
    return frozenset(out)


def _info(r: TokenRecord) -> TokenInfo:
    return TokenInfo(
        id=r.id,
        account_id=r.account_id,
        name=r.name,
        permissions=stored_permissions(r.permissions),
        zones=None if r.zones is None else frozenset(r.zones),
        created_at=r.created_at,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        last_used_at=r.last_used_at,
    )


def _check_id(kind: str, value: str) -> None:
    if _ID.fullmatch(value) is None:
        raise CredentialError(f"{kind} id must be 32 lower-case hex characters, got {value!r}")


def validate_grant(
    identity: IdentityStore,
    account_id: str,
    name: str,
    permissions: Iterable[Permission | str],
    zones: Iterable[str] | None,
    *,
    what: str,
    name_max: int,
) -> tuple[str, frozenset[Permission], frozenset[str] | None]:
    """Check what a new credential (token or EdgeOne secret) would grant: an existing account, a
    name, at least one known permission, and zones of that account (None: every zone). Returns the
    stripped name, the permissions and the zone scope; raises :class:`CredentialError`."""
    if identity.get_account(account_id) is None:
        raise CredentialError(f"unknown account {account_id}")
    name = name.strip()
    if not 1 <= len(name) <= name_max:
        raise CredentialError(f"a {what} name needs 1 to {name_max} characters")
    try:
        perms = parse_permissions(permissions)
    except ValueError as e:
        raise CredentialError(str(e)) from None
    if not perms:
        raise CredentialError(f"a {what} needs at least one permission")
    if zones is None:
        return name, perms, None
    scope = frozenset(zones)
    if not scope:
        raise CredentialError("an empty zone list would allow nothing; omit it for all zones")
    for z in scope:
        _check_id("zone", z)
    foreign = scope - identity.zone_ids_of_account(account_id, scope)
    if foreign:
        raise CredentialError(f"not zones of account {account_id}: {', '.join(sorted(foreign))}")
    return name, perms, scope


def _rejected(reason: str, token_id: str | None) -> None:
    # Never the secret or its hash: the id of a known token is enough to act on.
    log.warning(
        "API token rejected: %s%s",
        reason,
        f" (token {token_id})" if token_id else "",
        extra={"event": "token_rejected", "reason": reason, "token_id": token_id},
    )


class CredentialService:
    """Accounts, zones, tokens and global keys; the authentication decisions of the control plane."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utc_now,
        touch_interval: timedelta = timedelta(minutes=1),
    ) -> None:
        self._store = IdentityStore(engine)
        self._clock = clock
        self._touch_interval = touch_interval
        self._verified: dict[str, tuple[Principal, float]] = {}
        """SHA-256 of a token → (principal, monotonic deadline): see :meth:`cached_token`."""
        self._verified_lock = threading.Lock()

    # Seeding from configuration ------------------------------------------------------------------

    def ensure_account(self, account_id: str, name: str, plan: str = "enterprise") -> None:
        """Create the account or bring its name and plan in line (idempotent; used at start-up)."""
        _check_id("account", account_id)
        if plan not in PLANS:
            raise CredentialError(f"unknown plan {plan!r} (known: {', '.join(PLANS)})")
        self._store.upsert_account(account_id, name, plan, self._clock())

    def ensure_zone(self, zone_id: str, account_id: str, name: str, plan: str = "enterprise") -> None:
        """Create the zone or bring its account, name and plan in line (idempotent)."""
        _check_id("zone", zone_id)
        if plan not in PLANS:
            raise CredentialError(f"unknown plan {plan!r} (known: {', '.join(PLANS)})")
        if self._store.get_account(account_id) is None:
            raise CredentialError(f"unknown account {account_id}")
        self._store.upsert_zone(zone_id, account_id, name, plan, self._clock())

    def get_zone(self, zone_id: str) -> ZoneInfo | None:
        """The zone and its owning account (what ``Principal.allows`` needs), or None."""
        z = self._store.get_zone(zone_id)
        return None if z is None else ZoneInfo(z.id, z.account_id, z.name, z.plan)

    # Tokens ---------------------------------------------------------------------------------------

    def create_token(
        self,
        account_id: str,
        name: str,
        permissions: Iterable[Permission | str],
        zones: Iterable[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[TokenInfo, str]:
        """Create a token; return its description and the secret, which is not stored and cannot
        be shown again. ``zones=None`` lets it act on every zone of the account."""
        now = self._clock()
        name, perms, scope = validate_grant(
            self._store, account_id, name, permissions, zones, what="token", name_max=TOKEN_NAME_MAX
        )
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise CredentialError("expires_at must carry a time zone")
            if expires_at <= now:
                raise CredentialError("expires_at is in the past")
        # 30 random bytes are exactly 40 url-safe base64 characters: Cloudflare's token shape.
        secret = secrets.token_urlsafe(30)
        record = TokenRecord(
            id=_new_id(),
            account_id=account_id,
            name=name,
            secret_hash=hash_secret(secret),
            permissions=tuple(sorted(perms)),
            zones=None if scope is None else tuple(sorted(scope)),
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        self._store.insert_token(record)
        return _info(record), secret

    def get_token(self, token_id: str) -> TokenInfo | None:
        r = self._store.token_by_id(token_id)
        return None if r is None else _info(r)

    def list_tokens(self, account_id: str | None = None) -> list[TokenInfo]:
        """Every token (revoked and expired included), oldest first."""
        return [_info(r) for r in self._store.list_tokens(account_id)]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke at once (in this process; other processes within ``VERIFIED_TTL``); False when
        there is no such active token. Revocation is permanent."""
        with self._verified_lock:
            for digest, (principal, _) in list(self._verified.items()):
                if principal.id == token_id:
                    del self._verified[digest]
        return self._store.revoke_token(token_id, self._clock())

    def cached_token(self, secret: str) -> Principal | None:
        """The principal of a token verified within the last ``VERIFIED_TTL`` seconds, without
        touching the database (None: not known here, call :meth:`verify_token`)."""
        digest = hash_secret(secret)
        with self._verified_lock:
            found = self._verified.get(digest)
            if found is None:
                return None
            if found[1] <= time.monotonic():
                del self._verified[digest]
                return None
            return found[0]

    def verify_token(self, secret: str) -> Principal | None:
        """The principal for a bearer token, or None when it is unknown, revoked or expired."""
        if not is_well_formed_token(secret):
            return None
        digest = hash_secret(secret)
        r = self._store.token_by_hash(digest)
        if r is None or not hmac.compare_digest(r.secret_hash, digest):
            _rejected("unknown", None)
            return None
        now = self._clock()
        if r.revoked_at is not None or (r.expires_at is not None and r.expires_at <= now):
            _rejected("revoked" if r.revoked_at is not None else "expired", r.id)
            return None
        cutoff = now - self._touch_interval
        if r.last_used_at is None or r.last_used_at < cutoff:
            try:
                self._store.touch_token(r.id, now, cutoff)
            except SQLAlchemyError:
                # Bookkeeping only: a busy database must not turn a valid token into a 403.
                log.warning("could not record the use of token %s", r.id, exc_info=True)
        principal = Principal(
            kind="token",
            id=r.id,
            account_id=r.account_id,
            permissions=stored_permissions(r.permissions),
            zones=None if r.zones is None else frozenset(r.zones),
            label=r.name,
        )
        ttl = VERIFIED_TTL
        if r.expires_at is not None:
            ttl = min(ttl, (r.expires_at - now).total_seconds())
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[digest] = (principal, time.monotonic() + ttl)
        return principal

    # Global API keys ------------------------------------------------------------------------------

    def create_global_key(self, account_id: str, email: str) -> str:
        """Create (or roll: the old key stops working) the global key of ``email``; return it."""
        if self._store.get_account(account_id) is None:
            raise CredentialError(f"unknown account {account_id}")
        if not is_well_formed_email(email):
            raise CredentialError(f"not an email address: {email!r}")
        # 19 random bytes give 38 hex digits; Cloudflare's keys have 37 (148 bits are kept).
        key = secrets.token_hex(19)[:37]
        record = GlobalKeyRecord(
            id=_new_id(),
            account_id=account_id,
            email=email.lower(),
            key_hash=hash_secret(key),
            created_at=self._clock(),
        )
        try:
            self._store.put_global_key(record)
        except ConflictError as e:
            raise CredentialError(str(e)) from None
        return key

    def verify_global_key(self, email: str, key: str) -> Principal | None:
        """The principal for ``X-Auth-Email``/``X-Auth-Key``: every permission on every zone of the
        key's account. None when the pair does not match."""
        if not is_well_formed_email(email) or not is_well_formed_global_key(key):
            return None
        digest = hash_secret(key)
        r = self._store.global_key_by_email(email.lower())
        if r is None or not hmac.compare_digest(r.key_hash, digest):
            return None
        return Principal(
            kind="global_key",
            id=r.id,
            account_id=r.account_id,
            permissions=ALL_PERMISSIONS,
            zones=None,
            label=r.email,
        )


def seed_identity(credentials: CredentialService, config: Config) -> None:
    """Create the configured accounts and zones in the control database, or bring them in line
    (idempotent): what tokens and secrets are granted on. ``serve`` and the CLI both call it."""
    for account in config.accounts:
        credentials.ensure_account(account.id, account.name, account.plan)
    for zone in config.zones:
        credentials.ensure_zone(zone.id, zone.account_id, zone.name, zone.plan)
