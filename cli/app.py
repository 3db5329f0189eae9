"""The ``wanlora`` application: the typer app, the options every command shares, and the door to the
backend (``backend()``), written once against the backend contract. Each command group registers
itself on ``app`` from its own module; ``cli.main`` imports them all."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from cli import render
from registry.domain.errors import InvalidInput, WanloraError, out_of_space

if TYPE_CHECKING:
    from registry.backends import Backend
    from registry.settings import Settings

GLOBAL_OPTIONS = ("--server", "--token")


def hoist_global_options(args: list[str]) -> list[str]:
    """``--server``/``--token`` may come anywhere on the line (``wanlora list --server URL``): they are
    moved in front of the subcommand, where the app reads them. Nothing after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and rest:  # already in front: leave it where it is
            if "=" in arg:
                front.append(arg)
            elif i + 1 < len(args):
                front.extend(args[i : i + 2])
                i += 1
            else:
                rest.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class Group(TyperGroup):
    """Turns registry errors into ``Type: message`` plus the fix, and a non-zero exit, for every command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the root: wanlora [global options] COMMAND …
            args = hoist_global_options(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except Exception as exc:
                full = out_of_space(exc)
                if full is None:
                    raise
                raise full from exc
        except WanloraError as exc:
            render.err_console.print(
                f"[bold red]{type(exc).__name__}[/]: {escape(exc.message)}", highlight=False, soft_wrap=True
            )
            if exc.hint:
                render.err_console.print(f"[dim]fix:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from None


app = typer.Typer(
    cls=Group,
    help="Versioned registry and deployment manager for WAN 2.2 LoRA adapters.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

ProjectOpt = Annotated[
    str | None, typer.Option("--project", "-p", help="Project (namespace); default $WANLORA_PROJECT or 'default'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", "-r", help="Why; recorded in the event log.")]


_overrides: dict[str, str] = {}


def command_group(name: str, help: str, *, no_args_is_help: bool = True) -> typer.Typer:
    """A subcommand group (``wanlora NAME …``), registered on the app, with the app's error handling."""
    group = typer.Typer(cls=Group, help=help, no_args_is_help=no_args_is_help)
    app.add_typer(group, name=name)
    return group


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


def overrides() -> dict[str, str]:
    """The --server / --token given on this command line."""
    return dict(_overrides)


def settings() -> Settings:
    from registry.settings import Settings

    return Settings(**_overrides)  # type: ignore[arg-type]


@contextmanager
def _loading() -> Iterator[None]:
    """Opening the backend imports most of what a command runs on (SQLAlchemy, the table and service
    classes): tens of thousands of long-lived objects, which the cycle collector would walk again and
    again while they are being made. It is paused for that, and what was made is set aside from later
    collections (``gc.freeze``). Only the first time in a process: later opens import nothing."""
    if not gc.isenabled() or "registry.backends.local" in sys.modules:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@contextmanager
def backend() -> Iterator[Backend]:
    """The backend the settings choose (a server's with --server / WANLORA_SERVER), for one command;
    what the command leaves (webhook deliveries on the embedded default) runs after it succeeded."""
    from registry.backends import open_backend

    with _loading():
        opened = open_backend(settings())
    try:
        yield opened
        opened.after_command()
    finally:
        opened.close()


def project_of(backend: Backend, project: str | None) -> str:
    return project or backend.default_project


def hub_offline() -> None:
    """Weights come from local folders: keep the hub libraries offline (HF_HUB_OFFLINE=0 allows it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def train_extra_missing(what: str) -> InvalidInput:
    return InvalidInput(f"{what} needs the train extra", hint="pip install torch==2.13.0 'wanlora[train]'")


def split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


def exact_ref(ref: str, hint: str = "use NAME@VERSION") -> tuple[str, str]:
    """NAME@VERSION, where the command needs the version."""
    name, version = split_ref(ref)
    if version is None:
        raise InvalidInput(f"{ref!r} names no version", hint=hint)
    return name, version


def parse_scores(items: list[str] | None) -> dict[str, float]:
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
def byte_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

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
