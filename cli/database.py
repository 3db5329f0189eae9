"""`wanlora db`: the database schema, upgraded and checked."""

import typer

from cli import render
from cli.app import JsonOpt, backend, command_group

db_app = command_group("db", "Database schema: upgrade and status.")

# -- database --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the schema this wanlora needs (back it up first)."""
    with backend() as opened:
        before, after = opened.upgrade_schema()
        url = opened.schema_status().url
    if before == after:
        render.console.print(f"database {url} already at revision {after}")
    else:
        render.console.print(f"database {url} upgraded: {before or 'empty'} → {after}")


@db_app.command("status")
def db_status(as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the one this wanlora needs; exits 1 when it is outdated."""
    with backend() as opened:
        status = opened.schema_status()
    data = {"url": status.url, "current": status.current, "head": status.head, "up_to_date": status.up_to_date}
    if as_json:
        render.emit_json(data)
    else:
        state = "[green]up to date[/]" if status.up_to_date else "[yellow]run `wanlora db upgrade`[/]"
        render.console.print(f"{data['url']}: revision {status.current or 'none'} (needs {status.head}) {state}")
    if not status.up_to_date:
        raise typer.Exit(1)
