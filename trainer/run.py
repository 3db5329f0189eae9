"""What a training run produces: its checkpoints and its record (losses, learning rates, diagnostics,
the loss plot). Shared by the loop (``trainer.train``), the diagnostics and the registration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.dataset import DatasetReport

__all__ = ["Checkpoint", "RunResult"]


@dataclass
class Checkpoint:
    step: int
    path: Path
    files: dict[str, Path]
    train_loss: float
    val_loss: dict[str, float]


@dataclass
class RunResult:
    config: TrainConfig
    run_dir: Path
    dataset: DatasetReport
    total_steps: int
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    diagnostics: list[Any] = field(default_factory=list)
    plot: Path | None = None
    seconds: float = 0.0
    processes: int = 1
    is_main: bool = True  # False in the other processes of a multi-process run: they write nothing
