"""The ``edgecache`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
import uvloop
from pydantic import ValidationError

from edgecache import allocator, logs
from edgecache.app import Node
from edgecache.cli_credentials import credentials_app
from edgecache.cli_db import db_app
from edgecache.cli_log import log_app
from edgecache.cli_queues import queues_app
from edgecache.cli_reserve import reserve_app
from edgecache.cli_tasks import tasks_app
from edgecache.cli_tokens import tokens_app
from edgecache.cluster.supervisor import Supervisor
from edgecache.config import DEMO_ZONE_ID, ZONE_ID, Config, demo_config, load_config
from edgecache.control.credentials import Permission
from edgecache.demo.origin import DEMO_PATHS

app = typer.Typer(
    help="edgecache: a self-hosted edge cache whose strength is invalidation.", no_args_is_help=True
)
app.add_typer(tokens_app, name="token")
app.add_typer(credentials_app, name="credential")
app.add_typer(tasks_app, name="tasks")
app.add_typer(reserve_app, name="reserve")
app.add_typer(db_app, name="db")
app.add_typer(queues_app, name="queues")
app.add_typer(log_app, name="log")

DEMO_TOKEN_NAME = "demo (make run)"


@app.callback()
def _root() -> None:
    """edgecache: a self-hosted edge cache whose strength is invalidation."""


def _demo_token(node: Node) -> str:
    """A fresh token for the demo zone (purge, and Cache Reserve settings so the console's reserve page
    can be tried); earlier demo tokens are revoked (they were printed)."""
    account = node.config.accounts[0].id
    for info in node.credentials.list_tokens(account):
        if info.name == DEMO_TOKEN_NAME and info.revoked_at is None:
            node.credentials.revoke_token(info.id)
    _, secret = node.credentials.create_token(
        account,
        DEMO_TOKEN_NAME,
        [Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ, Permission.ZONE_SETTINGS_WRITE],
        [DEMO_ZONE_ID],
    )
    return secret


def _self() -> str:
    """How the user can run this same ``edgecache`` (``make run`` uses the project's venv)."""
    # The console script sits next to the interpreter running it (argv[0] is not reliable: the
    # CLI framework may rewrite it to the bare program name).
    here = os.path.realpath(os.path.join(os.path.dirname(sys.executable), "edgecache"))
    found = shutil.which("edgecache")
    if not os.path.exists(here) or (found is not None and os.path.realpath(found) == here):
        return "edgecache"
    return os.path.relpath(here)


def layout(cfg: Config) -> str:
    """Which processes ``edgecache serve`` runs for ``cfg`` (``[runtime] workers`` and
    ``control_plane``), as the banner says it."""
    rt = cfg.runtime
    if not rt.supervised:
        return "one process runs the data and control planes"
    workers = (
        "1 data-plane worker process" if rt.workers == 1 else f"{rt.workers} data-plane worker processes"
    )
    return f"control plane in the supervisor process, {workers}"


def _banner(node: Node, cfg: Config, token: str | None) -> str:
    data = f"http://{cfg.data.host}:{node.data_port}"
    api = f"http://{cfg.control.host}:{node.control_port}/client/v4"
    lines = [f"edgecache serving on {data} (control plane on {api}); {layout(cfg)}"]
    if cfg.demo_origin is not None:
        lines.append("Demo zone in front of the built-in origin. Try (run each twice: MISS, then HIT):")
        lines += [f"  curl -si {data}{p} | grep -i cache-status" for p in DEMO_PATHS[:4]]
        lines.append("Stop (Ctrl-C) and start again: a page still fresh is a HIT from disk (detail=disk).")
    if token is not None:
        lines += [
            "",
            f"API token (Cache Purge and Zone Settings on zone {DEMO_ZONE_ID}, shown once): {token}",
            "Purge every product page by tag, then fetch one again (MISS):",
            f"  curl -s -X POST {api}/zones/{DEMO_ZONE_ID}/purge_cache \\",
            f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\",
            """    -d '{"tags":["products"]}'""",
            f"  or: EDGECACHE_TOKEN={token} {_self()} purge --zone {DEMO_ZONE_ID} --tag products --api {api}",
        ]
    if cfg.console.enabled:
        console = f"http://{cfg.control.host}:{node.control_port}/console/"
        who = f"sign in with the API token: {token}" if token is not None else "sign in with an API token"
        lines.append(f"Web console: {console} ({who})")
    lines.append(f"Metrics: curl http://{cfg.control.host}:{node.control_port}/metrics")
    return "\n".join(lines)


async def _serve(cfg: Config) -> None:
    supervisor = Supervisor(cfg) if cfg.runtime.supervised else None
    node = supervisor.node if supervisor is not None else Node(cfg)
    # Before the start: a signal while workers are being started (or a disk tier opened) ends the
    # start and stops what it started, where the default action killed the supervisor and left
    # its workers running on their own.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if await _start(supervisor.start() if supervisor is not None else node.start(), stop):
            token = await asyncio.to_thread(_demo_token, node) if cfg.demo_origin is not None else None
            typer.echo(_banner(node, cfg, token))
            await stop.wait()
    finally:
        # Also after a start that failed (a port taken, workers not serving in time) or was ended
        # by a signal: the workers and listeners it got to are stopped before the error goes on.
        if supervisor is not None:
            await supervisor.stop()
        else:
            await node.drain(cfg.runtime.shutdown_grace)
            await node.stop()


async def _start(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``start``; True once it is done, False when ``stop`` was set first. Then the start is
    cancelled rather than awaited: a start that is stuck (a worker that never reports ready waits
    a minute for it) must not hold up a signal. The start's own error is raised."""
    starting = asyncio.ensure_future(start)
    signalled = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((starting, signalled), return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait((starting,))
    if starting.cancelled():
        return False
    starting.result()
    return not stop.is_set()


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration; the demo defaults without it.")
    ] = None,
) -> None:
    """Run a node: the data plane, the control plane, and (without --config) the demo origin."""
    try:
        cfg = load_config(config) if config is not None else demo_config()
    except OSError as err:
        typer.echo(f"error: cannot read the configuration {config}: {err.strerror or err}", err=True)
        raise typer.Exit(2) from None
    except (tomllib.TOMLDecodeError, ValidationError) as err:
        typer.echo(f"error: invalid configuration {config}: {err}", err=True)
        raise typer.Exit(2) from None
    try:
        allocator.ensure(cfg.runtime.allocator, cfg.runtime.jemalloc_path)
        logs.configure(cfg.logging)
        allocator.report(cfg.runtime.allocator, cfg.runtime.jemalloc_path)
    except allocator.AllocatorError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(cfg))


