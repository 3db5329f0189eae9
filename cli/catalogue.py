"""Reading the registry: `list`, `show`, `history`, `diff`, `notes`, and `inspect` for a file."""

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import render
from cli.app import JsonOpt, ProjectOpt, app, backend, project_of, split_ref
from registry.domain.wan import base_model as lookup_base_model

# -- reading ---------------------------------------------------------------------------------------


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="LoRAs with a version in it.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, max=1000, help="One page of this many.")] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="The page after this LoRA (NAME, or PROJECT/NAME without -p).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List LoRAs with their current and latest versions."""
    with backend() as wl, wl.registry(write=False) as reg:
        rows = reg.list_loras(project=project, category=category, status=status, limit=limit, after=after)
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
    name, version = split_ref(ref)
    with backend() as wl, wl.registry(write=False) as reg:
        proj = project_of(wl, project)
        data: Any = (
            reg.get_version(project=proj, name=name, version=version)
            if version
            else reg.get_lora(project=proj, name=name)
        )
    render.output(data, as_json, lambda: render.version_view(data) if version else render.lora_view(data))


@app.command()
def history(
    name: Annotated[str | None, typer.Argument(help="LoRA name (default: the whole project).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the event log: who changed what, when, from what, to what, and why."""
    with backend() as wl, wl.registry(write=False) as reg:
        proj = project_of(wl, project)
        events = reg.history(project=proj, name=name, limit=limit)
    render.output(events, as_json, lambda: render.history_table(events, f"history of {proj}/{name or '*'}"))


@app.command()
def diff(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    old: Annotated[str, typer.Argument(help="Older version.")],
    new: Annotated[str, typer.Argument(help="Newer version.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two versions: hyperparameters, dataset, scores, files and changelog."""
    with backend() as wl, wl.registry(write=False) as reg:
        result = reg.diff(project=project_of(wl, project), name=name, old=old, new=new)
    render.output(result, as_json, lambda: render.diff_table(result))


@app.command()
def notes(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (e.g. training_notes.md).")] = None,
    project: ProjectOpt = None,
) -> None:
    """Write the version log as training_notes.md (the guide's form; newest first, current marked)."""
    with backend() as wl, wl.registry(write=False) as reg:
        text = reg.notes(project=project_of(wl, project), name=name)
    if output is None:
        sys.stdout.write(render.clean(text))
    else:
        output.write_text(text)
        render.console.print(f"wrote {output}")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A LoRA .safetensors file.")],
    base_model: Annotated[str | None, typer.Option("--base-model", "-b", help="Check shapes against it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a LoRA file without registering it (format, LoRA/LoKr/LoHa/diff, rank, alpha, modules, metadata)."""
    from registry.files.ingest import inspect_lora

    ins = inspect_lora(file, lookup_base_model(base_model) if base_model else None)
    data = {
        "file": str(file),
        "source_format": ins.source_format.value,
        "algorithms": ins.algorithms,
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
