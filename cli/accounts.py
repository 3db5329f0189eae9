"""`wanlora user` and `wanlora token`: users and API tokens."""

from typing import Annotated

import typer

from cli import render
from cli.app import JsonOpt, backend, command_group

user_app = command_group("user", "Users (admins of every project only).")
token_app = command_group("token", "API tokens: one role in one project each.")

# -- users and tokens ------------------------------------------------------------------------------


@user_app.command("add")
def user_add(name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False) -> None:
    """Add a user (then give it tokens with `wanlora token create`)."""
    with backend() as wl, wl.accounts() as acc:
        user = acc.add_user(name=name)
    render.emit_json(user) if as_json else render.console.print(f"added user {user.name}")


@user_app.command("list")
def user_list(
    removed: Annotated[bool, typer.Option("--removed", help="Also list removed users.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List users."""
    with backend() as wl, wl.accounts(write=False) as acc:
        users = acc.list_users(removed=removed)
    lines = (
        f"{u.name}  (added by {u.created_by} on {u.created_at:%Y-%m-%d}"
        + (f"; removed {u.removed_at:%Y-%m-%d})" if u.removed_at else ")")
        for u in users
    )
    render.output(users, as_json, lambda: "\n".join(lines))


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False) -> None:
    """Remove a user: every token of theirs stops working at once. The event log keeps their name;
    `wanlora user add NAME` brings them back (with new tokens only)."""
    with backend() as wl, wl.accounts() as acc:
        user = acc.remove_user(name=name)
    render.output(user, as_json, lambda: f"removed user {user.name}; {user.revoked_tokens} token(s) revoked")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", "-u", help="Owner of the token.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project, or '*' for every project.")],
    role: Annotated[str, typer.Option("--role", "-r", help="trainer, production or admin.")],
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime such as 12h, 30d, 4w.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token. The secret is shown once and only its hash is kept."""
    from registry.domain.accounts import parse_duration

    with backend() as wl, wl.accounts() as acc:
        created = acc.create_token(
            user=user, project=project, role=role, expires_in=parse_duration(expires) if expires else None
        )
    if as_json:
        render.emit_json(created)
    else:
        until = f", expires {created.expires_at:%Y-%m-%d %H:%M} UTC" if created.expires_at else ""
        render.console.print(f"token {created.id} for {created.user}: {created.role} in {created.project}{until}")
        render.secret("store it now, it is not shown again:", created.token)


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """List the tokens you may manage (never their secrets)."""
    with backend() as wl, wl.accounts(write=False) as acc:
        tokens = acc.list_tokens()
    render.output(tokens, as_json, lambda: render.tokens_table(tokens))


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id (see `wanlora token list`).")]) -> None:
    """Revoke a token at once."""
    with backend() as wl, wl.accounts() as acc:
        t = acc.revoke_token(token_id=token_id)
    render.console.print(f"token {t.id} of {t.user} ({t.prefix}…) revoked")
