"""The training configuration: one validated model, from flags or a TOML file (every flag can come
from one), completed from the guide's presets where the user left a value open."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.domain.errors import InvalidInput
from registry.domain.wan import BASE_MODELS
from trainer.presets import GOALS, TINY_LEARNING_RATE, preset_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["TrainConfig", "load_config"]


class TrainConfig(BaseModel):
    """Everything a training run needs. Unset rank, alpha, learning rate and epochs come from the preset
    for ``goal`` and the dataset size (see ``resolved``)."""

    model_config = ConfigDict(extra="forbid")

    dataset: Path = Field(description="Dataset folder: images/ or videos/ plus captions/.")
    output: Path = Field(default=Path("wanlora-runs"), description="Where runs, caches and checkpoints go.")
    project: str = Field(default="default", description="Registry project.")
    lora: str = Field(description="Registry LoRA name the candidates are registered under.")
    goal: Literal["character", "style", "motion", "domain"] = Field(description="Training goal (preset).")
    base_model: str = Field(default="wan2.2-ti2v-5b", description="Base model the LoRA is for.")
    model_path: Path | None = Field(default=None, description="Local weights: a diffusers folder or a single file.")
    tiny: bool = Field(default=False, description="Random tiny models built in-process (tests, demo, CPU).")
    allow_download: bool = Field(default=False, description="Allow fetching weights from a hub (off by default).")

    resolution: int = Field(default=512, ge=16, le=2048, description="Square training resolution (pixels).")
    frames: int = Field(default=1, ge=1, le=257, description="Frames per sample: 1 for images, 4n+1 for clips.")
    batch_size: int = Field(default=1, ge=1, le=64)
    gradient_accumulation_steps: int = Field(default=2, ge=1, le=64, description="Guide: 2–4 at batch 1.")

    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank; default from the preset.")
    alpha: float | None = Field(default=None, gt=0, description="LoRA alpha; default = rank.")
    learning_rate: float | None = Field(default=None, gt=0, lt=1, description="Peak learning rate.")
    epochs: int | None = Field(default=None, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    optimizer: Literal["auto", "adamw", "adamw8bit"] = Field(
        default="auto", description="auto: AdamW8bit when bitsandbytes is installed, else AdamW."
    )
    lr_scheduler: Literal["cosine_with_restarts", "cosine", "constant"] = "cosine_with_restarts"
    lr_cycles: int = Field(default=3, ge=1, le=10, description="Cosine cycles: 3 = two restarts.")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Warm-up as a share of the steps.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping.")
    gradient_checkpointing: bool = True
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    train_ffn: bool = Field(default=False, description="Also put LoRA on the FFN, not only attention q, k, v, o.")
    block_offload: int = Field(default=0, ge=0, description="Transformer blocks kept on the CPU.")

    timestep_sampling: Literal["logit_normal", "sigmoid", "uniform"] = "logit_normal"
    shift: float = Field(default=3.0, gt=0, description="Flow-matching timestep shift.")
    validation_fraction: float = Field(default=0.1, ge=0, lt=0.5, description="Held-out share for validation loss.")
    checkpoint_every: int = Field(default=100, ge=1, description="Save a checkpoint every N optimizer steps.")
    register_from: float = Field(
        default=0.5, ge=0, le=1, description="Register checkpoints from this share of training on."
    )
    seed: int = 42
    save_dtype: Literal["bf16", "fp16", "fp32"] = Field(default="bf16", description="dtype of the saved LoRA.")
    sweep: bool = Field(default=False, description="Train the guide's conservative/standard/aggressive trio.")

    gpu_memory_gb: float | None = Field(default=None, gt=0, description="GPU memory for the preflight.")
    gpu_tflops: float = Field(default=165.0, gt=0, description="GPU bf16 TFLOP/s for the time estimate.")
    gpu_hourly_usd: float = Field(default=0.69, ge=0, description="Price per GPU hour for the cost estimate.")
    expected_mfu: float = Field(default=0.35, gt=0, le=1, description="Assumed utilisation for the estimate.")
    force: bool = Field(default=False, description="Train even when the preflight says it will not fit.")

    @field_validator("frames")
    @classmethod
    def _four_n_plus_one(cls, frames: int) -> int:
        if frames != 1 and (frames - 1) % 4:
            raise ValueError(f"frames must be 1 or 4n+1 (WAN's VAE needs it), e.g. 17, 21 or 25, not {frames}")
        return frames

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, resolution: int) -> int:
        if resolution % 16:
            raise ValueError(f"resolution must be a multiple of 16 (VAE 8× and patch 2×), not {resolution}")
        return resolution

    @field_validator("base_model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in BASE_MODELS:
            raise ValueError(f"unknown base model {name!r}; choose one of {', '.join(BASE_MODELS)}")
        return name

    @model_validator(mode="after")
    def _weights(self) -> TrainConfig:
        if not self.tiny and self.model_path is None:
            raise ValueError("model_path is required (local weights), or tiny = true for the in-process tiny model")
        return self

    def resolved(self, samples: int) -> TrainConfig:
        """A copy with the preset's values filled in where this config leaves them open."""
        preset = preset_for(self.goal, samples)
        rank = self.rank or preset.rank
        return self.model_copy(
            update={
                "rank": rank,
                "alpha": self.alpha or float(rank),
                "learning_rate": self.learning_rate or (TINY_LEARNING_RATE if self.tiny else preset.learning_rate),
                "epochs": self.epochs or preset.epochs,
            }
        )

    def sweep_configs(self) -> dict[str, TrainConfig]:
        from trainer.presets import SWEEP

        return {
            name: self.model_copy(update={"learning_rate": lr, "rank": rank, "alpha": float(rank), "epochs": epochs})
            for name, (lr, rank, epochs) in SWEEP.items()
        }


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """A config from a TOML file (optional) with flags on top; errors name the fields and the fix."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InvalidInput(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid training config: {problems}", hint=f"goals: {', '.join(GOALS)}") from None
