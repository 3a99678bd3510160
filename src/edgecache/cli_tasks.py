"""``edgecache tasks``: purge and prefetch tasks, read from the node's control database (chosen by
``--config``, ``--data-dir`` or ``--database-url``, see ``cli_common``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from edgecache.cli_common import ConfigFile, DatabaseUrl, DataDir, State, echo_table, fail, open_state
from edgecache.db.tasks import TaskQuery, TaskRow, TaskStore

tasks_app = typer.Typer(
    help="Purge and prefetch tasks (who purged what, when, and how it went).", no_args_is_help=True
)


def _zone_id(zone: str, state: State) -> str:
    """Our zone id for ``zone``, which may be the EdgeOne-style id of a configured zone."""
    if state.config is not None:
        for z in state.config.zones:
            if zone == z.eo_id:
                return z.id
    if zone.startswith("zone-"):
        raise fail(f"{zone} looks like an EdgeOne zone id: resolve it with --config FILE, or give the hex id")
    return zone


def _table(rows: list[TaskRow]) -> None:
    lines = [("JOB", "CREATED", "TYPE", "METHOD", "STATUS", "MATCHED", "VIA", "BY", "TARGET")]
    for r in rows:
        lines.append(
            (
                r.job_id,
                r.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                r.type,
                r.method or "-",
                r.status + (f" ({r.fail_type}: {r.fail_message})" if r.fail_type else ""),
                "-" if r.matched is None else str(r.matched),
                r.dialect,
                r.principal,
                r.target or "(everything)",
            )
        )
    echo_table(lines)


@tasks_app.command("list")
def list_(
    zone: Annotated[
        str, typer.Option("--zone", "-z", help="Zone id: 32 hex, or the EdgeOne-style id with --config.")
    ],
    kind: Annotated[str, typer.Option("--kind", help="purge or prefetch.")] = "purge",
    status: Annotated[list[str] | None, typer.Option("--status", help="Repeatable.")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="purge_url, purge_cache_tag, ...")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Substring of the target.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Job id.")] = None,
    hours: Annotated[float, typer.Option("--hours", help="How far back.")] = 24.0,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List tasks, newest first."""
    with open_state(config, data_dir, database_url) as state:
        total, rows = TaskStore(state.engine).query(
            TaskQuery(
                zone_id=_zone_id(zone, state),
                kind=kind,
                start=datetime.now(UTC) - timedelta(hours=hours),
                job_id=job,
                target=target,
                target_fuzzy=True,
                statuses=tuple(status or ()),
                types=tuple(type_ or ()),
                limit=limit,
            )
        )
    _table(rows)
    typer.echo(f"{len(rows)} of {total} tasks", err=True)


@tasks_app.command("show")
def show(
    job: Annotated[str, typer.Argument(help="Job id (the id a purge answered with).")],
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Every task of one job."""
    with open_state(config, data_dir, database_url) as state:
        rows = TaskStore(state.engine).by_job(job)
    if not rows:
        typer.echo(f"error: no job {job}", err=True)
        raise typer.Exit(1)
    _table(rows)
