"""`wanlora dataset`: check and prepare training datasets (the train extra)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli import render
from cli.app import JsonOpt, command_group
from registry.domain.errors import InvalidInput

dataset_app = command_group("dataset", "Training datasets: check (and prepare).")

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
