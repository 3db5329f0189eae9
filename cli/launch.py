"""The ``wanlora`` entry point, built for a fast start: it imports the one module that defines the
command being run (all of them for ``wanlora --help`` or an unknown name) and keeps only that command
on the app, so typer builds the parameters of one command instead of ~60. ``cli.main`` is the whole
app at once, for tests and ``python -m cli.main``."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from cli.app import GLOBAL_OPTIONS, app

__all__ = ["COMMANDS", "MODULES", "RUNS_OTHERS", "import_help_renderer", "invoked", "load", "main"]

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


class _Deferred(type):
    """A stand-in for a class whose module is not imported yet: calling it, or reading anything from
    it, imports the module and hands over to the real class."""

    _module: str

    def real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(cls.real(), attr)

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls.real())


# What typer.rich_utils imports at its top for features wanlora turns off: Markdown help text
# (rich_markup_mode="rich" here) and pretty tracebacks (pretty_exceptions_enable=False). Together they
# pull in markdown-it and pygments, a third of what --help costs.
_UNUSED_BY_HELP = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


def import_help_renderer() -> None:
    """Import typer's help renderer with stand-ins for the names in ``_UNUSED_BY_HELP``. The stand-ins
    are bound in typer.rich_utils alone; ``sys.modules`` is left as it was, so any other import of
    those modules gets the real ones, and so would typer if it ever used them."""
    if "typer.rich_utils" in sys.modules:
        return
    stubs: dict[str, types.ModuleType] = {}
    for module, name in _UNUSED_BY_HELP.items():
        if module not in sys.modules:
            stub = types.ModuleType(module)
            setattr(stub, name, _Deferred(name, (), {"_module": module}))
            stubs[module] = sys.modules[module] = stub
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for module, stub in stubs.items():
            if sys.modules.get(module) is stub:
                del sys.modules[module]


def wants_help(argv: list[str]) -> bool:
    """Whether this command line asks for help (``--help`` before any ``--``, or nothing at all)."""
    return not argv or "--help" in argv[: argv.index("--") if "--" in argv else None]


def main() -> None:
    argv = sys.argv[1:]
    load(invoked(argv))
    if wants_help(argv):
        import_help_renderer()
    app()
