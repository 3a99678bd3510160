"""``edgecache log``: the data plane's access log, read from the node's shared-memory rings."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from edgecache.cli_common import ConfigFile, DataDir, fail, locate
from edgecache.edge.logring import ring_directory
from edgecache.edge.logtail import follow

log_app = typer.Typer(help="The data plane's access log.", no_args_is_help=True)


@log_app.command("tail")
def tail(
    config: ConfigFile = None,
    data_dir: DataDir = None,
    fmt: Annotated[
        str, typer.Option("--format", help="combined (Apache/nginx combined, plus cache fields) or json.")
    ] = "combined",
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Begin with the oldest records the rings still hold.")
    ] = False,
) -> None:
    """Print the running node's requests as access-log lines until interrupted (as varnishncsa).

    Reads the rings the node's data-plane processes write (its access log must be on); it does not
    disturb the node's own log file. Records the node overwrites before this reads them are lost
    to this reader, and counted in a warning on stderr.
    """
    if fmt not in ("combined", "json"):
        typer.echo("error: --format is combined or json", err=True)
        raise typer.Exit(2)
    chosen: Literal["combined", "json"] = "json" if fmt == "json" else "combined"
    _, directory, _ = locate(config, data_dir, None)
    ring_dir = ring_directory(directory)
    if not ring_dir.is_dir():
        raise fail(f"no access-log rings in {ring_dir} (is the node's access log on?)")
    follow(ring_dir, chosen, None, from_start=from_start)
