"""The ``wanlora`` command: parse, call one registry method, render. No rule lives here."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from typer.core import TyperGroup

from cli import render
from registry.accounts import parse_duration
from registry.app import RegisterRequest, Wanlora
from registry.client import RemoteRegistry, RemoteWanlora
from registry.errors import InvalidInput, WanloraError
from registry.ingest import inspect_lora
from registry.notes import training_notes
from registry.settings import Settings
from registry.sync import SyncReport, sync_comfyui, watch_comfyui
from registry.wan import BASE_MODELS
from registry.wan import base_model as lookup_base_model
from registry.webhooks import Dispatcher


class _Group(TyperGroup):
    """Turns registry errors into ``Type: message`` plus the fix, and a non-zero exit, for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WanloraError as exc:
            render.err_console.print(
                f"[bold red]{type(exc).__name__}[/]: {escape(exc.message)}", highlight=False, soft_wrap=True
            )
            if exc.hint:
                render.err_console.print(f"[dim]fix:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from None


app = typer.Typer(
    cls=_Group,
    help="Versioned registry and deployment manager for WAN 2.2 LoRA adapters.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(cls=_Group, help="Database schema: upgrade and status.", no_args_is_help=True)
lora_app = typer.Typer(cls=_Group, help="Create and inspect LoRAs (the named adapters that own versions).")
user_app = typer.Typer(cls=_Group, help="Users (admins of every project only).", no_args_is_help=True)
token_app = typer.Typer(cls=_Group, help="API tokens: one role in one project each.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(lora_app, name="lora")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
webhook_app = typer.Typer(cls=_Group, help="Signed notifications of register, promote, rollback, deprecate.")
app.add_typer(webhook_app, name="webhook")
dataset_app = typer.Typer(cls=_Group, help="Training datasets: check (and prepare).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

ProjectOpt = Annotated[
    str | None, typer.Option("--project", "-p", help="Project (namespace); default $WANLORA_PROJECT or 'default'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", "-r", help="Why; recorded in the event log.")]


_overrides: dict[str, str] = {}


@app.callback()
def _root(
    server: Annotated[
        str | None, typer.Option("--server", help="Act on a wanlora server (or set WANLORA_SERVER).")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="API token (or set WANLORA_TOKEN).")] = None,
) -> None:
    """Versioned registry and deployment manager for WAN 2.2 LoRA adapters."""
    _overrides.clear()
    if server:
        _overrides["server"] = server
    if token:
        _overrides["token"] = token


def _settings() -> Settings:
    return Settings(**_overrides)  # type: ignore[arg-type]


Backend = Wanlora | RemoteWanlora


@contextmanager
def _open() -> Iterator[Backend]:
    settings = _settings()
    if settings.server:
        remote = RemoteWanlora(settings.server, settings.token, default_project=settings.project)
        try:
            yield remote
        finally:
            remote.close()
        return
    wl = Wanlora.from_settings(settings)
    try:
        if settings.token:  # with a token, the CLI obeys that token's role, exactly as the API would
            with wl.accounts(write=False) as acc:
                wl = wl.as_principal(acc.authenticate(settings.token))
        yield wl
        _deliver_webhooks(wl)
    finally:
        wl.close()


def _deliver_webhooks(wl: Wanlora) -> None:
    """On the embedded default there is no server to deliver webhooks: do one short pass after the
    command (its change is committed already); what fails stays queued for the next pass."""
    with suppress(Exception):  # a delivery problem must never turn a done change into a failed command
        Dispatcher(wl.db, timeout=2.0).run_once()


def _local(wl: Backend, what: str) -> Wanlora:
    if not isinstance(wl, Wanlora):
        raise InvalidInput(f"{what} runs on the server host, not through --server", hint="unset WANLORA_SERVER")
    return wl


def _project(wl: Backend, project: str | None) -> str:
    return project or wl.default_project


def hub_offline() -> None:
    """Weights come from local folders: keep the hub libraries offline (HF_HUB_OFFLINE=0 allows it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def train_extra_missing(what: str) -> InvalidInput:
    return InvalidInput(f"{what} needs the train extra", hint="pip install torch==2.13.0 'wanlora[train]'")


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


def _parse_scores(items: list[str] | None) -> dict[str, float]:
    scores: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"score {item!r} is not NAME=VALUE", hint="e.g. --score consistency=9.2")
        try:
            scores[key.strip()] = float(value)
        except ValueError:
            raise InvalidInput(f"score {item!r}: {value!r} is not a number") from None
    return scores


@contextmanager
def _byte_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=render.err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        yield update


# -- database --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the schema this wanlora needs (back it up first)."""
    with _open() as backend:
        wl = _local(backend, "`wanlora db upgrade`")
        before, after = wl.db.upgrade()
        if before == after:
            render.console.print(f"database {wl.db.safe_url} already at revision {after}")
        else:
            render.console.print(f"database {wl.db.safe_url} upgraded: {before or 'empty'} → {after}")


@db_app.command("status")
def db_status(as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the one this wanlora needs."""
    with _open() as backend:
        wl = _local(backend, "`wanlora db status`")
        current, head = wl.db.current_revision(), wl.db.head_revision()
        data = {"url": wl.db.safe_url, "current": current, "head": head, "up_to_date": current == head}
        if as_json:
            render.emit_json(data)
        else:
            state = "[green]up to date[/]" if current == head else "[yellow]run `wanlora db upgrade`[/]"
            render.console.print(f"{data['url']}: revision {current or 'none'} (needs {head}) {state}")


# -- users and tokens ------------------------------------------------------------------------------


@user_app.command("add")
def user_add(name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False) -> None:
    """Add a user (then give it tokens with `wanlora token create`)."""
    with _open() as wl, wl.accounts() as acc:
        user = acc.add_user(name=name)
    render.emit_json(user) if as_json else render.console.print(f"added user {user.name}")


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users."""
    with _open() as wl, wl.accounts(write=False) as acc:
        users = acc.list_users()
    if as_json:
        render.emit_json(users)
    else:
        for u in users:
            render.console.print(f"{u.name}  (added by {u.created_by} on {u.created_at:%Y-%m-%d})")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", "-u", help="Owner of the token.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project, or '*' for every project.")],
    role: Annotated[str, typer.Option("--role", "-r", help="trainer, production or admin.")],
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime such as 12h, 30d, 4w.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token. The secret is shown once and only its hash is kept."""
    with _open() as wl, wl.accounts() as acc:
        created = acc.create_token(
            user=user, project=project, role=role, expires_in=parse_duration(expires) if expires else None
        )
    if as_json:
        render.emit_json(created)
    else:
        until = f", expires {created.expires_at:%Y-%m-%d %H:%M} UTC" if created.expires_at else ""
        render.console.print(f"token {created.id} for {created.user}: {created.role} in {created.project}{until}")
        render.console.print("store it now, it is not shown again:", style="bold yellow")
        sys.stdout.write(created.token + "\n")


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """List the tokens you may manage (never their secrets)."""
    with _open() as wl, wl.accounts(write=False) as acc:
        tokens = acc.list_tokens()
    if as_json:
        render.emit_json(tokens)
    else:
        render.console.print(render.tokens_table(tokens))


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id (see `wanlora token list`).")]) -> None:
    """Revoke a token at once."""
    with _open() as wl, wl.accounts() as acc:
        t = acc.revoke_token(token_id=token_id)
    render.console.print(f"token {t.id} of {t.user} ({t.prefix}…) revoked")


# -- datasets --------------------------------------------------------------------------------------


@dataset_app.command("check")
def dataset_check(
    folder: Annotated[Path, typer.Argument(help="Dataset: images/ or videos/ plus captions/.")],
    as_json: JsonOpt = False,
) -> None:
    """Open every sample; report missing or empty captions, unreadable or mixed media, sizes, frames, fps,
    a summary and the dataset hash. Exits 1 when there are problems."""
    try:
        from trainer.dataset import check_dataset
    except ImportError:  # pragma: no cover - depends on the install
        raise InvalidInput("dataset tools need the train extra", hint="pip install 'wanlora[train]'") from None
    report = check_dataset(folder)
    if as_json:
        render.emit_json(
            {
                "ok": report.ok,
                "problems": report.problems,
                "summary": report.summary(),
                "dataset_hash": report.dataset_hash,
            }
        )
    else:
        for problem in report.problems:
            render.console.print(f"[red]✗[/] {escape(problem)}", highlight=False)
        summary = report.summary()
        render.console.print(
            f"{summary['samples']} {summary['kind']} · sizes {summary['resolutions']} · frames {summary['frames']}"
            + (f" · fps {summary['fps']}" if summary["fps"] else ""),
            highlight=False,
        )
        if report.ok:
            render.console.print(f"[green]ok[/] · dataset hash {report.dataset_hash}")
    if not report.ok:
        raise typer.Exit(1)


@dataset_app.command("prepare")
def dataset_prepare(
    source: Annotated[Path, typer.Argument(help="Raw dataset (images/ or videos/ + captions/).")],
    destination: Annotated[Path, typer.Argument(help="New folder for the prepared dataset.")],
    resolution: Annotated[int, typer.Option("--resolution", help="512, 768 or 1024 (square).")] = 512,
    frames: Annotated[int, typer.Option("--frames", help="Clip length, 4n+1: 17, 21 or 25.")] = 17,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate of the clips.")] = 24,
    filter_out: Annotated[bool, typer.Option("--filter", help="Leave out what the quality checks flag.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Centre-crop, resize, cut videos into 4n+1-frame clips within scenes, convert fps, and report blur,
    lighting jumps, camera shake, near-duplicates and too-short clips (--filter removes them)."""
    try:
        from trainer.prepare import prepare_dataset
    except ImportError:  # pragma: no cover - depends on the install
        raise InvalidInput("dataset tools need the train extra", hint="pip install 'wanlora[train]'") from None
    report = prepare_dataset(source, destination, resolution=resolution, frames=frames, fps=fps, filter_out=filter_out)
    if as_json:
        render.emit_json({"summary": report.summary(), "kept": report.kept, "removed": report.removed})
        return
    for item in report.flagged:
        state = "removed" if item in report.removed else "flagged"
        render.console.print(
            f"[yellow]{state}[/] {item['name']}: {escape('; '.join(item['reasons']))}", highlight=False
        )
    summary = report.summary()
    share = summary["flagged"] / max(1, summary["kept"] + summary["removed"])
    render.console.print(
        f"kept {summary['kept']}, removed {summary['removed']}, flagged {summary['flagged']} ({share:.0%}; "
        f"the guide finds 30–50% usual) → {destination}"
    )


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
    with _open() as wl, wl.webhooks() as hooks:
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
    with _open() as wl, wl.webhooks(write=False) as hooks:
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
    with _open() as wl, wl.webhooks() as hooks:
        h = hooks.remove(webhook_id=webhook_id)
    render.console.print(f"webhook {h.id} ({h.url}) removed")


@webhook_app.command("deliveries")
def webhook_deliveries(
    webhook: Annotated[int | None, typer.Option("--webhook", help="Only this webhook.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log: status, attempts, last answer."""
    with _open() as wl, wl.webhooks(write=False) as hooks:
        rows = hooks.deliveries(webhook_id=webhook, limit=limit)
    if as_json:
        render.emit_json(rows)
    else:
        render.console.print(render.deliveries_table(rows))


# -- LoRAs -----------------------------------------------------------------------------------------


@lora_app.command("create")
def lora_create(
    name: Annotated[str, typer.Argument(help="LoRA name: a-z, 0-9, '_' and '-'.")],
    category: Annotated[str, typer.Option("--category", "-c", help="character, style, motion or domain.")],
    base_model: Annotated[str, typer.Option("--base-model", "-b", help=f"One of: {', '.join(BASE_MODELS)}.")],
    trigger: Annotated[list[str] | None, typer.Option("--trigger", "-t", help="Trigger word (repeatable).")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a LoRA in a project."""
    with _open() as wl, wl.registry() as reg:
        lora = reg.create_lora(
            project=_project(wl, project),
            name=name,
            category=category,
            base_model=base_model,
            trigger_words=trigger or [],
            description=description,
        )
    if as_json:
        render.emit_json(lora)
    else:
        render.console.print(f"created {lora.project}/{lora.name} ({lora.category.value}, {lora.base_model})")


# -- register and lifecycle ------------------------------------------------------------------------


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="LoRA .safetensors (the high-noise expert for A14B models).")],
    lora: Annotated[str, typer.Option("--lora", "-l", help="LoRA name.")],
    changelog: Annotated[str, typer.Option("--changelog", "-m", help="What changed from the previous version.")],
    version: Annotated[str | None, typer.Option("--version", "-v", help="Explicit semver, e.g. 1.2.0.")] = None,
    bump: Annotated[str | None, typer.Option("--bump", help="major, minor or patch of the latest version.")] = None,
    low_noise: Annotated[Path | None, typer.Option("--low-noise", help="Low-noise expert file (A14B).")] = None,
    hyperparams: Annotated[Path | None, typer.Option("--hyperparams", help="JSON file of hyperparameters.")] = None,
    from_metadata: Annotated[
        bool, typer.Option("--from-metadata", help="Read hyperparameters and dataset facts from ss_*/modelspec.*.")
    ] = False,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="Dataset folder to fingerprint.")] = None,
    dataset_hash: Annotated[str | None, typer.Option("--dataset-hash", help="Known dataset hash.")] = None,
    score: Annotated[list[str] | None, typer.Option("--score", help="NAME=VALUE on 0-10 (repeatable).")] = None,
    known_issues: Annotated[str, typer.Option("--known-issues")] = "",
    parent: Annotated[str | None, typer.Option("--parent", help="Parent version (default: the latest).")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Creates the LoRA if new.")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", "-b", help="Creates the LoRA if new.")] = None,
    trigger: Annotated[list[str] | None, typer.Option("--trigger", "-t", help="Trigger word if new.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Register a LoRA file (or an A14B pair) as a new [yellow]testing[/] version.

    The file is checked without torch (header bounds, LoRA structure, shapes against the base model,
    NaN/Inf), converted to the canonical ComfyUI-loadable form and streamed into the store.
    """
    with _open() as wl:
        req = RegisterRequest(
            project=_project(wl, project),
            lora=lora,
            file=file,
            changelog=changelog,
            version=version,
            bump=bump,
            low_noise=low_noise,
            hyperparams_file=hyperparams,
            from_metadata=from_metadata,
            dataset_dir=dataset,
            dataset_hash=dataset_hash,
            scores=_parse_scores(score),
            known_issues=known_issues,
            parent=parent,
            category=category,
            base_model=base_model,
            trigger_words=tuple(trigger or ()),
        )
        with _byte_progress(not (quiet or as_json)) as progress:
            result = wl.register(req, progress=progress)
    if as_json:
        render.emit_json(result)
    else:
        files = ", ".join(f"{f.role.value} {f.sha256[:12]}" for f in result.files)
        render.console.print(f"registered {result.project}/{result.lora}@{result.version} [yellow]testing[/] ({files})")


def _transition(action: Callable[..., Any], as_json: bool, message: Callable[[Any], str], **kwargs: Any) -> None:
    with _open() as wl, wl.registry() as reg:
        kwargs["project"] = _project(wl, kwargs.get("project"))
        result = action(reg, **kwargs)
    if as_json:
        render.emit_json(result)
    else:
        render.console.print(message(result))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    version: Annotated[str, typer.Argument(help="Version to make current.")],
    reason: ReasonOpt = None,
    override: Annotated[
        bool, typer.Option("--override", help="Without the required evidence (admin; needs --reason; recorded).")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a testing version [green]current[/]; the old current becomes deprecated, atomically. The
    phases the project's policy requires must have passed for this version's files (`wanlora eval
    status`)."""
    _transition(
        lambda reg, **kw: reg.promote(**kw),
        as_json,
        lambda v: (
            f"{v.project}/{v.lora}@{v.version} is now [bold green]current[/]"
            + (" [yellow](override)[/]" if override else "")
        ),
        project=project,
        name=name,
        version=version,
        reason=reason,
        override=override,
    )


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the version that was current before current again; the rolled-back one is deprecated."""
    _transition(
        lambda reg, **kw: reg.rollback(**kw),
        as_json,
        lambda v: f"rolled back: {v.project}/{v.lora}@{v.version} is [bold green]current[/] again",
        project=project,
        name=name,
        reason=reason,
    )


@app.command()
def deprecate(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    version: Annotated[str, typer.Argument(help="Version to retire.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retire a version (a deprecated current version leaves the LoRA with none)."""
    _transition(
        lambda reg, **kw: reg.deprecate(**kw),
        as_json,
        lambda v: f"{v.project}/{v.lora}@{v.version} is [dim]deprecated[/]",
        project=project,
        name=name,
        version=version,
        reason=reason,
    )


@app.command()
def annotate(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    score: Annotated[list[str] | None, typer.Option("--score", help="NAME=VALUE on 0-10 (repeatable).")] = None,
    known_issues: Annotated[str | None, typer.Option("--known-issues")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record test scores or known issues on a version (an event in the log)."""
    name, version = _split_ref(ref)
    if version is None:
        raise InvalidInput(f"{ref!r} names no version", hint="use NAME@VERSION")
    _transition(
        lambda reg, **kw: reg.annotate(**kw),
        as_json,
        lambda v: f"recorded on {v.project}/{v.lora}@{v.version}",
        project=project,
        name=name,
        version=version,
        scores=_parse_scores(score),
        known_issues=known_issues,
    )


# -- reading ---------------------------------------------------------------------------------------


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="LoRAs with a version in it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List LoRAs with their current and latest versions."""
    with _open() as wl, wl.registry(write=False) as reg:
        rows = reg.list_loras(project=project, category=category, status=status)
    if as_json:
        render.emit_json(rows)
    elif not rows:
        render.console.print("no LoRAs yet: register one with `wanlora register FILE --lora NAME ...`")
    else:
        render.console.print(render.loras_table(rows))


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a LoRA and its versions, or one version in full."""
    name, version = _split_ref(ref)
    with _open() as wl, wl.registry(write=False) as reg:
        proj = _project(wl, project)
        data: Any = (
            reg.get_version(project=proj, name=name, version=version)
            if version
            else reg.get_lora(project=proj, name=name)
        )
    if as_json:
        render.emit_json(data)
    else:
        render.console.print(render.version_view(data) if version else render.lora_view(data))


@app.command()
def history(
    name: Annotated[str | None, typer.Argument(help="LoRA name (default: the whole project).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the event log: who changed what, when, from what, to what, and why."""
    with _open() as wl, wl.registry(write=False) as reg:
        proj = _project(wl, project)
        events = reg.history(project=proj, name=name, limit=limit)
    if as_json:
        render.emit_json(events)
    else:
        render.console.print(render.history_table(events, f"history of {proj}/{name or '*'}"))


@app.command()
def diff(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    old: Annotated[str, typer.Argument(help="Older version.")],
    new: Annotated[str, typer.Argument(help="Newer version.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two versions: hyperparameters, dataset, scores, files and changelog."""
    with _open() as wl, wl.registry(write=False) as reg:
        result = reg.diff(project=_project(wl, project), name=name, old=old, new=new)
    if as_json:
        render.emit_json(result)
    else:
        render.console.print(render.diff_table(result))


@app.command()
def notes(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (e.g. training_notes.md).")] = None,
    project: ProjectOpt = None,
) -> None:
    """Write the version log as training_notes.md (the guide's form; newest first, current marked)."""
    with _open() as wl, wl.registry(write=False) as reg:
        text = training_notes(reg.get_lora(project=_project(wl, project), name=name))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        render.console.print(f"wrote {output}")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A LoRA .safetensors file.")],
    base_model: Annotated[str | None, typer.Option("--base-model", "-b", help="Check shapes against it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a LoRA file without registering it (format, rank, alpha, modules, metadata)."""
    ins = inspect_lora(file, lookup_base_model(base_model) if base_model else None)
    data = {
        "file": str(file),
        "source_format": ins.source_format.value,
        "rank": ins.rank,
        "alpha": ins.alpha,
        "dtype": ins.dtype,
        "modules": len(ins.modules),
        "target_modules": ins.target_modules,
        "metadata": ins.metadata,
    }
    if as_json:
        render.emit_json(data)
    else:
        for key, value in data.items():
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            render.console.print(f"[bold]{key}[/]: {shown}", highlight=False)


# -- ComfyUI sync ----------------------------------------------------------------------------------


@app.command()
def sync(
    comfyui: Annotated[Path, typer.Option("--comfyui", help="The ComfyUI folder.")],
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    pin: Annotated[bool, typer.Option("--pin", help="Also keep NAME@VERSION files of current versions.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Report drift, change nothing (exit 1 on drift).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Hash every file instead of trusting size+mtime.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep running; apply promotions and rollbacks.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Watch poll interval, seconds.")] = 0.2,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            envvar="WANLORA_CLIENT_ID",
            help="This host's id: it then takes part in trials and gets a candidate for its sticky share.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one line per sync with --watch).")] = False,
) -> None:
    """Put every current version into ComfyUI/models/loras/wanlora/<project>/<category>/<name>.safetensors."""
    if check and watch:
        raise InvalidInput("--check and --watch do not go together")
    with _open() as wl:
        seen = {"id": 0}

        def fetch() -> tuple[int, list[Any]]:
            with wl.registry(write=False) as reg:
                seen["id"] = reg.last_event_id()
                return seen["id"], reg.current_targets(project=project, client=client_id)

        def last_change() -> int:
            with wl.registry(write=False) as reg:
                if isinstance(reg, RemoteRegistry):  # the server's change feed: a long poll, not a tight loop
                    return reg.wait_for_change(seen["id"])
                return reg.last_event_id()

        def show(report: SyncReport) -> None:
            if as_json:
                render.emit_json(report.as_dict(), lines=watch)
                sys.stdout.flush()
            else:
                render.console.print(render.sync_summary(report))
                if report.copied or report.removed or report.drift:
                    render.console.print(render.drift_table(report))

        def apply(targets: list[Any]) -> SyncReport:
            with _byte_progress(not (as_json or watch)) as progress:
                return sync_comfyui(
                    targets, wl.store, comfyui, project=project, pin=pin, check=check, verify=verify, progress=progress
                )

        if watch:
            render.err_console.print(f"watching the registry; syncing {comfyui} (Ctrl-C to stop)")
            stop = threading.Event()
            try:
                pause = 0.0 if isinstance(wl, RemoteWanlora) else interval
                watch_comfyui(fetch, last_change, apply, interval=pause, stop=stop, on_sync=show)
            except KeyboardInterrupt:
                stop.set()
            return
        report = apply(fetch()[1])
        show(report)
        if check and report.drift:
            raise typer.Exit(1)


@app.command()
def train(
    dataset: Annotated[Path | None, typer.Option("--dataset", help="images/ or videos/ + captions/.")] = None,
    lora: Annotated[
        str | None, typer.Option("--lora", "-l", help="Registry LoRA to register candidates under.")
    ] = None,
    goal: Annotated[str | None, typer.Option("--goal", "-g", help="character, style, motion or domain.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file; flags override it.")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", "-b")] = None,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="Local diffusers folder.")] = None,
    tiny: Annotated[bool | None, typer.Option("--tiny/--no-tiny", help="Random tiny models on CPU.")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="1, or 4n+1 for clips.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Per process (GPU).")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = None,
    rank: Annotated[int | None, typer.Option("--rank")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Runs, caches and checkpoints.")] = None,
    gpu_memory: Annotated[float | None, typer.Option("--gpu-memory", help="GB, for the preflight.")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="The guide's conservative/standard/aggressive trio.")] = False,
    preflight_only: Annotated[bool, typer.Option("--preflight-only", help="Estimate and stop.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train even if the preflight says it will not fit.")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="A checkpoint folder to continue.")] = None,
    register_candidates: Annotated[bool, typer.Option("--register/--no-register")] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check → preflight → train → register: a captioned dataset becomes testing versions.

    Several GPUs: `accelerate launch --multi_gpu --num_processes N -m cli train …` (batch size is per
    process; only the main process registers)."""
    hub_offline()
    try:
        from trainer.cli import run_training
    except ImportError:  # pragma: no cover - depends on the install
        raise train_extra_missing("training") from None
    overrides = {
        "dataset": dataset, "lora": lora, "goal": goal, "base_model": base_model, "model_path": model_path,
        "tiny": tiny, "resolution": resolution, "frames": frames, "batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum, "rank": rank, "learning_rate": learning_rate,
        "epochs": epochs, "max_steps": max_steps, "checkpoint_every": checkpoint_every, "output": output,
        "gpu_memory_gb": gpu_memory, "force": force or None, "project": project,
    }  # fmt: skip
    with _open() as backend:
        run_training(
            config, overrides, backend, sweep=sweep, preflight_only=preflight_only, resume=resume,
            register=register_candidates, as_json=as_json,
        )  # fmt: skip


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
) -> None:
    """Run the team server (HTTP API). On first start it creates the first admin and prints its token once."""
    try:
        import uvicorn
    except ImportError:
        raise InvalidInput("the server needs its extra", hint="pip install 'wanlora[server]'") from None
    with _open() as backend:
        wl = _local(backend, "`wanlora serve`")
        wl.db.ensure_schema()
        with wl.accounts() as acc:
            first = acc.bootstrap_admin()
    if first is not None:
        render.console.print("first start: created user [bold]admin[/] with a token for every project.")
        render.console.print("store it now, it is not shown again:", style="bold yellow")
        sys.stdout.write(first.token + "\n")
        sys.stdout.flush()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


@app.command()
def demo(
    keep: Annotated[Path | None, typer.Option("--keep", help="Use this folder instead of a throwaway one.")] = None,
) -> None:
    """Walk through the whole flow on a throwaway $WANLORA_HOME: register, promote, sync, roll back."""
    from cli.demo import run_demo

    run_demo(keep)


from cli import evaluation as _evaluation  # noqa: E402,F401  (registers eval, trial, report, review, …)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
