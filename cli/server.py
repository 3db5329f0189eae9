"""`wanlora serve` (the team server) and `wanlora demo` (the main job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import render
from cli.app import app, settings
from registry.domain.errors import InvalidInput


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
    config = settings()
    if config.server:
        raise InvalidInput("`wanlora serve` runs on the server host, not through --server", hint="unset WANLORA_SERVER")
    from api.main import bootstrap

    first = bootstrap(config)
    if first is not None:
        render.console.print("first start: created user [bold]admin[/] with a token for every project.")
        render.secret("store it now, it is not shown again:", first.token)
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
