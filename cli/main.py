"""The ``wanlora`` command: parse, call one backend method, render. No rule lives here.

``cli.app`` holds the typer app and what every command shares; each command group is a module that
registers itself on the app when imported here.
"""

from __future__ import annotations

from cli import (  # noqa: F401  (each registers its commands on the app)
    accounts,
    catalogue,
    database,
    datasets,
    evaluation,
    loras,
    server,
    sync,
    train,
    webhooks,
)
from cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
