"""`wanlora sync`: the current versions into ComfyUI's LoRA folder, once or as they change."""

import hashlib
import sys
import threading
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import render
from cli.app import app, backend, byte_progress, settings
from registry.domain.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from registry.backends.contract import Backend
    from registry.domain.eval_schemas import ReportIn
    from registry.domain.schemas import SyncTarget
    from registry.sync.agent import AgentPass, ReportAgent
    from registry.sync.comfyui import SyncReport

# -- ComfyUI sync ----------------------------------------------------------------------------------


@app.command()
def sync(
    comfyui: Annotated[Path, typer.Option("--comfyui", help="The ComfyUI folder (the one with main.py).")],
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    pin: Annotated[
        bool | None,
        typer.Option("--pin/--no-pin", help="Also keep NAME@VERSION files (remembered; default: as last time)."),
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Report drift, change nothing (exit 1 on drift).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Hash every file instead of trusting size+mtime.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep running; apply promotions and rollbacks.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Watch poll interval of the embedded database, seconds.")
    ] = 0.2,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            envvar="WANLORA_CLIENT_ID",
            help="This host's id: it then takes part in trials and gets a candidate for its sticky share.",
        ),
    ] = None,
    comfyui_url: Annotated[
        str | None,
        typer.Option(
            "--comfyui-url",
            envvar="WANLORA_COMFYUI_URL",
            help="A running ComfyUI (http://127.0.0.1:8188): told to drop its caches after files changed.",
        ),
    ] = None,
    report_from: Annotated[
        str | None,
        typer.Option(
            "--report-from",
            help="Follow this ComfyUI's /history and report each finished job with a managed LoRA (phase 3).",
        ),
    ] = None,
    report_interval: Annotated[float, typer.Option("--report-interval", help="Seconds between history reads.")] = 2.0,
    create: Annotated[
        bool, typer.Option("--create", help="Make the folder (and models/loras) when it is not a ComfyUI folder yet.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one line per sync with --watch).")] = False,
) -> None:
    """Put every current version into ComfyUI/models/loras/wanlora/<project>/<category>/<name>.safetensors."""
    from registry.sync.folder import comfyui_root

    if check and watch:
        raise InvalidInput("--check and --watch do not go together")
    comfyui = comfyui_root(comfyui, create=create and not check)
    if comfyui_url:
        from registry.sync.notify import check_comfyui_url

        comfyui_url = check_comfyui_url(comfyui_url)
    if not (watch or verify or report_from):
        done = _nothing_to_do(comfyui, project=project, client_id=client_id, pin=pin, check=check)
        if done is not None:
            _show(done, as_json=as_json, lines=False)
            return
    _sync(
        comfyui, project=project, pin=pin, check=check, verify=verify, watch=watch, interval=interval,
        client_id=client_id, comfyui_url=comfyui_url, report_from=report_from, report_interval=report_interval,
        as_json=as_json,
    )  # fmt: skip


def _sync(
    comfyui: Path, *, project: str | None, pin: bool | None, check: bool, verify: bool, watch: bool,
    interval: float, client_id: str | None, comfyui_url: str | None, report_from: str | None,
    report_interval: float, as_json: bool,
) -> None:  # fmt: skip
    """The full sync: the targets from the backend, then the folder brought to them (or watched)."""
    from registry.sync.comfyui import sync_comfyui, watch_comfyui
    from registry.sync.folder import loras_dir
    from registry.sync.notify import free_comfyui
    from registry.sync.quick import sync_state

    with backend() as wl:
        wl.pull_as(client_id)
        seen = {"id": 0}
        tags = {"tag": ""}
        where = _registry_identity()

        def fetch() -> tuple[int, list[Any]]:
            with wl.registry(write=False) as reg:
                tags["tag"], targets = reg.tagged_targets(project=project, client=client_id)
                seen["id"] = reg.last_event_id()
                return seen["id"], targets

        def state(pinned: bool) -> str:
            return sync_state(
                f"{where}|{tags['tag']}", loras_dir=loras_dir(comfyui), project=project, client=client_id, pin=pinned
            )

        def last_change() -> int:
            # a long poll of the server's change feed, or the embedded log read every --interval
            return wl.wait_for_change(seen["id"], poll=interval)

        def apply(targets: list[Any]) -> "SyncReport":
            with byte_progress(not (as_json or watch)) as progress:
                report = sync_comfyui(
                    targets, wl.store, comfyui, project=project, pin=pin, check=check, verify=verify, progress=progress,
                    preview=partial(_preview, wl, client_id), tag=tags["tag"] or None,
                    state=state if tags["tag"] else None,
                )  # fmt: skip
            if comfyui_url and report.changed:
                report.comfyui_error = free_comfyui(comfyui_url)
                report.comfyui_freed = report.comfyui_error is None
            return report

        agent = _agent(wl, report_from, comfyui, client_id) if report_from else None
        show = partial(_show, as_json=as_json, lines=watch)
        reported = partial(_reported, as_json=as_json)
        if watch:
            render.err_console.print(f"watching the registry; syncing {comfyui} (Ctrl-C to stop)")
            stop = threading.Event()
            if agent is not None:
                args = (stop, report_interval, reported)
                threading.Thread(target=agent.run_forever, args=args, daemon=True).start()
            try:
                watch_comfyui(fetch, last_change, apply, interval=0.0, stop=stop, on_sync=show)
            except KeyboardInterrupt:
                stop.set()
            return
        report = apply(fetch()[1])
        show(report)
        if agent is not None:
            reported(agent.run_once())
        if check and report.drift:
            raise typer.Exit(1)


