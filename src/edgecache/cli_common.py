"""What the ``edgecache`` sub-commands that open the control database share: options and output."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edgecache.config import load_config
from edgecache.db.engine import sqlite_url

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="The node's TOML configuration (its data_dir and database_url)."),
]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="Node data directory (edgecache.db, master.key).", show_default=True),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL of the control database (overrides --data-dir)."),
]


def resolve_database_url(config: Path | None, data_dir: Path, url: str | None) -> str:
    """The control database a command opens: ``--database-url``, else the one ``--config`` names
    (its ``database_url``, else SQLite under its ``data_dir``), else SQLite under ``--data-dir``."""
    if url is not None:
        return url
    if config is not None:
        try:
            cfg = load_config(config)
        except (OSError, ValueError, ValidationError) as err:
            raise fail(f"--config {config}: {err}") from None
        return cfg.database_url or sqlite_url(cfg.data_dir)
    return sqlite_url(data_dir)


def fail(message: str) -> typer.Exit:
    """Print an error and return the exit to raise (code 1)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def when(t: datetime | None) -> str:
    """A time for tables: ISO 8601 UTC, or "-"."""
    return "-" if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def echo_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows (the first one is the header) as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
