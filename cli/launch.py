"""The ``wanlora`` entry point, built for a fast start: it imports the one module that defines the
command being run (all of them for ``wanlora --help`` or an unknown name) and keeps only that command
on the app, so typer builds the parameters of one command instead of ~60. ``cli.main`` is the whole
app at once, for tests and ``python -m cli.main``."""

from __future__ import annotations

import importlib
import sys

from cli.app import GLOBAL_OPTIONS, app

__all__ = ["COMMANDS", "MODULES", "RUNS_OTHERS", "invoked", "load", "main"]

# The command modules, in the order of `wanlora --help`, and the top-level names each registers
# (tests/cli/test_startup.py holds this table to what the modules really register).
MODULES = (
    "database", "loras", "accounts", "webhooks", "datasets", "catalogue", "files", "sync", "train", "server",
    "evaluation", "comfyui", "maintenance",
)  # fmt: skip
COMMANDS = {
    "db": "database",
    **dict.fromkeys(("register", "promote", "rollback", "deprecate", "annotate", "lora"), "loras"),
    **dict.fromkeys(("user", "token"), "accounts"),
    "webhook": "webhooks",
    "dataset": "datasets",
    **dict.fromkeys(("list", "show", "history", "diff", "notes", "inspect"), "catalogue"),
    **dict.fromkeys(("pull", "download", "which"), "files"),
    "sync": "sync",
    "train": "train",
    **dict.fromkeys(("serve", "demo", "dashboard"), "server"),
    **dict.fromkeys(("report", "pick", "metrics", "review", "eval", "trial", "policy"), "evaluation"),
    "comfyui": "comfyui",
    **dict.fromkeys(("gc", "repair"), "maintenance"),
}


def invoked(argv: list[str]) -> str | None:
    """The command name ``argv`` runs (global options skipped), or ``None`` for ``--help``, an option
    the root does not know, or nothing at all."""
    args = iter(argv)
    for arg in args:
        if arg in GLOBAL_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
        elif arg.split("=", 1)[0] not in GLOBAL_OPTIONS:
            return None
    return None


# Commands that run other commands in-process (the demo walks through them all): they get every one.
RUNS_OTHERS = frozenset({"demo"})


def load(name: str | None) -> None:
    """Register ``name``'s command alone when it is known, else every command."""
    from typer.main import get_command_name

    module = None if name in RUNS_OTHERS else COMMANDS.get(name or "")
    for each in (module,) if module else MODULES:
        importlib.import_module(f"cli.{each}")
    if module:
        app.registered_commands[:] = [
            c
            for c in app.registered_commands
            if (c.name or get_command_name(getattr(c.callback, "__name__", ""))) == name
        ]
        app.registered_groups[:] = [g for g in app.registered_groups if g.name == name]


def main() -> None:
    load(invoked(sys.argv[1:]))
    app()
