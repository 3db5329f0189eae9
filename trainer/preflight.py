"""Memory preflight, before anything is loaded: estimate peak GPU memory, time and cost for a config,
and refuse with the guide's remedies, in the guide's order, when it will not fit.

The estimate adds up: the frozen DiT weights kept on the GPU (less the blocks offloaded to the CPU),
the LoRA parameters with their fp32 master copy, gradients and AdamW states, the activations of the
sequence (all blocks without gradient checkpointing, one block plus each block's input with it), and a
fixed allowance for the CUDA context and the allocator. It is deliberately simple and printed term by
term, so a user can see which remedy moves which number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.domain.wan import BASE_MODELS, BaseModel
from trainer.config import TrainConfig

__all__ = ["Estimate", "estimate", "remedies"]

GB = 1024**3


def dit_params(model: BaseModel) -> float:
    """Parameters of one DiT (one expert): per block self- and cross-attention (8·d²) and the FFN (2·d·f),
    plus the embedders; 14.1B, 4.9B and 1.4B for the 14B, 5B and 1.3B models."""
    d = model.dim
    blocks = model.num_layers * (8 * d * d + 2 * d * model.ffn_dim)
    embedders = model.text_dim * d + d * d + model.freq_dim * d + 7 * d * d
    return float(blocks + embedders)


ATTENTION_TARGETS = 4  # q, k, v, o in self- and cross-attention: 8 linear layers per block
CONTEXT_GB = 1.5  # CUDA context, cuBLAS workspaces, allocator slack
TEXT_TOKENS = 512


def tokens(resolution: int, frames: int) -> int:
    """Sequence length of the DiT: VAE 8× spatial and 4× temporal compression, then 2×2 patches."""
    latent_frames = (frames - 1) // 4 + 1
    side = resolution // 16
    return latent_frames * side * side


@dataclass
class Estimate:
    weights_gb: float
    lora_gb: float
    activations_gb: float
    context_gb: float
    sequence: int
    step_flops: float
    steps: int
    hours: float
    cost_usd: float
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gb(self) -> float:
        return self.weights_gb + self.lora_gb + self.activations_gb + self.context_gb


def _lora_params(model: BaseModel, rank: int, ffn: bool) -> int:
    d, f = model.dim, model.ffn_dim
    per_block = 2 * ATTENTION_TARGETS * rank * (d + d)
    if ffn:
        per_block += rank * (d + f) + rank * (f + d)
    return per_block * model.num_layers


def step_flops(model: BaseModel, sequence: int, batch: int) -> float:
    """FLOPs of one training step of a LoRA run: the frozen linear layers forward and their activation
    gradients backward (4·N·T; no weight gradients), plus self-attention forward and backward (12·L·T²·d)."""
    n = dit_params(model)
    linear = 4 * n * sequence
    attention = (
        12 * model.num_layers * sequence**2 * model.dim + 12 * model.num_layers * sequence * TEXT_TOKENS * model.dim
    )
    return batch * (linear + attention)


def estimate(config: TrainConfig, samples: int) -> Estimate:
    cfg = config.resolved(samples)
    model = BASE_MODELS[cfg.base_model]
    weight_bytes = 2 if cfg.mixed_precision != "no" else 4
    resident = 1 - min(cfg.block_offload, model.num_layers) / model.num_layers
    weights = dit_params(model) * weight_bytes * resident
    lora = _lora_params(model, cfg.rank or 64, cfg.train_ffn) * (4 + 4 + 8 + 2)  # master, grad, AdamW m+v, copy
    seq = tokens(cfg.resolution, cfg.frames)
    act_bytes = 2 if cfg.mixed_precision != "no" else 4
    per_block = cfg.batch_size * seq * model.dim * act_bytes * 34  # one block's saved tensors
    if cfg.gradient_checkpointing:
        activations = per_block + cfg.batch_size * seq * model.dim * act_bytes * model.num_layers
    else:
        activations = per_block * model.num_layers
    steps_per_epoch = max(1, samples // (cfg.batch_size * cfg.gradient_accumulation_steps))
    steps = cfg.max_steps or steps_per_epoch * (cfg.epochs or 1)
    flops = step_flops(model, seq, cfg.batch_size) * cfg.gradient_accumulation_steps
    hours = steps * flops / (cfg.gpu_tflops * 1e12 * cfg.expected_mfu) / 3600
    experts = 2 if model.experts else 1
    notes = []
    if model.experts:
        notes.append("A14B: two experts are trained one after the other; time and cost count both")
    return Estimate(
        weights_gb=weights / GB,
        lora_gb=lora / GB,
        activations_gb=activations / GB,
        context_gb=CONTEXT_GB,
        sequence=seq,
        step_flops=flops,
        steps=steps * experts,
        hours=hours * experts,
        cost_usd=hours * experts * cfg.gpu_hourly_usd,
        notes=notes,
    )


def remedies(config: TrainConfig, samples: int, budget_gb: float) -> list[tuple[str, float]]:
    """The guide's remedies for running out of memory, in its order, each with the peak it would give
    (applied one after another until the run fits)."""
    steps: list[tuple[str, dict[str, object]]] = []
    cfg = config.resolved(samples)
    if not cfg.gradient_checkpointing:
        steps.append(("enable gradient checkpointing", {"gradient_checkpointing": True}))
    if cfg.mixed_precision == "no":
        steps.append(("enable mixed precision (bf16/fp16)", {"mixed_precision": "bf16"}))
    if cfg.batch_size > 1:
        steps.append(("set batch size 1", {"batch_size": 1}))
    if cfg.resolution > 512:
        steps.append((f"lower the resolution {cfg.resolution} → 512", {"resolution": 512}))
    if (cfg.rank or 64) > 32:
        lower = max(32, (cfg.rank or 64) * 2 // 3 // 16 * 16)
        steps.append((f"lower the rank {cfg.rank} → {lower}", {"rank": lower, "alpha": float(lower)}))
    if cfg.gradient_accumulation_steps > 1:
        steps.append(("use fewer gradient accumulation steps", {"gradient_accumulation_steps": 1}))
    out: list[tuple[str, float]] = []
    current = cfg
    for label, change in steps:
        current = current.model_copy(update=change)
        peak = estimate(current, samples).peak_gb
        out.append((label, peak))
        if peak <= budget_gb:
            break
    return out