def _registry_identity() -> str:
    """Which registry this sync reads: the server's URL, or the embedded database's."""
    current = settings()
    return current.server.rstrip("/") if current.server else current.resolved_database_url


def _nothing_to_do(
    comfyui: Path, *, project: str | None, client_id: str | None, pin: bool | None, check: bool
) -> "SyncReport | None":
    """The report of a sync with nothing to do, told from the manifest's recorded state with the
    standard library alone (``registry.sync.quick``); ``None`` when the full sync has to look."""
    import os

    from cli.app import overrides
    from registry.sync import quick
    from registry.sync.folder import SyncReport, loras_dir

    loras = loras_dir(comfyui)
    recorded = quick.recorded(loras)
    if recorded is None or recorded[1] is None:
        return None
    doc, _, recorded_pin = recorded
    server = overrides().get("server") or quick.setting(os.environ, "server")
    token = overrides().get("token") or quick.setting(os.environ, "token")
    if server:
        tag = doc.get("tag")
        if not isinstance(tag, str) or not tag:
            return None
        if not quick.remote_unchanged(server, token, project=project, client=client_id, etag=tag):
            return None
        where = server.rstrip("/")
    else:
        if token:  # the embedded registry under a token's role: the full sync checks the token
            return None
        where = quick.embedded_database_url(os.environ)
        tag = quick.embedded_tag(where)
        if tag is None:
            return None
    want = quick.sync_state(
        f"{where}|{tag}", loras_dir=loras, project=project, client=client_id,
        pin=recorded_pin if pin is None else pin,
    )  # fmt: skip
    done = quick.folder_unchanged(loras, doc, want)
    if done is None:
        return None
    done.pop("drift")
    return SyncReport(**done | {"checked": check})


def _show(report: "SyncReport", *, as_json: bool, lines: bool) -> None:
    if as_json:
        render.emit_json(report.as_dict(), lines=lines)
        sys.stdout.flush()
    else:
        render.console.print(render.sync_summary(report))
        if report.copied or report.removed or report.drift:
            render.console.print(render.drift_table(report))


def _reported(outcome: "AgentPass", *, as_json: bool) -> None:
    if as_json:
        render.emit_json({"reports": asdict(outcome)}, lines=True)
        sys.stdout.flush()
    else:
        render.err_console.print(render.agent_summary(outcome))


def _agent(wl: "Backend", url: str, comfyui: Path, client_id: str | None) -> "ReportAgent":
    """The host agent for the ComfyUI at ``url``; its outbox and memory live under $WANLORA_HOME/agent."""
    from registry.sync.agent import ReportAgent
    from registry.sync.comfyui import loras_dir
    from registry.sync.notify import check_comfyui_url

    return ReportAgent(
        comfyui_url=check_comfyui_url(url), loras_root=loras_dir(comfyui), client_id=client_id,
        report=lambda *job: _report(wl, *job), state_dir=settings().home_dir / "agent" / _slug(url),
    )  # fmt: skip


def _preview(backend: "Backend", client: str | None, target: "SyncTarget") -> bytes | None:
    with backend.registry(write=False) as reg:
        try:
            return reg.preview(project=target.project, name=target.lora, version=target.version, client=client)
        except NotFound:
            return None


def _report(backend: "Backend", project: str, lora: str, version: str, outcome: "ReportIn") -> None:
    with backend.evaluation() as ev:
        ev.report(project=project, name=lora, version=version, outcome=outcome)


def _slug(url: str) -> str:
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
