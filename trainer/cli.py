"""What `wanlora train` does, with its rich output: check → preflight → train → register."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cli import render
from registry.app import Wanlora
from registry.client import RemoteWanlora
from registry.errors import InvalidInput
from trainer.config import TrainConfig, load_config
from trainer.dataset import check_dataset
from trainer.preflight import estimate, remedies

__all__ = ["run_training"]


def _gpu_memory_gb(config: TrainConfig) -> float | None:
    if config.gpu_memory_gb:
        return config.gpu_memory_gb
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory) / 1024**3
    except ImportError:  # pragma: no cover
        pass
    return None


def _preflight(config: TrainConfig, samples: int, out: Any) -> dict[str, Any]:
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
    backend: Wanlora | RemoteWanlora,
    *,
    sweep: bool,
    preflight_only: bool,
    resume: Path | None,
    register: bool,
    as_json: bool,
) -> None:
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
