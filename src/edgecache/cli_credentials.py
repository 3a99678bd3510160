"""``edgecache credentials …``: create, list and revoke EdgeOne API secrets (SecretId + SecretKey),
and re-encrypt them after a master-key rotation.

Rules:
- A thin shell over ``control.secrets.SecretService``; every rule lives there.
- ``create`` prints the pair to stdout alone, as the two environment variables the Tencent Cloud
  SDKs read (``TENCENTCLOUD_SECRET_ID``/``TENCENTCLOUD_SECRET_KEY``), so ``… > teo.env`` works;
  everything else goes to stderr. The SecretKey is shown once and cannot be recovered.
- The database, and the accounts and zones a secret is granted on, come from ``--config`` (applied
  first, as ``serve`` does), ``--data-dir`` or ``--database-url``: see ``cli_common``. The master key
  is ``$EDGECACHE_MASTER_KEY`` or ``<data-dir>/master.key`` (created on first use), also with
  ``--database-url``: every node and this command must use the same key.
- Errors exit with status 1 and a message on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgecache.cli_common import (
    ConfigFile,
    DatabaseUrl,
    DataDir,
    Permissions,
    State,
    credential_error,
    echo_table,
    fail,
    open_state,
    when,
)
from edgecache.control.credentials import CredentialError
from edgecache.control.secrets import MasterKey, MasterKeyError, SecretService

credentials_app = typer.Typer(
    help="Manage EdgeOne API secrets (SecretId/SecretKey for the Tencent Cloud SDKs).", no_args_is_help=True
)


@contextmanager
def _service(
    config: Path | None, data_dir: Path | None, database_url: str | None
) -> Iterator[tuple[SecretService, State]]:
    with open_state(config, data_dir, database_url) as state:
        yield SecretService(state.engine, MasterKey(state.data_dir)), state


@credentials_app.command("create")
def create(
    account: Annotated[str, typer.Option("--account", help="Account id (32 hex).")],
    name: Annotated[str, typer.Option("--name", help="A name to recognise the secret by.")],
    permission: Permissions,
    zone: Annotated[
        list[str] | None,
        typer.Option("--zone", "-z", help="Limit to this zone id (repeatable); all zones if omitted."),
    ] = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a secret; print SecretId and SecretKey once (stdout), details to stderr."""
    with _service(config, data_dir, database_url) as (service, state):
        try:
            secret_id, secret_key = service.create(account, name, permission, zone or None)
        except CredentialError as e:
            raise credential_error(e, state) from None
        except MasterKeyError as e:
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
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List secrets (never their SecretKey), oldest first."""
    with _service(config, data_dir, database_url) as (service, _):
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
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a secret at once, permanently."""
    with _service(config, data_dir, database_url) as (service, _):
        revoked = service.revoke(secret_id)
    if not revoked:
        raise fail(f"no active secret with id {secret_id}")
    typer.echo(f"revoked {secret_id}", err=True)


@credentials_app.command("rewrap")
def rewrap(
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-encrypt every stored SecretKey with the first master key (after putting a new key in
    front of the old one in master.key or $EDGECACHE_MASTER_KEY; drop the old key afterwards)."""
    with _service(config, data_dir, database_url) as (service, _):
        try:
            count = service.rewrap()
        except MasterKeyError as e:
            raise fail(str(e)) from None
    typer.echo(f"re-encrypted {count} secret(s) with the current master key", err=True)
