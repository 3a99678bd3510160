"""The ``edgecache`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
import uvloop

from edgecache.app import Node
from edgecache.config import Config, demo_config, load_config
from edgecache.demo.origin import DEMO_PATHS

app = typer.Typer(
    help="edgecache: a self-hosted edge cache whose strength is invalidation.", no_args_is_help=True
)


@app.callback()
def _root() -> None:
    """edgecache: a self-hosted edge cache whose strength is invalidation."""


def _banner(node: Node, cfg: Config) -> str:
    data = f"http://{cfg.data.host}:{node.data_port}"
    lines = [f"edgecache serving on {data} (control plane on http://{cfg.control.host}:{node.control_port})"]
    if cfg.demo_origin is not None:
        lines.append("Demo zone in front of the built-in origin. Try (run each twice: MISS, then HIT):")
        lines += [f"  curl -si {data}{p} | grep -i cache-status" for p in DEMO_PATHS[:4]]
    lines.append(f"Metrics: curl http://{cfg.control.host}:{node.control_port}/metrics")
    return "\n".join(lines)


async def _serve(cfg: Config) -> None:
    node = Node(cfg)
    await node.start()
    typer.echo(_banner(node, cfg))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration; the demo defaults without it.")
    ] = None,
) -> None:
    """Run a node: the data plane, the control plane, and (without --config) the demo origin."""
    cfg = load_config(config) if config is not None else demo_config()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(cfg))


def main() -> None:
    """Console-script entry point."""
    app()
