"""`wanlora train`: check → preflight → train → register, with rich progress (the train extra).

The trainer itself (``trainer/``) is a library without a terminal; this module gives it one."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli import render
from cli.app import JsonOpt, ProjectOpt, app, backend, hub_offline, train_extra_missing
from registry.domain.errors import InvalidInput

if TYPE_CHECKING:
    from registry.backends.contract import Backend

if TYPE_CHECKING:
    from trainer.config import TrainConfig

__all__ = ["run_training"]


@app.command()
def train(
    dataset: Annotated[Path | None, typer.Option("--dataset", help="images/ or videos/ + captions/.")] = None,
    lora: Annotated[
        str | None, typer.Option("--lora", "-l", help="Registry LoRA to register candidates under.")
    ] = None,
    goal: Annotated[str | None, typer.Option("--goal", "-g", help="character, style, motion or domain.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file; flags override it.")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", "-b")] = None,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="Local diffusers folder.")] = None,
    tiny: Annotated[bool | None, typer.Option("--tiny/--no-tiny", help="Random tiny models on CPU.")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="1, or 4n+1 for clips.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Per process (GPU).")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = None,
    rank: Annotated[int | None, typer.Option("--rank")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Runs, caches and checkpoints.")] = None,
    gpu_memory: Annotated[float | None, typer.Option("--gpu-memory", help="GB, for the preflight.")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="The guide's conservative/standard/aggressive trio.")] = False,
    preflight_only: Annotated[bool, typer.Option("--preflight-only", help="Estimate and stop.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train even if the preflight says it will not fit.")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="A checkpoint folder to continue.")] = None,
    register_candidates: Annotated[bool, typer.Option("--register/--no-register")] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check → preflight → train → register: a captioned dataset becomes testing versions.

    Several GPUs: `accelerate launch --multi_gpu --num_processes N -m cli train …` (batch size is per
    process; only the main process registers)."""
    hub_offline()
    try:
        import trainer.train  # noqa: F401  (torch, diffusers, peft)
    except ImportError:  # pragma: no cover - depends on the install
        raise train_extra_missing("training") from None
    overrides = {
        "dataset": dataset, "lora": lora, "goal": goal, "base_model": base_model, "model_path": model_path,
        "tiny": tiny, "resolution": resolution, "frames": frames, "batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum, "rank": rank, "learning_rate": learning_rate,
        "epochs": epochs, "max_steps": max_steps, "checkpoint_every": checkpoint_every, "output": output,
        "gpu_memory_gb": gpu_memory, "force": force or None, "project": project,
    }  # fmt: skip
    with backend() as opened:
        run_training(
            config, overrides, opened, sweep=sweep, preflight_only=preflight_only, resume=resume,
            register=register_candidates, as_json=as_json,
        )  # fmt: skip


def _gpu_memory_gb(config: "TrainConfig") -> float | None:
    if config.gpu_memory_gb:
        return config.gpu_memory_gb
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory) / 1024**3
    except ImportError:  # pragma: no cover
        pass
    return None


def _preflight(config: "TrainConfig", samples: int, out: Console) -> dict[str, Any]:
    from trainer.preflight import estimate, remedies

    est = estimate(config, samples)
    budget = _gpu_memory_gb(config)
    table = Table(title="preflight (estimate, before anything is loaded)", show_header=False)
    for label, value in (
        ("DiT weights on the GPU", f"{est.weights_gb:.1f} GB"),
        ("LoRA params, grads, AdamW", f"{est.lora_gb:.2f} GB"),
        ("activations", f"{est.activations_gb:.1f} GB"),
        ("CUDA context and allocator", f"{est.context_gb:.1f} GB"),
        ("peak", f"[bold]{est.peak_gb:.1f} GB[/]" + (f" of {budget:.0f} GB" if budget else "")),
        ("sequence length", f"{est.sequence:,} tokens"),
        ("FLOPs per optimizer step", f"{est.step_flops / 1e12:,.1f} TFLOP"),
        ("steps", f"{est.steps:,}"),
        ("time", f"{est.hours:.1f} h at {config.gpu_tflops:g} TFLOP/s × {config.expected_mfu:.0%} MFU"),
        ("cost", f"${est.cost_usd:.2f} at ${config.gpu_hourly_usd}/h"),
    ):
        table.add_row(label, value)
    out.print(table)
    for note in est.notes:
        out.print(f"[dim]{note}[/]")
    data = {"peak_gb": est.peak_gb, "budget_gb": budget, "hours": est.hours, "cost_usd": est.cost_usd}
    if budget is not None and est.peak_gb > budget and not config.force:
        fixes = remedies(config, samples, budget)
        steps = "; ".join(f"{label} (→ {peak:.1f} GB)" for label, peak in fixes)
        raise InvalidInput(
            f"this run needs about {est.peak_gb:.1f} GB of GPU memory but {budget:.0f} GB are available",
            hint=f"in the guide's order: {steps}; or pass --force",
        )
    return data


