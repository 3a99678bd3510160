"""``edgecache db``: the control database's schema revision, and upgrading it.

Rules:
- A node upgrades its database at start (``open_database``); ``db upgrade`` does the same without
  starting one, e.g. before a rolling restart of a cluster. Both take the migration lock.
- ``db current`` only reads: it never creates tables, stamps or upgrades.
- Errors exit with status 1 and a message on stderr, never a traceback.
"""

from __future__ import annotations

import typer
from sqlalchemy.exc import SQLAlchemyError

from edgecache.cli_common import ConfigFile, DatabaseUrl, DataDir, fail, locate
from edgecache.db.engine import connect
from edgecache.db.migrate import SchemaState, state, upgrade

db_app = typer.Typer(help="The control database: schema revision and upgrades.", no_args_is_help=True)


def _describe(found: SchemaState) -> str:
    if found.legacy:
        return f"none (created by edgecache 0.1.0; `edgecache db upgrade` takes it to {found.head})"
    if found.revision is None:
        return f"none (empty database; `edgecache db upgrade` creates the schema at {found.head})"
    if found.up_to_date:
        return f"{found.revision} (head)"
    return f"{found.revision} (behind: head is {found.head}; run `edgecache db upgrade`)"


@db_app.command("current")
def current(config: ConfigFile = None, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Print the database's schema revision and whether it is the newest this release knows."""
    engine = connect(locate(config, data_dir, database_url)[2])
    try:
        typer.echo(_describe(state(engine)))
    except (RuntimeError, SQLAlchemyError) as err:
        raise fail(str(err)) from None
    finally:
        engine.dispose()


@db_app.command("upgrade")
def upgrade_(config: ConfigFile = None, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Bring the database to the newest revision (waits while another process migrates it)."""
    engine = connect(locate(config, data_dir, database_url)[2])
    try:
        found = upgrade(engine)
    except (RuntimeError, SQLAlchemyError) as err:
        raise fail(str(err)) from None
    finally:
        engine.dispose()
    if found.up_to_date:
        typer.echo(f"already at {found.head} (head)")
    elif found.legacy:
        typer.echo(f"upgraded edgecache 0.1.0's schema to {found.head}")
    else:
        typer.echo(f"upgraded from {found.revision or 'an empty database'} to {found.head}")
