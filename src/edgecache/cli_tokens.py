"""``edgecache token …``: create, list and revoke API tokens; create global API keys.

Rules:
- A thin shell over ``control.credentials.CredentialService``; every rule lives there.
- Secrets go to stdout alone (``TOKEN=$(edgecache token create …)`` works); everything else that is
  printed while creating goes to stderr. They are shown once and cannot be recovered.
- The database, and the accounts and zones a token is granted on, come from ``--config`` (the node's
  configuration, applied first as ``serve`` does), ``--data-dir`` or ``--database-url``: see
  ``cli_common``.
- Errors exit with status 1 and a message on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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
from edgecache.control.credentials import CredentialError, CredentialService, utc_now

tokens_app = typer.Typer(help="Manage API tokens and global API keys.", no_args_is_help=True)
global_key_app = typer.Typer(help="Legacy global API keys (X-Auth-Email + X-Auth-Key).", no_args_is_help=True)
tokens_app.add_typer(global_key_app, name="global-key")


@contextmanager
def _service(
    config: Path | None, data_dir: Path | None, database_url: str | None
) -> Iterator[tuple[CredentialService, State]]:
    with open_state(config, data_dir, database_url) as state:
        yield CredentialService(state.engine), state


def _parse_time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--expires-at: not an ISO 8601 time: {value!r}") from None
    # A time without an offset is taken as UTC, the only zone the server stores.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@tokens_app.command("create")
def create(
    account: Annotated[str, typer.Option("--account", help="Account id (32 hex).")],
    name: Annotated[str, typer.Option("--name", help="A name to recognise the token by.")],
    permission: Permissions,
    zone: Annotated[
        list[str] | None,
        typer.Option("--zone", "-z", help="Limit to this zone id (repeatable); all zones if omitted."),
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z.")
    ] = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API token and print it once (stdout); details go to stderr."""
    expiry = _parse_time(expires_at) if expires_at is not None else None
    with _service(config, data_dir, database_url) as (service, state):
        try:
            info, secret = service.create_token(account, name, permission, zone or None, expiry)
        except CredentialError as e:
            raise credential_error(e, state) from None
    scope = "all zones" if info.zones is None else ", ".join(sorted(info.zones))
    perms = ", ".join(sorted(p.value for p in info.permissions))
    typer.echo(f"token {info.id} for account {info.account_id}: {perms} on {scope}", err=True)
    typer.echo("Store the token now: it cannot be shown again.", err=True)
    typer.echo(secret)


@tokens_app.command("list")
def list_(
    account: Annotated[str | None, typer.Option("--account", help="Only this account's tokens.")] = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List tokens (never their secrets), oldest first."""
    with _service(config, data_dir, database_url) as (service, _):
        found = service.list_tokens(account)
    now = utc_now()
    rows = [("ID", "ACCOUNT", "NAME", "STATUS", "PERMISSIONS", "ZONES", "EXPIRES", "LAST USED")]
    for t in found:
        rows.append(
            (
                t.id,
                t.account_id,
                t.name,
                t.status(now),
                ",".join(sorted(p.value for p in t.permissions)),
                "all" if t.zones is None else ",".join(sorted(t.zones)),
                when(t.expires_at),
                when(t.last_used_at),
            )
        )
    echo_table(rows)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `list`), not its secret.")],
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token at once, permanently."""
    with _service(config, data_dir, database_url) as (service, _):
        revoked = service.revoke_token(token_id)
    if not revoked:
        raise fail(f"no active token with id {token_id}")
    typer.echo(f"revoked {token_id}", err=True)


@global_key_app.command("create")
def global_key_create(
    account: Annotated[str, typer.Option("--account", help="Account id (32 hex).")],
    email: Annotated[str, typer.Option("--email", help="The X-Auth-Email the key goes with.")],
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create the global API key for an email, or roll it (the old key stops working); print it once."""
    with _service(config, data_dir, database_url) as (service, state):
        try:
            key = service.create_global_key(account, email)
        except CredentialError as e:
            raise credential_error(e, state) from None
    typer.echo(f"global key for {email.lower()} on account {account}: every permission, every zone", err=True)
    typer.echo("Store the key now: it cannot be shown again.", err=True)
    typer.echo(key)
