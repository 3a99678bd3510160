"""``edgecache reserve``: a zone's Cache Reserve through a running node's APIs (v4 to change it, the
native API for the clear's progress)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from edgecache.cli_common import fail

reserve_app = typer.Typer(help="A zone's Cache Reserve: status, on, off, clear.", no_args_is_help=True)

Zone = Annotated[str, typer.Option("--zone", "-z", help="Zone id (32 hex).")]
Api = Annotated[str, typer.Option("--api", help="The node's v4 API base URL.")]
Token = Annotated[
    str | None, typer.Option("--token", help="API token (default: $EDGECACHE_TOKEN).", show_default=False)
]
DEFAULT_API = "http://127.0.0.1:8081/client/v4"
BAR = 30


def _call(api: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    secret = token or os.environ.get("EDGECACHE_TOKEN")
    if not secret:
        raise fail("give --token or set EDGECACHE_TOKEN")
    req = urllib.request.Request(
        api.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:
        answer = json.load(err)
        errors = answer.get("errors") or [answer.get("error", {})]
        raise fail("; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)) from None
    except urllib.error.URLError as err:
        raise fail(f"cannot reach {api}: {err.reason}") from None


def _native(api: str, token: str | None, zone: str) -> Any:
    base = api.rstrip("/").removesuffix("/client/v4")
    return _call(base, token, "GET", f"/edgecache/v1/zones/{zone}/cache_reserve")


def _show(state: Any) -> str:
    clear = state["clear"]
    line = f"cache reserve {state['value']}"
    if clear is None:
        return line + "; never cleared"
    return line + f"; clear {clear['state']}: {clear['objects']} objects, {clear['bytes']} bytes removed"


@reserve_app.command()
def status(zone: Zone, api: Api = DEFAULT_API, token: Token = None) -> None:
    """The setting and the latest clear's progress."""
    typer.echo(_show(_native(api, token, zone)))


@reserve_app.command()
def on(zone: Zone, api: Api = DEFAULT_API, token: Token = None) -> None:
    """Turn the zone's Cache Reserve on (refused while a clear runs)."""
    _call(api, token, "PATCH", f"/zones/{zone}/cache/cache_reserve", {"value": "on"})
    typer.echo("cache reserve on")


@reserve_app.command()
def off(zone: Zone, api: Api = DEFAULT_API, token: Token = None) -> None:
    """Turn the zone's Cache Reserve off (its objects stay until cleared)."""
    _call(api, token, "PATCH", f"/zones/{zone}/cache/cache_reserve", {"value": "off"})
    typer.echo("cache reserve off")


@reserve_app.command()
def clear(
    zone: Zone,
    api: Api = DEFAULT_API,
    token: Token = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the clear completes.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 3600.0,
) -> None:
    """Remove every Cache Reserve object of the zone (the reserve must be off)."""
    _call(api, token, "POST", f"/zones/{zone}/cache/cache_reserve_clear")
    if not wait:
        typer.echo("clear started")
        return
    deadline = time.monotonic() + timeout
    while True:
        state = _native(api, token, zone)
        c = state["clear"]
        total = c["objects"] if c["state"] == "Completed" else None
        filled = BAR if total is not None else int(time.monotonic() * 4) % BAR
        bar = "#" * filled + "." * (BAR - filled)
        typer.echo(f"\r[{bar}] {c['objects']} objects, {c['bytes']} bytes removed", nl=False, err=True)
        if c["state"] == "Completed":
            typer.echo("", err=True)
            typer.echo(_show(state))
            return
        if time.monotonic() > deadline:
            typer.echo("", err=True)
            raise fail(f"the clear is still in progress after {timeout:g} s")
        time.sleep(0.25)
