"""The guide's failure patterns, detected on the loss curves, each with its remedies; and the loss plot.

- loss not decreasing: learning rate too low, frozen layers, dataset too small, empty captions;
- a spike without recovery: learning rate too high or exploding gradients (halve the lr, clip at 1.0);
- overfitting: training loss under 0.01 while the validation loss rises (lower rank, fewer epochs,
  more data).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from trainer.run import RunResult

__all__ = ["Finding", "diagnose", "plot_losses"]


@dataclass(frozen=True)
class Finding:
    pattern: str
    detail: str
    remedies: tuple[str, ...]

    def text(self) -> str:
        return f"{self.pattern}: {self.detail}. Remedies: " + "; ".join(self.remedies)


def _not_decreasing(losses: list[float], samples: int) -> Finding | None:
    if len(losses) < 20:
        return None
    tenth = max(2, len(losses) // 10)
    first, last = statistics.mean(losses[:tenth]), statistics.mean(losses[-tenth:])
    if last < first * 0.97:
        return None
    remedies = ["raise the learning rate (e.g. 5e-5 → 1e-4 or 2e-4)", "check that the LoRA layers are trainable"]
    if samples < 100:
        remedies.append(f"add data: {samples} samples is under the 100–150 LoRA training needs")
    remedies.append("check that captions are plain text and not empty")
    return Finding("loss not decreasing", f"mean loss {first:.4f} at the start, {last:.4f} at the end", tuple(remedies))


def _spike(losses: list[float]) -> Finding | None:
    if len(losses) < 20:
        return None
    window = max(5, len(losses) // 20)
    for i in range(window, len(losses) - window):
        before = statistics.median(losses[i - window : i])
        if losses[i] > 3 * before and statistics.mean(losses[-window:]) > 2 * before:
            return Finding(
                "loss spike without recovery",
                f"loss jumped from ~{before:.4f} to {losses[i]:.4f} at step {i + 1} and stayed high",
                ("halve the learning rate (2e-4 → 1e-4)", "clip gradients at 1.0", "reduce the batch size",
                 "look for a corrupt training sample"),
            )  # fmt: skip
    return None


def _overfitting(losses: list[float], val_losses: list[float]) -> Finding | None:
    if len(val_losses) < 3 or not losses:
        return None
    recent = statistics.mean(losses[-max(1, len(losses) // 10) :])
    best = min(val_losses)
    if recent < 0.01 and val_losses[-1] > best * 1.1:
        return Finding(
            "overfitting",
            f"training loss {recent:.4f} while validation loss rose from {best:.4f} to {val_losses[-1]:.4f}",
            ("lower the rank (128 → 64, 64 → 32)", "train fewer epochs (use an earlier checkpoint)",
             "add more, more varied data", "use a lower LoRA strength (0.6–0.7)"),
        )  # fmt: skip
    return None


def diagnose(run: RunResult) -> list[Finding]:
    val = [statistics.mean(c.val_loss.values()) for c in run.checkpoints if c.val_loss]
    found = [
        _not_decreasing(run.losses, len(run.dataset.samples)),
        _spike(run.losses),
        _overfitting(run.losses, val),
    ]
    return [f for f in found if f is not None]


def plot_losses(run: RunResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = list(range(1, len(run.losses) + 1))
    ax.plot(steps, run.losses, color="#9ab", linewidth=0.8, label="training loss")
    if len(run.losses) >= 10:
        k = max(2, len(run.losses) // 25)
        smooth = [statistics.mean(run.losses[max(0, i - k) : i + 1]) for i in range(len(run.losses))]
        ax.plot(steps, smooth, color="#1f5f8b", linewidth=1.6, label="training loss (smoothed)")
    val = [(c.step, statistics.mean(c.val_loss.values())) for c in run.checkpoints if c.val_loss]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="#c0392b", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(f"{run.config.lora}: rank {run.config.rank}, lr {run.config.learning_rate:g}")
    lr_axis = ax.twinx()
    lr_axis.plot(steps, run.lrs, color="#888", linestyle=":", linewidth=1, label="learning rate")
    lr_axis.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()[0] + lr_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
