"""What the ``edgecache`` sub-commands that open the control database share: options, the state they
open, and output.

Rules:
- Every command that reads or writes the control database takes ``--config`` (the file ``serve``
  runs with), ``--data-dir`` and ``--database-url``. Explicit ``--data-dir``/``--database-url`` win
  over the configuration's; without either, the database is ``./data/edgecache.db``, as for ``serve``
  without a configuration.
- With ``--config``, the configured accounts and zones are created in the database first, exactly as
  ``serve`` does at start-up, so a fresh data directory works at once. Without it nothing is created,
  and an unknown account or zone is reported with what to run first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from edgecache.config import Config, load_config
from edgecache.control.credentials import ALL, CredentialError, CredentialService, Permission, seed_identity
from edgecache.db.engine import open_database, sqlite_url

DEFAULT_DATA_DIR = Path("data")

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The node's TOML configuration (the one `serve --config` uses): data directory, database, "
        "and the accounts and zones to create first.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Node data directory (edgecache.db, master.key) [default: the configuration's, else ./data].",
        show_default=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL of the control database (overrides --data-dir)."),
]
Permissions = Annotated[
    list[str],
    typer.Option(
        "--permission",
        "-p",
        help=f"{', '.join(p.value for p in Permission)}, or {ALL} for every one (repeatable).",
    ),
]


def fail(message: str) -> typer.Exit:
    """Print an error and return the exit to raise (code 1)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@dataclass(frozen=True, slots=True)
class State:
    """The control database a command works on, and where it came from."""

    engine: Engine
    data_dir: Path
    config: Config | None
    config_path: Path | None


def read_config(path: Path) -> Config:
    """The configuration in ``path``; a file that cannot be read or is not a valid configuration
    (not UTF-8, not TOML, or refused by validation) is reported and exits with code 1, as every
    other refusal of the CLI (``fail``), never with a traceback."""
    try:
        return load_config(path)
    except OSError as e:
        raise fail(f"cannot read the configuration {path}: {e.strerror or e}") from None
    # ValueError covers tomllib's TOMLDecodeError, a UnicodeDecodeError (a file that is not UTF-8)
    # and pydantic's ValidationError.
    except ValueError as e:
        raise fail(f"invalid configuration {path}: {e}") from None


def locate(
    config_path: Path | None, data_dir: Path | None, database_url: str | None
) -> tuple[Config | None, Path, str]:
    """The configuration, data directory and control database URL the options name (see the module
    rules)."""
    config = read_config(config_path) if config_path is not None else None
    directory = data_dir or (config.data_dir if config is not None else DEFAULT_DATA_DIR)
    url = database_url or (config.database_url if config is not None and data_dir is None else None)
    return config, directory, url or sqlite_url(directory)


@contextmanager
def open_state(config_path: Path | None, data_dir: Path | None, database_url: str | None) -> Iterator[State]:
    """Open the control database named by the options; with a configuration, create its accounts
    and zones first."""
    config, directory, url = locate(config_path, data_dir, database_url)
    engine = open_database(url)
    try:
        if config is not None:
            try:
                seed_identity(CredentialService(engine), config)
            except CredentialError as e:
                raise fail(f"the configuration {config_path} cannot be applied: {e}") from None
        yield State(engine, directory, config, config_path)
    finally:
        engine.dispose()


def credential_error(err: CredentialError, state: State) -> typer.Exit:
    """The exit for a refused credential, saying how to create a missing account or zone."""
    message = str(err)
    if message.startswith(("unknown account", "not zones of account")):
        if state.config is None:
            message += (
                "; accounts and zones are created from the node's configuration: pass --config FILE "
                "(the file `edgecache serve --config FILE` uses), or start `edgecache serve` once "
                f"with the data directory {state.data_dir}"
            )
        else:
            message += f"; it is not in {state.config_path}: add it there (under [[accounts]] or [[zones]])"
    return fail(message)


def when(t: datetime | None) -> str:
    """A time for tables: ISO 8601 UTC, or "-"."""
    return "-" if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def echo_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows (the first one is the header) as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
