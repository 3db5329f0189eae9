"""`wanlora webhook`: signed notifications and their delivery log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import render
from cli.app import (
    Group,
    JsonOpt,
    app,
    backend,
)

webhook_app = typer.Typer(cls=Group, help="Signed notifications of register, promote, rollback, deprecate.")
app.add_typer(webhook_app, name="webhook")

# -- webhooks --------------------------------------------------------------------------------------


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="Receiver URL (http or https).")],
    events: Annotated[str, typer.Option("--events", help="Comma list: register,promote,rollback,deprecate.")] = (
        "register,promote,rollback,deprecate"
    ),
    project: Annotated[str, typer.Option("--project", "-p", help="A project, or '*' for all.")] = "*",
    secret: Annotated[str | None, typer.Option("--secret", help="HMAC key (generated when omitted).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a webhook. Deliveries are signed: X-Wanlora-Signature: sha256=HMAC(secret, body)."""
    with backend() as wl, wl.webhooks() as hooks:
        created = hooks.add(
            url=url, project=project, events=[e.strip() for e in events.split(",") if e.strip()], secret=secret
        )
    if as_json:
        render.emit_json(created)
    else:
        render.console.print(
            f"webhook {created.id} → {created.url} for {', '.join(created.events)} in {created.project}"
        )
        render.console.print("signing secret (shown once):", style="bold yellow")
        sys.stdout.write(created.secret + "\n")


@webhook_app.command("list")
def webhook_list(as_json: JsonOpt = False) -> None:
    """List webhooks."""
    with backend() as wl, wl.webhooks(write=False) as hooks:
        rows = hooks.list_webhooks()
    if as_json:
        render.emit_json(rows)
    else:
        for h in rows:
            state = "" if h.active else " [dim](removed)[/]"
            render.console.print(f"{h.id}  {h.url}  {h.project}  {','.join(h.events)}{state}")


@webhook_app.command("remove")
def webhook_remove(webhook_id: Annotated[int, typer.Argument(help="Webhook id.")]) -> None:
    """Stop a webhook (its delivery log stays)."""
    with backend() as wl, wl.webhooks() as hooks:
        h = hooks.remove(webhook_id=webhook_id)
    render.console.print(f"webhook {h.id} ({h.url}) removed")


@webhook_app.command("deliveries")
def webhook_deliveries(
    webhook: Annotated[int | None, typer.Option("--webhook", help="Only this webhook.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log: status, attempts, last answer."""
    with backend() as wl, wl.webhooks(write=False) as hooks:
        rows = hooks.deliveries(webhook_id=webhook, limit=limit)
    if as_json:
        render.emit_json(rows)
    else:
        render.console.print(render.deliveries_table(rows))
