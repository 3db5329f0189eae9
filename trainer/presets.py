"""Training presets from the practice guide: by goal, adjusted to the dataset's size, and the A/B sweep.

| goal      | rank | lr     | epochs |
|-----------|------|--------|--------|
| character | 64   | 1.5e-4 | 15     |
| style     | 96   | 1e-4   | 20     |
| motion    | 128  | 8e-5   | 25     |
| domain    | 64   | 1e-4   | 12     |

Rank and epochs are then brought into the guide's ranges for the dataset size (100–200 samples: rank
32–48, epochs 15–20; 200–400: 48–64, 12–18; 400–800: 64–96, 10–15; 800+: 96–128, 8–12); alpha = rank.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GOALS", "SWEEP", "Preset", "preset_for", "size_ranges"]


@dataclass(frozen=True)
class Preset:
    goal: str
    rank: int
    learning_rate: float
    epochs: int
    notes: tuple[str, ...] = ()

    @property
    def alpha(self) -> float:
        return float(self.rank)


GOALS: dict[str, Preset] = {
    "character": Preset("character", 64, 1.5e-4, 15),
    "style": Preset("style", 96, 1e-4, 20),
    "motion": Preset("motion", 128, 8e-5, 25),
    "domain": Preset("domain", 64, 1e-4, 12),
}

# (lowest sample count, (rank range), (epoch range)), from the guide's tables
_BY_SIZE = [
    (800, (96, 128), (8, 12)),
    (400, (64, 96), (10, 15)),
    (200, (48, 64), (12, 18)),
    (100, (32, 48), (15, 20)),
]

# The guide's A/B trio: conservative, standard, aggressive.
SWEEP: dict[str, tuple[float, int, int]] = {
    "conservative": (8e-5, 64, 12),
    "standard": (1.2e-4, 64, 15),
    "aggressive": (1.5e-4, 96, 18),
}

MINIMUM_SAMPLES = 100
# The presets' rates are the guide's, for the real 5B/14B models. The tiny random models (--tiny) are a few
# thousand parameters wide and learn nothing visible at them in a few steps: they train at this rate
# unless --lr says otherwise, so that the tiny recipe makes a LoRA that passes the effect check.
TINY_LEARNING_RATE = 2e-3


def size_ranges(samples: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The guide's (rank range, epoch range) for a dataset of this many samples."""
    for lowest, ranks, epochs in _BY_SIZE:
        if samples >= lowest:
            return ranks, epochs
    return _BY_SIZE[-1][1], _BY_SIZE[-1][2]


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def preset_for(goal: str, samples: int) -> Preset:
    """The goal's preset with rank and epochs brought into the ranges the guide gives for ``samples``."""
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal!r}; choose one of {', '.join(GOALS)}")
    base = GOALS[goal]
    ranks, epochs = size_ranges(samples)
    rank, n_epochs = _clamp(base.rank, ranks), _clamp(base.epochs, epochs)
    notes = []
    if rank != base.rank:
        notes.append(f"rank {base.rank} → {rank} for {samples} samples (guide: {ranks[0]}–{ranks[1]})")
    if n_epochs != base.epochs:
        notes.append(f"epochs {base.epochs} → {n_epochs} for {samples} samples (guide: {epochs[0]}–{epochs[1]})")
    if samples < MINIMUM_SAMPLES:
        notes.append(
            f"only {samples} samples: the guide finds LoRA training needs at least 100–150; expect weak results"
        )
    return Preset(goal, rank, base.learning_rate, n_epochs, tuple(notes))