def run_training(
    config_file: Path | None,
    overrides: dict[str, Any],
    backend: "Backend",
    *,
    sweep: bool,
    preflight_only: bool,
    resume: Path | None,
    register: bool,
    as_json: bool,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from trainer.config import load_config
    from trainer.dataset import check_dataset
    from trainer.register import register_run
    from trainer.train import train

    # Under `accelerate launch` every process runs this; only the main one speaks and registers.
    main_process = os.environ.get("RANK", "0") == "0"
    out = render.err_console if as_json else render.console  # with --json, stdout carries only the JSON
    if not main_process:
        out = Console(quiet=True)

    config = load_config(config_file, **overrides)
    report = check_dataset(config.dataset)
    if not report.ok:
        raise InvalidInput(
            f"the dataset has {len(report.problems)} problem(s): " + "; ".join(report.problems[:5]),
            hint="run `wanlora dataset check` and fix them first",
        )
    samples = len(report.samples)
    runs = config.sweep_configs() if sweep or config.sweep else {"run": config.resolved(samples)}
    summary: dict[str, Any] = {"dataset": report.summary(), "dataset_hash": report.dataset_hash, "runs": {}}
    for name, cfg in runs.items():
        out.print(
            f"[bold]{name}[/]: {cfg.goal} preset · rank {cfg.rank} · lr {cfg.learning_rate:g} · {cfg.epochs} epochs"
        )
        summary["runs"][name] = {"preflight": _preflight(cfg, samples, out)}
    if preflight_only:
        if as_json and main_process:
            render.emit_json(summary)
        return
    for name, cfg in runs.items():
        columns = (
            TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} · lr {task.fields[lr]:.2e} · {task.fields[rate]:.1f} it/s"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        bar_console = render.err_console if main_process else out
        with Progress(*columns, console=bar_console, transient=as_json, disable=not main_process) as bar:
            task = bar.add_task(name, total=None, loss=0.0, lr=0.0, rate=0.0)

            def update(step: int, total: int, loss: float, lr: float, task: Any = task) -> None:
                elapsed = bar.tasks[task].elapsed or 1e-9
                bar.update(task, completed=step, total=total, loss=loss, lr=lr, rate=step / elapsed)

            run = train(cfg, resume=resume, progress=update)
        if not run.is_main:
            continue
        for finding in run.diagnostics:
            out.print(f"[yellow]⚠ {finding.text()}[/]")
        record: dict[str, Any] = {
            "run_dir": str(run.run_dir), "processes": run.processes, "steps": run.total_steps, "seconds": round(run.seconds, 2),
            "final_loss": run.losses[-1] if run.losses else None, "plot": str(run.plot),
            "diagnostics": [f.text() for f in run.diagnostics], "checkpoints": [c.step for c in run.checkpoints],
        }  # fmt: skip
        out.print(f"loss plot: {run.plot}")
        if register:
            versions = register_run(run, backend, project=cfg.project)
            record["registered"] = [v.version for v in versions]
            for v in versions:
                out.print(f"registered {v.project}/{v.lora}@{v.version} [yellow]testing[/]")
        summary["runs"][name].update(record)
    if as_json and main_process:
        render.emit_json(summary)
