"""`wanlora webhook`: signed notifications and their delivery log."""

from typing import Annotated

import typer

from cli import render
from cli.app import JsonOpt, backend, command_group

webhook_app = command_group(
    "webhook",
    "Signed notifications of register, promote, rollback, deprecate, evaluations and trials.",
    no_args_is_help=False,
)

# -- webhooks --------------------------------------------------------------------------------------


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="Receiver URL (http or https).")],
    events: Annotated[
        str,
        typer.Option(
            "--events",
            help="Comma list of register, promote, rollback, deprecate, evaluate, trial_start, trial_pass, trial_abort, trial_stop.",
        ),
    ] = ("register,promote,rollback,deprecate"),
    project: Annotated[str, typer.Option("--project", "-p", help="A project, or '*' for all.")] = "*",
    secret: Annotated[
        str | None, typer.Option("--secret", help="HMAC key, at least 16 bytes (generated when omitted).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one attempt may take (0.5-30).")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Add a webhook. Only public addresses are reached (see WANLORA_WEBHOOK_ALLOW_HOSTS). Deliveries are
    signed: X-Wanlora-Signature: t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret, "t." + body)); see docs/webhooks.md."""
    with backend() as wl, wl.webhooks() as hooks:
        created = hooks.add(
            url=url,
            project=project,
            events=[e.strip() for e in events.split(",") if e.strip()],
            secret=secret,
            timeout=timeout,
        )
    if as_json:
        render.emit_json(created)
    else:
        render.console.print(
            f"webhook {created.id} → {created.url} for {', '.join(created.events)} in {created.project}"
        )
        render.secret("signing secret (shown once):", created.secret)


@webhook_app.command("list")
def webhook_list(as_json: JsonOpt = False) -> None:
    """List webhooks."""
    with backend() as wl, wl.webhooks(write=False) as hooks:
        rows = hooks.list_webhooks()
    lines = (
        f"{h.id}  {h.url}  {h.project}  {','.join(h.events)}{'' if h.active else ' [dim](removed)[/]'}" for h in rows
    )
    render.output(rows, as_json, lambda: "\n".join(lines))


@webhook_app.command("test")
def webhook_test(webhook_id: Annotated[int, typer.Argument(help="Webhook id.")], as_json: JsonOpt = False) -> None:
    """Send the webhook a signed ping now, to check its URL and secret; exits 1 when it was not delivered."""
    with backend() as wl, wl.webhooks(write=False) as hooks:
        result = hooks.test(webhook_id=webhook_id)
    answer = f"HTTP {result.status_code}" if result.status_code else "no answer"
    human = f"ping to webhook {result.webhook_id} ({result.url}): " + (
        f"delivered, {answer}" if result.delivered else f"[red]not delivered[/]: {result.error}"
    )
    render.output(result, as_json, lambda: human)
    if not result.delivered:
        raise typer.Exit(1)


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
    render.output(rows, as_json, lambda: render.deliveries_table(rows))
