"""The ``wanlora`` command: parse, call one backend method, render. No rule lives here.

``cli.app`` holds the typer app and what every command shares; each command group is a module that
registers itself on the app when imported here.
"""

from __future__ import annotations

# isort: off
# Each module registers its commands on the app; this order is the order of `wanlora --help`.
from cli import database, loras, accounts, webhooks, datasets  # noqa: F401
from cli import catalogue, files, sync, train, server, evaluation, comfyui, maintenance  # noqa: F401

# isort: on
from cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
