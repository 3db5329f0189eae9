"""Save a trained adapter as the canonical ComfyUI-loadable LoRA (``diffusion_model.<wan module>.lora_A/B``
+ ``.alpha``) with kohya-compatible ``ss_*`` and ``modelspec.*`` metadata and the dataset hash."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from registry.domain.wan import LoraPart, canonical_key, parse_key
from trainer.config import TrainConfig

__all__ = ["adapter_state", "save_canonical_lora", "training_metadata"]


def adapter_state(transformer: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers names (``blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(transformer).items()
    }


def training_metadata(
    config: TrainConfig, *, samples: int, dataset_hash: str | None, step: int, total_steps: int, started: datetime
) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    meta = {
        "ss_network_module": "wanlora.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": str(config.alpha),
        "ss_learning_rate": str(config.learning_rate),
        "ss_num_epochs": str(config.epochs),
        "ss_max_train_steps": str(total_steps),
        "ss_batch_size_per_device": str(config.batch_size),
        "ss_gradient_accumulation_steps": str(config.gradient_accumulation_steps),
        "ss_optimizer": config.optimizer,
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_scheduler_num_cycles": str(config.lr_cycles),
        "ss_lr_warmup_steps": str(int(total_steps * config.warmup_ratio)),
        "ss_max_grad_norm": str(config.max_grad_norm),
        "ss_mixed_precision": config.mixed_precision,
        "ss_gradient_checkpointing": str(config.gradient_checkpointing),
        "ss_seed": str(config.seed),
        "ss_num_train_images": str(samples),
        "ss_resolution": f"({config.resolution}, {config.resolution})",
        "ss_timestep_sampling": config.timestep_sampling,
        "ss_discrete_flow_shift": str(config.shift),
        "ss_training_started_at": str(started.timestamp()),
        "ss_training_finished_at": str(now.timestamp()),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{config.base_model}/lora",
        "modelspec.implementation": "wanlora",
        "modelspec.title": f"{config.lora} step {step}",
        "modelspec.date": now.date().isoformat(),
        "wanlora.step": str(step),
        "wanlora.goal": config.goal,
    }
    if dataset_hash:
        meta["wanlora.dataset_hash"] = dataset_hash
    return meta


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def save_canonical_lora(
    state: dict[str, torch.Tensor], alpha: float, path: Path, metadata: dict[str, str], dtype: str = "bf16"
) -> Path:
    """Rename diffusers/peft keys to the original Wan names, add one alpha per module, save atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        _, module, part = parse_key(f"transformer.{key}")
        tensors[canonical_key(module, part)] = value.to(DTYPES[dtype])
        tensors[canonical_key(module, LoraPart.ALPHA)] = torch.tensor(float(alpha), dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
