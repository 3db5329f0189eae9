"""Trainer benchmarks (issue 4), on the tiny WAN model on CPU; ratios against references run in the
same process on the same model and data.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 60]

- trainer steps/s against a bare diffusers + peft loop (same model, adapter, optimizer, cached latents,
  batch and accumulation; target ≥ 0.9×);
- cached latents and text embeddings against encoding every step with the VAE and the text encoder;
- peak memory (RSS) of the process;
- FLOPs per step and model-FLOPs utilisation: the 14B reference (480×832×81) is computed here.

The MFU figure needs a GPU:

    .venv/bin/python benchmarks/bench_trainer.py --mfu [--mfu-model wan2.1-t2v-14b] [--mfu-size 480x832x81]

builds the DiT at full size with random weights (bf16, on the GPU; no download), puts the LoRA on it as
the trainer does (rank 64 on q, k, v, o; gradient checkpointing; fp32 adapters; bf16 autocast; AdamW),
times optimizer steps on one latent of that size and divides the model FLOPs per step (the same count as
the preflight's) by the time and by the GPU's dense bf16 peak (known for H100/H200/A100, else
`--peak-tflops`). `--mfu --mfu-model wan-tiny --mfu-size 32x32x5 --peak-tflops 1` runs the same code on
a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from registry.domain.wan import BASE_MODELS  # noqa: E402
from trainer.cache import build_cache, load_pixels  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.dataset import check_dataset  # noqa: E402
from trainer.models import TEXT_LENGTH, build_tiny_transformer, load_models, pad_text  # noqa: E402
from trainer.preflight import step_flops  # noqa: E402
from trainer.synthdata import make_image_dataset  # noqa: E402
from trainer.train import train  # noqa: E402


def bare_loop(config, samples, steps: int, encode=None) -> float:  # type: ignore[no-untyped-def]
    """The reference: the plainest diffusers + peft loop on the same cached samples."""
    from peft import LoraConfig

    model = build_tiny_transformer(config.seed + 1)
    model.requires_grad_(False)
    model.add_adapter(
        LoraConfig(r=config.rank, lora_alpha=config.rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    i = 0
    for _ in range(steps):
        for _ in range(config.gradient_accumulation_steps):
            sample = samples[i % len(samples)]
            i += 1
            latents, text = encode(sample) if encode else (sample.latents[None], pad_text([sample.text], TEXT_LENGTH))
            s = torch.sigmoid(torch.randn(1, generator=g))
            noise = torch.randn(latents.shape, generator=g)
            noisy = (1 - s.view(-1, 1, 1, 1, 1)) * latents + s.view(-1, 1, 1, 1, 1) * noise
            pred = model(hidden_states=noisy, timestep=s * 1000, encoder_hidden_states=text).sample
            (F.mse_loss(pred, noise - latents) / config.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - start)


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense


def build_transformer(spec, dtype: torch.dtype, device: torch.device):  # type: ignore[no-untyped-def]
    """The WAN DiT of ``spec`` with random weights, created in place on ``device`` in ``dtype``."""
    from diffusers import WanTransformer3DModel

    if spec.dim < 128:  # the tiny layouts
        heads, head_dim, extra = 2, spec.dim // 2, {"rope_max_seq_len": 64}
    else:  # WAN: 128-dimensional heads
        heads, head_dim = spec.dim // 128, 128
        extra = {"cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                in_channels=spec.out_channels, out_channels=spec.out_channels, text_dim=spec.text_dim,
                freq_dim=spec.freq_dim, ffn_dim=spec.ffn_dim, num_layers=spec.num_layers, **extra,
            )  # fmt: skip
    finally:
        torch.set_default_dtype(previous)


def mfu(model_name: str, size: str, steps: int, peak_tflops: float | None, rank: int) -> dict:
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from trainer.models import TEXT_LENGTH, WAN_TEXT_LENGTH

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    spec = BASE_MODELS[model_name]
    height, width, frames = (int(x) for x in size.lower().split("x"))
    if peak_tflops is None:
        name = torch.cuda.get_device_name() if cuda else "cpu"
        peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak_tflops is None:
            raise SystemExit(f"unknown peak bf16 TFLOP/s for {name}: pass --peak-tflops")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_transformer(spec, dtype, device)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    cast_training_params(model, dtype=torch.float32)
    model.enable_gradient_checkpointing()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    latent_frames = (frames - 1) // 4 + 1
    shape = (1, spec.out_channels, latent_frames, height // 8, width // 8)
    text_length = WAN_TEXT_LENGTH if spec.dim >= 128 else TEXT_LENGTH
    latents = torch.randn(shape, device=device)
    text = torch.randn(1, text_length, spec.text_dim, device=device)
    sequence = latent_frames * (height // 16) * (width // 16)
    flops = step_flops(spec, sequence, 1)

    def one_step() -> None:
        sigma = torch.rand(1, device=device)
        noise = torch.randn_like(latents)
        noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1, 1) * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            pred = model(hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=text).sample
        F.mse_loss(pred.float(), noise - latents).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, kernels
        one_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    achieved = flops / seconds / 1e12
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": model_name,
        "size": size,
        "sequence_tokens": sequence,
        "model_pflop_per_step": round(flops / 1e15, 4),
        "seconds_per_step": round(seconds, 3),
        "achieved_tflops": round(achieved, 2),
        "peak_tflops": peak_tflops,
        "mfu": round(achieved / peak_tflops, 4),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 1) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--mfu", action="store_true", help="measure model-FLOPs utilisation (a GPU run)")
    parser.add_argument("--mfu-model", default="wan2.1-t2v-14b")
    parser.add_argument("--mfu-size", default="480x832x81", help="HEIGHTxWIDTHxFRAMES")
    parser.add_argument("--mfu-steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    args = parser.parse_args()
    if args.mfu:
        print(json.dumps(mfu(args.mfu_model, args.mfu_size, args.mfu_steps, args.peak_tflops, 64), indent=2))
        return
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-train-"))
    ds = make_image_dataset(work / "ds", count=16, size=32)
    config = load_config(
        None, dataset=ds, lora="bench", goal="style", tiny=True, base_model="wan-tiny", resolution=32, rank=4,
        max_steps=args.steps, epochs=100, checkpoint_every=10**6, output=work / "out", learning_rate=1e-3,
        validation_fraction=0.0,
    )  # fmt: skip
    cfg = config.resolved(16)
    models = load_models(cfg)
    report = check_dataset(ds)
    samples = build_cache(report.samples, load_models(cfg), work / "cache2", 32, 1)
    # Alternate the two loops and keep each one's best, so that warm-up and order do not decide.
    ours, bare = 0.0, 0.0
    for round_ in range(3):
        run = train(config, run_dir=work / f"run{round_}")  # its loop alone is timed
        ours = max(ours, args.steps / run.seconds)
        bare = max(bare, bare_loop(cfg, samples, args.steps))

    vae = models.vae.eval()
    mean = torch.tensor(vae.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(-1, 1, 1, 1)
    by_stem = {s.stem: s for s in report.samples}

    def encode(sample):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            pixels = load_pixels(by_stem[sample.stem], 32, 1)
            latents = (vae.encode(pixels[None]).latent_dist.mean[0] - mean) / std
            text = pad_text(models.encode_prompts([by_stem[sample.stem].caption]), TEXT_LENGTH)
        return latents[None], text

    uncached = bare_loop(cfg, samples, max(10, args.steps // 3), encode=encode)
    reference = BASE_MODELS["wan2.1-t2v-14b"]
    seq = 21 * (480 // 16) * (832 // 16)
    result = {
        "steps": args.steps,
        "trainer_steps_per_s": round(ours, 2),
        "bare_loop_steps_per_s": round(bare, 2),
        "trainer_vs_bare_loop": round(ours / bare, 3),
        "cached_vs_uncached_speedup": round(bare / uncached, 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "tiny_flops_per_step": step_flops(BASE_MODELS["wan-tiny"], samples[0].latents[0].numel() // 4, 1)
        * cfg.gradient_accumulation_steps,
        "reference_14b_480x832x81_pflop_per_step": round(step_flops(reference, seq, 1) / 1e15, 2),
        "mfu": "a GPU run: bench_trainer.py --mfu",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
