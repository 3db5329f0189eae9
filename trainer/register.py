"""Into the registry: the chosen checkpoints of a run become testing versions, with their full record.

By default the checkpoints from 50% of training on are registered (where the guide finds the best one
usually lies), as pre-releases of the LoRA's next minor version (``1.3.0-step.400``), each with the
hyperparameters, the dataset hash and summary, the loss curve, the diagnostics and a changelog against
the previous version. It works through either backend (``registry.backends.contract``): the embedded one or a server's.
"""

from __future__ import annotations

from typing import Any

import semver

from registry.backends.contract import Backend
from registry.domain.register import RegisterRequest
from registry.domain.schemas import VersionPublic
from trainer.run import Checkpoint, RunResult

__all__ = ["choose_checkpoints", "register_run"]


def choose_checkpoints(run: RunResult) -> list[Checkpoint]:
    threshold = run.config.register_from * run.total_steps
    return [c for c in run.checkpoints if c.step >= threshold] or run.checkpoints[-1:]


def _curve(losses: list[float], points: int = 60) -> list[list[float]]:
    stride = max(1, len(losses) // points)
    return [
        [i + 1, round(sum(losses[i : i + stride]) / len(losses[i : i + stride]), 6)]
        for i in range(0, len(losses), stride)
    ]


def _hyperparameters(run: RunResult, checkpoint: Checkpoint) -> dict[str, Any]:
    c = run.config
    return {
        "learning_rate": c.learning_rate,
        "rank": c.rank,
        "alpha": c.alpha,
        "epochs": c.epochs,
        "steps": run.total_steps,
        "batch_size": c.batch_size,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "optimizer": c.optimizer,
        "lr_scheduler": c.lr_scheduler,
        "lr_scheduler_num_cycles": c.lr_cycles,
        "warmup_steps": int(run.total_steps * c.warmup_ratio),
        "resolution": c.resolution,
        "frames": c.frames,
        "mixed_precision": c.mixed_precision,
        "gradient_checkpointing": c.gradient_checkpointing,
        "max_grad_norm": c.max_grad_norm,
        "seed": c.seed,
        "timestep_sampling": c.timestep_sampling,
        "shift": c.shift,
        "goal": c.goal,
        "training": {
            "checkpoint_step": checkpoint.step,
            "train_loss": round(checkpoint.train_loss, 6),
            "val_loss_by_timestep": checkpoint.val_loss,
            "loss_curve": _curve(run.losses[: checkpoint.step]),
            "diagnostics": [f.text() for f in run.diagnostics],
            "loss_plot": str(run.plot) if run.plot else None,
        },
    }


def _changelog(run: RunResult, checkpoint: Checkpoint, previous: VersionPublic | None) -> str:
    c = run.config
    text = (
        f"Trained by wanlora on {len(run.dataset.samples)} {run.dataset.kind} ({c.goal} preset): rank {c.rank}, "
        f"lr {c.learning_rate:g}, {c.epochs} epochs; checkpoint at step {checkpoint.step} of {run.total_steps}."
    )
    if previous is None:
        return text + " First version."
    changes = []
    old = previous.hyperparameters
    for key in ("learning_rate", "rank", "epochs", "resolution", "frames"):
        new = getattr(c, key, None)
        if key in old and old[key] != new:
            changes.append(f"{key} {old[key]} → {new}")
    samples = previous.dataset_summary.get("samples")
    if samples is not None and samples != len(run.dataset.samples):
        changes.append(f"dataset {samples} → {len(run.dataset.samples)} samples")
    if previous.dataset_hash and previous.dataset_hash != run.dataset.dataset_hash:
        changes.append("dataset content changed")
    return text + (
        f" Against {previous.version}: " + ", ".join(changes) + "."
        if changes
        else f" Same settings as {previous.version}."
    )


def register_run(run: RunResult, backend: Backend, *, project: str | None = None) -> list[VersionPublic]:
    """Register the chosen checkpoints as testing versions; returns them, oldest step first."""
    c = run.config
    project = project or c.project
    with backend.registry(write=False) as reg:
        lora = reg.find_lora(project=project, name=c.lora)
        previous = reg.get_version(project=project, name=c.lora) if lora and lora.latest_version else None
    latest = semver.Version.parse(lora.latest_version) if lora and lora.latest_version else None
    target = latest.bump_minor() if latest else semver.Version(0, 1, 0)
    registered = []
    for checkpoint in choose_checkpoints(run):
        files = checkpoint.files
        main = files.get("single") or files["high_noise"]
        req = RegisterRequest(
            project=project,
            lora=c.lora,
            file=main,
            low_noise=files.get("low_noise"),
            changelog=_changelog(run, checkpoint, previous),
            version=f"{target}-step.{checkpoint.step}",
            from_metadata=True,
            hyperparameters=_hyperparameters(run, checkpoint),
            dataset_hash=run.dataset.dataset_hash,
            dataset_summary=run.dataset.summary(),
            known_issues="; ".join(f.text() for f in run.diagnostics),
            category=c.goal,
            base_model=c.base_model,
        )
        registered.append(backend.register(req))
    return registered
