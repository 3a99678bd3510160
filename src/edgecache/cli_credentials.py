"""``edgecache credentials …``: create, list and revoke EdgeOne API secrets (SecretId + SecretKey),
and re-encrypt them after a master-key rotation.

Rules:
- A thin shell over ``control.secrets.SecretService``; every rule lives there.
- ``create`` prints the pair to stdout alone, as the two environment variables the Tencent Cloud
  SDKs read (``TENCENTCLOUD_SECRET_ID``/``TENCENTCLOUD_SECRET_KEY``), so ``… > teo.env`` works;
  everything else goes to stderr. The SecretKey is shown once and cannot be recovered.
- The database is ``sqlite:///<data-dir>/edgecache.db`` unless ``--database-url`` names another. The
  master key is ``$EDGECACHE_MASTER_KEY`` or ``<data-dir>/master.key`` (created on first use), also
  with ``--database-url``: every node and this command must use the same key.
- Errors exit with status 1 and a message on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgecache.cli_common import DatabaseUrl, DataDir, echo_table, fail, when
from edgecache.control.credentials import CredentialError
from edgecache.control.secrets import MasterKey, MasterKeyError, SecretService
from edgecache.db.engine import open_database, sqlite_url

credentials_app = typer.Typer(
    help="Manage EdgeOne API secrets (SecretId/SecretKey for the Tencent Cloud SDKs).", no_args_is_help=True
)


@contextmanager
def _service(data_dir: Path, database_url: str | None) -> Iterator[SecretService]:
    engine = open_database(database_url or sqlite_url(data_dir))
    try:
        yield SecretService(engine, MasterKey(data_dir))
    finally:
        engine.dispose()


@credentials_app.command("create")
def create(
    account: Annotated[str, typer.Option("--account", help="Account id (32 hex).")],
    name: Annotated[str, typer.Option("--name", help="A name to recognise the secret by.")],
    permission: Annotated[
        list[str],
        typer.Option("--permission", "-p", help="cache_purge, zone_settings_read, ... (repeatable)."),
    ],
    zone: Annotated[
        list[str] | None,
        typer.Option("--zone", "-z", help="Limit to this zone id (repeatable); all zones if omitted."),
    ] = None,
    data_dir: DataDir = Path("data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Create a secret; print SecretId and SecretKey once (stdout), details to stderr."""
    with _service(data_dir, database_url) as service:
        try:
            secret_id, secret_key = service.create(account, name, permission, zone or None)
        except (CredentialError, MasterKeyError) as e:
            raise fail(str(e)) from None
        info = service.get(secret_id)
    assert info is not None  # just written
    scope = "all zones" if info.zones is None else ", ".join(sorted(info.zones))
    perms = ", ".join(sorted(p.value for p in info.permissions))
    typer.echo(f"secret {secret_id} for account {info.account_id}: {perms} on {scope}", err=True)
    typer.echo("Store the SecretKey now: it cannot be shown again.", err=True)
    typer.echo(f"TENCENTCLOUD_SECRET_ID={secret_id}")
    typer.echo(f"TENCENTCLOUD_SECRET_KEY={secret_key}")


@credentials_app.command("list")
def list_(
    account: Annotated[str | None, typer.Option("--account", help="Only this account's secrets.")] = None,
    data_dir: DataDir = Path("data"),
    database_url: DatabaseUrl = None,
) -> None:
    """List secrets (never their SecretKey), oldest first."""
    with _service(data_dir, database_url) as service:
        found = service.list(account)
    rows = [("SECRET ID", "ACCOUNT", "NAME", "STATUS", "PERMISSIONS", "ZONES", "CREATED", "REVOKED")]
    for s in found:
        rows.append(
            (
                s.secret_id,
                s.account_id,
                s.name,
                s.status,
                ",".join(sorted(p.value for p in s.permissions)),
                "all" if s.zones is None else ",".join(sorted(s.zones)),
                when(s.created_at),
                when(s.revoked_at),
            )
        )
    echo_table(rows)


@credentials_app.command("revoke")
def revoke(
    secret_id: Annotated[str, typer.Argument(help="The SecretId (AKID...).")],
    data_dir: DataDir = Path("data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a secret at once, permanently."""
    with _service(data_dir, database_url) as service:
        revoked = service.revoke(secret_id)
    if not revoked:
        raise fail(f"no active secret with id {secret_id}")
    typer.echo(f"revoked {secret_id}", err=True)


@credentials_app.command("rewrap")
def rewrap(
    data_dir: DataDir = Path("data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Re-encrypt every stored SecretKey with the first master key (after putting a new key in
    front of the old one in master.key or $EDGECACHE_MASTER_KEY; drop the old key afterwards)."""
    with _service(data_dir, database_url) as service:
        try:
            count = service.rewrap()
        except MasterKeyError as e:
            raise fail(str(e)) from None
    typer.echo(f"re-encrypted {count} secret(s) with the current master key", err=True)