@app.command()
def purge(
    zone: Annotated[
        str, typer.Option("--zone", "-z", help="Zone id: 32 hex, or the EdgeOne-style one (zone-...).")
    ],
    url: Annotated[
        list[str] | None, typer.Option("--url", help="A URL (all its variants); repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A cache tag; repeatable.")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="A hostname; repeatable.")] = None,
    prefix: Annotated[
        list[str] | None, typer.Option("--prefix", help="host/path prefix; repeatable.")
    ] = None,
    everything: Annotated[bool, typer.Option("--everything", help="Purge everything in the zone.")] = False,
    soft: Annotated[bool, typer.Option("--soft", help="Invalidate (mark stale) instead of delete.")] = False,
    api: Annotated[
        str, typer.Option("--api", help="The node's v4 API base URL.")
    ] = "http://127.0.0.1:8081/client/v4",
    token: Annotated[
        str | None, typer.Option("--token", help="API token (default: $EDGECACHE_TOKEN).", show_default=False)
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show the tasks' progress until they finish.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 120.0,
) -> None:
    """Purge through a running node's API; prints the job id (and, with --wait, its tasks)."""
    secret = token or os.environ.get("EDGECACHE_TOKEN")
    if not secret:
        typer.echo("error: give --token or set EDGECACHE_TOKEN", err=True)
        raise typer.Exit(2)
    bodies: list[dict[str, object]] = []
    if everything:
        bodies.append({"purge_everything": True})
    if url:
        bodies.append({"files": list(url)})
    flex: dict[str, object] = {k: v for k, v in (("tags", tag), ("hosts", host), ("prefixes", prefix)) if v}
    if flex:
        bodies.append(flex)
    if not bodies:
        typer.echo("error: nothing to purge: give --url, --tag, --host, --prefix or --everything", err=True)
        raise typer.Exit(2)
    endpoint = "invalidate_cache" if soft else "purge_cache"
    zone_id = zone if ZONE_ID.fullmatch(zone) else _zone_id(api, secret, zone)
    for body in bodies:
        req = urllib.request.Request(
            f"{api.rstrip('/')}/zones/{zone_id}/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = json.load(resp)
        except urllib.error.HTTPError as err:
            answer = json.load(err)
            for e in answer.get("errors", []):
                typer.echo(f"error {e.get('code')}: {e.get('message')}", err=True)
            raise typer.Exit(1) from None
        except urllib.error.URLError as err:
            typer.echo(f"error: cannot reach {api}: {err.reason}", err=True)
            raise typer.Exit(1) from None
        job_id = answer["result"]["id"]
        typer.echo(job_id)
        if wait and not _wait(api, secret, job_id, timeout):
            raise typer.Exit(1)


def _native(api: str) -> str:
    """The node's native API base, next to its v4 API."""
    return api.rstrip("/").removesuffix("/client/v4") + "/edgecache/v1"


def _zone_id(api: str, secret: str, zone: str) -> str:
    """Our 32-hex id of a zone named by its EdgeOne-style id (the v4 API takes only ours), asked of
    the node's native API."""
    req = urllib.request.Request(
        f"{_native(api)}/zones/{urllib.parse.quote(zone, safe='')}",
        headers={"Authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.load(resp)["id"])
    except urllib.error.HTTPError as err:
        if err.code == 404:
            typer.echo(f"error: no zone {zone} (or this token may not use it)", err=True)
        else:
            typer.echo(f"error {err.code}: {json.load(err).get('error', {}).get('message')}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as err:
        typer.echo(f"error: cannot reach {api}: {err.reason}", err=True)
        raise typer.Exit(1) from None


def _wait(api: str, secret: str, job_id: str, timeout: float) -> bool:
    """Poll the native jobs API until every task of the job is final; False on failure or timeout."""
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while True:
        req = urllib.request.Request(
            f"{_native(api)}/jobs/{job_id}", headers={"Authorization": f"Bearer {secret}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            job = json.load(resp)
        for task in job["tasks"]:
            line = f"{task['status']:<10} {task['type']:<16} {task['target'] or '(everything)'}"
            if task["matched"] is not None:
                line += f"  ({task['matched']} cached objects)"
            if shown.get(task["target"]) != line:
                shown[task["target"]] = line
                typer.echo(f"  {line}", err=True)
        if job["done"]:
            return all(t["status"] == "success" for t in job["tasks"])
        if time.monotonic() > deadline:
            typer.echo(f"error: job {job_id} still processing after {timeout:g} s", err=True)
            return False
        time.sleep(0.2)


def main() -> None:
    """Console-script entry point."""
    app()
