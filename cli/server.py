"""`wanlora serve` (the team server) and `wanlora demo` (the main job)."""

import os
import socket
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
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes (default: one per CPU, at most 8).")
    ] = None,
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
        workers=workers or min(os.cpu_count() or 1, 8),
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


@app.command()
def dashboard(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")] = 0,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open it in the default browser.")] = True,
) -> None:
    """Open the web dashboard. Embedded default: serve it on 127.0.0.1 for you (the local user, admin of
    every project) and sign the browser in once; with --server: open the team server's dashboard."""
    import webbrowser

    config = settings()
    if config.server:
        url = config.server.rstrip("/") + "/"
        render.console.print(f"the team server's dashboard: {url} (sign in with your API token)")
        if browser:
            webbrowser.open(url)
        return
    try:
        import uvicorn

        from api.deps import LocalSignIn
        from api.main import create_app
    except ImportError:
        raise InvalidInput("the dashboard needs the server extra", hint="pip install 'wanlora[server]'") from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port {port} is not a port", hint="0 to 65535 (0: any free one)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        raise InvalidInput(
            f"port {port} on 127.0.0.1 is taken ({exc.strerror})", hint="--port 0 picks a free one"
        ) from None
    sock.listen(128)  # connections wait in the backlog until the server runs: the browser may open at once
    bound = sock.getsockname()[1]
    local = LocalSignIn(config.user)
    app_ = create_app(config, local_sign_in=local)
    url = f"http://127.0.0.1:{bound}/"
    link = f"{url}signin#{local.issue()}"  # the code rides in the fragment: never sent to a server or logged
    render.console.print(f"wanlora dashboard on [bold]{url}[/] as {config.user} (local admin); Ctrl-C stops it")
    render.console.print(f"sign-in link (works once, within {local.seconds:.0f} s): {link}", soft_wrap=True)
    if browser:
        webbrowser.open(link)
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", access_log=False))
    server.run(sockets=[sock])
