"""EdgeOne API secrets (SecretId + SecretKey) and the node master key that encrypts them at rest.

Rules:
- TC3-HMAC-SHA256 is an HMAC: to check a signature the server recomputes it with the SecretKey, so,
  unlike API tokens (kept as SHA-256 only), the key itself must be recoverable. It is stored as a
  Fernet token (AES-128-CBC + HMAC-SHA256) under the node master key; the plaintext exists only in
  memory, when created (returned once) and while a request is verified. Threat model and rotation:
  ``docs/decisions/0004-edgeone-secrets.md``.
- The master key comes from ``$EDGECACHE_MASTER_KEY`` if set, else from ``<data_dir>/master.key``,
  which is created (mode 0600, atomically) the first time a key is needed. Either holds one or more
  Fernet keys separated by whitespace or commas: the first encrypts, all are tried to decrypt, so a
  new key can be put in front of the old one and the table re-encrypted (:meth:`SecretService.rewrap`).
- Shapes are Tencent Cloud's: SecretId ``AKID`` + 32 alphanumerics, SecretKey 32 alphanumerics
  (about 190 random bits each).
- Unknown and revoked secrets look the same (``lookup`` returns None): the reference's
  ``AuthFailure.SecretIdNotFound`` covers "deleted or disabled". A row the master key cannot decrypt
  raises :class:`MasterKeyError` instead: that is a misconfigured node (another node's key), never an
  unknown secret, and must be loud.
- No wire formats; time comes from an injectable clock returning aware UTC datetimes.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import secrets
import stat
import string
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine

from edgecache.control.credentials import (
    Permission,
    Principal,
    stored_permissions,
    utc_now,
    validate_grant,
)
from edgecache.db.identity import IdentityStore
from edgecache.db.secrets import SecretRecord, SecretStore

log = logging.getLogger(__name__)

MASTER_KEY_ENV = "EDGECACHE_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
SECRET_NAME_MAX = 120

_ALNUM = string.ascii_letters + string.digits
_SECRET_ID = re.compile(r"AKID[A-Za-z0-9]{32}")


class MasterKeyError(RuntimeError):
    """The master key is missing, malformed, or does not decrypt a stored secret."""


def is_well_formed_secret_id(s: str) -> bool:
    """Our SecretId shape: ``AKID`` followed by 32 ASCII letters and digits."""
    return _SECRET_ID.fullmatch(s) is not None


def _random_alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


class MasterKey:
    """The node's Fernet keys, loaded (and the key file created) on first use; thread-safe."""

    def __init__(self, data_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = Path(data_dir) / MASTER_KEY_FILE
        self._environ = os.environ if environ is None else environ
        self._fernet: MultiFernet | None = None
        self._lock = threading.Lock()

    def encrypt(self, plaintext: str) -> str:
        return self._load().encrypt(plaintext.encode("ascii")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._load().decrypt(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise MasterKeyError(
                "a stored EdgeOne secret cannot be decrypted with this node's master key "
                f"({self._origin()}): every node must use the same key"
            ) from None

    def reencrypt(self, token: str) -> str:
        """``token`` decrypted with any key and encrypted again with the first."""
        try:
            return self._load().rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise MasterKeyError(f"a stored EdgeOne secret matches no key in {self._origin()}") from None

    def _from_env(self) -> str | None:
        value = self._environ.get(MASTER_KEY_ENV, "")
        return value if value.strip() else None

    def _origin(self) -> str:
        return f"${MASTER_KEY_ENV}" if self._from_env() is not None else str(self.path)

    def _load(self) -> MultiFernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = MultiFernet(self._keys())
            return self._fernet

    def _keys(self) -> list[Fernet]:
        origin = self._origin()
        env = self._from_env()
        text = env if env is not None else self._read_or_create()
        words = text.replace(",", " ").split()
        if not words:
            raise MasterKeyError(f"{origin} holds no key")
        keys = []
        for word in words:
            try:
                keys.append(Fernet(word))
            except ValueError:
                # Never echo the value: it may be a real key with one character lost.
                raise MasterKeyError(
                    f"{origin}: not a Fernet key (32 bytes in url-safe base64, 44 characters)"
                ) from None
        return keys

    def _read_or_create(self) -> str:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            self._create()
        else:
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning("%s is readable by other users; it should be mode 0600", self.path)
        return self.path.read_text("ascii")

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{MASTER_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                # link() never replaces: of several processes starting together one key wins and
                # the others read it; nobody can read a partly written file.
                os.link(tmp, self.path)
            except FileExistsError:
                return
            # The key must outlive a crash if any secret is encrypted with it.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            log.info("created the EdgeOne master key %s", self.path)
        finally:
            tmp.unlink(missing_ok=True)


def SecretPrincipal(
    id: str, account_id: str, permissions: frozenset[Permission], zones: frozenset[str] | None, label: str
) -> Principal:
    """A caller authenticated by an EdgeOne secret (``ref`` is ``secret:<SecretId>``); the same
    permission rules as tokens."""
    return Principal("secret", id, account_id, permissions, zones, label)


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret (never the SecretKey)."""

    secret_id: str
    account_id: str
    name: str
    permissions: frozenset[Permission]
    zones: frozenset[str] | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def status(self) -> Literal["active", "revoked"]:
        return "active" if self.revoked_at is None else "revoked"


def _info(r: SecretRecord) -> SecretInfo:
    return SecretInfo(
        secret_id=r.secret_id,
        account_id=r.account_id,
        name=r.name,
        permissions=stored_permissions(r.permissions, "an EdgeOne secret"),
        zones=None if r.zones is None else frozenset(r.zones),
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )


class SecretService:
    """Create, list, revoke and look up EdgeOne API secrets."""

    def __init__(
        self, engine: Engine, master_key: MasterKey, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._store = SecretStore(engine)
        self._identity = IdentityStore(engine)
        self._master_key = master_key
        self._clock = clock

    def create(
        self,
        account_id: str,
        name: str,
        permissions: Iterable[Permission | str],
        zones: Iterable[str] | None = None,
    ) -> tuple[str, str]:
        """Create a secret; return ``(SecretId, SecretKey)``. The SecretKey cannot be shown again.
        ``zones=None`` lets it act on every zone of the account."""
        name, perms, scope = validate_grant(
            self._identity, account_id, name, permissions, zones, what="secret", name_max=SECRET_NAME_MAX
        )
        secret_id = "AKID" + _random_alnum(32)
        secret_key = _random_alnum(32)
        self._store.insert(
            SecretRecord(
                secret_id=secret_id,
                account_id=account_id,
                name=name,
                secret_key_enc=self._master_key.encrypt(secret_key),
                permissions=tuple(sorted(perms)),
                zones=None if scope is None else tuple(sorted(scope)),
                created_at=self._clock(),
                revoked_at=None,
            )
        )
        return secret_id, secret_key

    def get(self, secret_id: str) -> SecretInfo | None:
        r = self._store.by_id(secret_id)
        return None if r is None else _info(r)

    def list(self, account_id: str | None = None) -> builtins.list[SecretInfo]:
        """Every secret (revoked included), oldest first; never a SecretKey."""
        return [_info(r) for r in self._store.list_secrets(account_id)]

    def revoke(self, secret_id: str) -> bool:
        """Revoke at once, permanently; False when there is no such active secret."""
        return self._store.revoke(secret_id, self._clock())

    def lookup(self, secret_id: str) -> tuple[str, Principal] | None:
        """The SecretKey and the caller it authenticates, or None for an unknown or revoked
        SecretId. Raises :class:`MasterKeyError` when the stored key cannot be decrypted."""
        if not is_well_formed_secret_id(secret_id):
            return None
        r = self._store.by_id(secret_id)
        if r is None or r.revoked_at is not None:
            return None
        principal = SecretPrincipal(
            id=r.secret_id,
            account_id=r.account_id,
            permissions=stored_permissions(r.permissions, "an EdgeOne secret"),
            zones=None if r.zones is None else frozenset(r.zones),
            label=r.name,
        )
        return self._master_key.decrypt(r.secret_key_enc), principal

    def rewrap(self) -> int:
        """Re-encrypt every stored SecretKey with the first master key; return how many. Run after
        putting a new key in front of the old one; the old key can be dropped afterwards."""
        return self._store.reencrypt_all(self._master_key.reencrypt)
