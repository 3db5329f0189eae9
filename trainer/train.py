"""The training loop: flow matching on the WAN DiT with a peft LoRA, one adapter per expert.

Reads top to bottom: check the dataset, resolve the preset, load the models, cache latents and text
embeddings (then drop the encoders), add the adapters, and run optimizer steps. The target is
``noise − latents`` at ``sigma`` drawn logit-normal (or sigmoid, or uniform) and shifted; for the A14B
models the high-noise expert only sees ``sigma ≥ boundary`` and the low-noise expert the rest, in the
same step, so every checkpoint holds a matching pair. Checkpoints describe themselves (adapters,
optimizer, scheduler, RNG, step) and resume exactly.

Several GPUs: run under ``accelerate launch --multi_gpu --num_processes N -m cli train …``. Each process
takes its share of every global batch (``batch_size`` per process), gradients are averaged across
processes (DDP), and the timestep and noise draws come from one generator that every process advances
alike, so N processes at batch b train the same model as one process at batch N·b, and a checkpoint
resumes under any process count. Only the main process writes checkpoints, plots and the registry.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from registry.domain.errors import InvalidInput
from registry.domain.wan import BASE_MODELS, EXPERT_BOUNDARY
from trainer.cache import CachedSample, build_cache
from trainer.config import TrainConfig
from trainer.dataset import check_dataset
from trainer.diagnostics import diagnose, plot_losses
from trainer.export import adapter_state, save_canonical_lora, training_metadata
from trainer.models import Models, load_models, pad_text, place
from trainer.run import Checkpoint, RunResult

__all__ = ["Checkpoint", "RunResult", "train"]  # the results are defined in trainer.run

Progress = Callable[[int, int, float, float], None]  # step, total, loss, lr
BUCKETS = (0.125, 0.375, 0.625, 0.875)  # validation sigmas: one per quarter of the noise range


def _sigmas(config: TrainConfig, n: int, generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    if config.timestep_sampling == "uniform":
        u = torch.rand(n, generator=generator)
    else:
        u = torch.sigmoid(torch.randn(n, generator=generator))
    if config.timestep_sampling != "sigmoid":
        u = config.shift * u / (1 + (config.shift - 1) * u)
    return low + (high - low) * u


def _batch(samples: list[CachedSample], indices: list[int], text_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (B, C, F, H, W) and prompts zero-padded to ``text_length``, as the WAN pipelines pad them."""
    if len(indices) == 1:  # the common batch of one: a view, no copy
        latents = samples[indices[0]].latents[None]
    else:
        latents = torch.stack([samples[i].latents for i in indices])
    return latents, pad_text([samples[i].text for i in indices], text_length)


def _order(n: int, epoch: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def _flow_loss(
    transformer: Any, latents: torch.Tensor, text: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    s = sigma.view(-1, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    pred = transformer(hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=text).sample
    return F.mse_loss(pred.float(), (noise - latents).float())


@torch.no_grad()
def _validate(
    transformers: dict[str, Any],
    ranges: dict[str, tuple[float, float]],
    val: list[CachedSample],
    seed: int,
    text_length: int,
    device: torch.device,
    autocast: Any = nullcontext,
) -> dict[str, float]:
    """Loss per timestep bucket on the held-out samples, with fixed noise (comparable across steps)."""
    if not val:
        return {}
    out: dict[str, float] = {}
    for center in BUCKETS:
        name = next(n for n, (lo, hi) in ranges.items() if lo <= center <= hi)
        model = transformers[name].eval()
        generator = torch.Generator().manual_seed(seed + 7919)
        losses = []
        for sample in val:
            latents, text = _batch([sample], [0], text_length)
            noise = torch.randn(latents.shape, generator=generator)
            with autocast():
                loss = _flow_loss(
                    model, latents.to(device), text.to(device), torch.tensor([center], device=device), noise.to(device)
                )
            losses.append(float(loss))
        out[f"{center:.3f}"] = sum(losses) / len(losses)
        model.train()
    return out


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int) -> Any:
    from diffusers.optimization import get_scheduler

    warmup = int(total * config.warmup_ratio)
    if config.lr_scheduler == "cosine_with_restarts":
        return get_scheduler(
            "cosine_with_restarts", optimizer, num_warmup_steps=warmup, num_training_steps=total,
            num_cycles=config.lr_cycles,
        )  # fmt: skip
    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer in ("auto", "adamw8bit"):
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=config.learning_rate or 1e-4)  # type: ignore[no-any-return,unused-ignore]
        except ImportError:
            if config.optimizer == "adamw8bit":
                raise InvalidInput("optimizer adamw8bit needs bitsandbytes", hint="pip install bitsandbytes") from None
    return torch.optim.AdamW(params, lr=config.learning_rate or 1e-4)


def _add_adapter(transformer: Any, config: TrainConfig) -> list[torch.nn.Parameter]:
    from peft import LoraConfig

    targets = ["to_q", "to_k", "to_v", "to_out.0"] + (["ffn.net.0.proj", "ffn.net.2"] if config.train_ffn else [])
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(
            r=config.rank or 64,
            lora_alpha=config.alpha or config.rank,  # type: ignore[arg-type]  # peft takes a float alpha too
            target_modules=targets,
            init_lora_weights=True,
        )
    )
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return [p for p in transformer.parameters() if p.requires_grad]


def _save(
    run: RunResult,
    step: int,
    state: dict[str, Any],
    transformers: dict[str, Any],
    val: dict[str, float],
    started: datetime,
) -> Checkpoint:
    cfg = run.config
    folder = run.run_dir / "checkpoints" / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    meta = training_metadata(
        cfg, samples=len(run.dataset.samples), dataset_hash=run.dataset.dataset_hash, step=step,
        total_steps=run.total_steps, started=started,
    )  # fmt: skip
    files = {
        name: save_canonical_lora(
            adapter_state(model), cfg.alpha or 1.0, folder / f"{name}.safetensors", meta, cfg.save_dtype
        )
        for name, model in transformers.items()
    }
    torch.save(state, folder / "state.pt")
    loss = sum(run.losses[-10:]) / max(1, len(run.losses[-10:]))
    checkpoint = Checkpoint(step, folder, files, loss, val)
    (folder / "checkpoint.json").write_text(json.dumps({"step": step, "train_loss": loss, "val_loss": val}))
    return checkpoint


def _accelerator(config: TrainConfig) -> Any:
    """One process or several (``accelerate launch``); mixed precision on GPUs, fp32 on the CPU."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    return Accelerator(cpu=not cuda, mixed_precision=config.mixed_precision if cuda else "no")


def train(
    config: TrainConfig,
    *,
    run_dir: Path | None = None,
    resume: Path | None = None,
    stop_after: int | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Train and checkpoint. ``resume`` continues a checkpoint folder exactly; ``stop_after`` ends the
    loop early at that step (used to interrupt a run on purpose)."""
    report = check_dataset(config.dataset)
    if not report.ok:
        raise InvalidInput(
            f"the dataset has {len(report.problems)} problem(s): " + "; ".join(report.problems[:5]),
            hint="fix them (`wanlora dataset check`) before training",
        )
    cfg = config.resolved(len(report.samples))
    accelerator = _accelerator(cfg)
    device, world, rank, main = (
        accelerator.device, accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    )  # fmt: skip
    run_dir = run_dir or cfg.output / f"{cfg.lora}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if world > 1:  # the processes started at slightly different times: use the main one's folder
        from accelerate.utils import broadcast_object_list

        run_dir = Path(broadcast_object_list([str(run_dir)])[0])
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    torch.manual_seed(cfg.seed)
    models: Models = load_models(cfg)
    frames = cfg.frames if report.kind == "videos" else 1
    with accelerator.main_process_first():  # the main process encodes; the others read its cache
        cached = build_cache(report.samples, models, cfg.output / "cache", cfg.resolution, frames, device)
    order = _order(len(cached), -1, cfg.seed)
    n_val = int(len(cached) * cfg.validation_fraction) if len(cached) >= 5 else 0
    val = [cached[i] for i in order[:n_val]]
    train_set = [cached[i] for i in order[n_val:]]
    batch = cfg.batch_size
    global_batch = batch * world
    mine = slice(rank * batch, (rank + 1) * batch)  # this process's share of each global batch
    per_step = global_batch * cfg.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(len(train_set) / per_step))
    total = cfg.max_steps or steps_per_epoch * (cfg.epochs or 1)
    run = RunResult(config=cfg, run_dir=run_dir, dataset=report, total_steps=total, processes=world, is_main=main)

    boundary = EXPERT_BOUNDARY.get(cfg.base_model, 0.0)
    ranges = {"single": (0.0, 1.0)} if not BASE_MODELS[cfg.base_model].experts else {
        "high_noise": (boundary, 1.0), "low_noise": (0.0, boundary),
    }  # fmt: skip
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    transformers = models.transformers
    for model in transformers.values():  # frozen base weights in the training precision
        place(model, device, weight_dtype)
    params = {name: _add_adapter(model, cfg) for name, model in transformers.items()}
    if weight_dtype != torch.float32:  # the adapters themselves train in fp32
        from diffusers.training_utils import cast_training_params

        cast_training_params(list(transformers.values()), dtype=torch.float32)
    optimizers = {name: _optimizer(p, cfg) for name, p in params.items()}
    schedulers = {name: _scheduler(optimizers[name], cfg, total) for name in transformers}
    wrapped: dict[str, Any] = {}
    for name in transformers:  # DDP across processes, autocast for mixed precision
        wrapped[name], optimizers[name] = accelerator.prepare(transformers[name], optimizers[name])
    generator = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume is not None:
        from peft.utils import set_peft_model_state_dict

        state = torch.load(Path(resume) / "state.pt", weights_only=True)
        for name, model in transformers.items():
            set_peft_model_state_dict(model, state["adapters"][name])
            optimizers[name].load_state_dict(state["optimizers"][name])
            schedulers[name].load_state_dict(state["schedulers"][name])
        generator.set_state(state["generator"])
        step, run.losses, run.lrs = state["step"], list(state["losses"]), list(state["lrs"])
        run.checkpoints = [c for c in _existing_checkpoints(run_dir) if c.step <= step] if main else []

    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    end = min(total, stop_after) if stop_after else total
    orders: dict[int, list[int]] = {}
    accumulate = cfg.gradient_accumulation_steps
    while step < end:
        epoch, position = divmod(step, steps_per_epoch)
        if epoch not in orders:  # one permutation per epoch, derived from the seed: resumable
            orders = {epoch: _order(len(train_set), epoch, cfg.seed)}
        epoch_order = orders[epoch]
        step_loss = torch.zeros((), device=device)
        for name, model in wrapped.items():
            low, high = ranges[name]
            for micro in range(accumulate):
                start = (position * per_step + micro * global_batch) % len(train_set)
                indices = [epoch_order[(start + k) % len(train_set)] for k in range(global_batch)]
                # Every process draws the whole global batch's sigmas and noise and keeps its share.
                sigma = _sigmas(cfg, global_batch, generator, low, high)[mine]
                latents, text = _batch(train_set, indices[mine], models.text_length)
                noise = torch.randn((global_batch, *latents.shape[1:]), generator=generator)[mine]
                last = micro == accumulate - 1  # gradients are averaged across processes once per step
                with nullcontext() if last else accelerator.no_sync(model):
                    loss = (
                        _flow_loss(model, latents.to(device), text.to(device), sigma.to(device), noise.to(device))
                        / accumulate
                    )
                    accelerator.backward(loss)
                step_loss += loss.detach() / len(wrapped)
            accelerator.unscale_gradients(optimizers[name])  # fp16 only; then clip the true gradients
            torch.nn.utils.clip_grad_norm_(params[name], cfg.max_grad_norm)
            optimizers[name].step()
            schedulers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
        step += 1
        loss_value = float(accelerator.reduce(step_loss, "mean")) if world > 1 else float(step_loss)
        lr = schedulers[next(iter(schedulers))].get_last_lr()[0]
        run.losses.append(loss_value)
        run.lrs.append(lr)
        if progress and main:
            progress(step, total, loss_value, lr)
        if step % cfg.checkpoint_every == 0 or step == total:
            if main:
                state = {
                    "step": step,
                    "adapters": {n: adapter_state(m) for n, m in transformers.items()},
                    "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                    "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
                    "generator": generator.get_state(),
                    "losses": run.losses,
                    "lrs": run.lrs,
                }
                val_loss = _validate(
                    transformers, ranges, val, cfg.seed, models.text_length, device, accelerator.autocast
                )
                run.checkpoints.append(_save(run, step, state, transformers, val_loss, started))
            accelerator.wait_for_everyone()
    run.seconds = time.perf_counter() - clock
    if main:
        run.diagnostics = diagnose(run)
        run.plot = plot_losses(run, run_dir / "loss.png")
    accelerator.wait_for_everyone()
    return run


def _existing_checkpoints(run_dir: Path) -> list[Checkpoint]:
    out = []
    for folder in sorted((run_dir / "checkpoints").glob("step-*")):
        meta = json.loads((folder / "checkpoint.json").read_text())
        files = {p.stem: p for p in folder.glob("*.safetensors")}
        out.append(Checkpoint(meta["step"], folder, files, meta["train_loss"], meta["val_loss"]))
    return out
