"""Trainer benchmarks (issue 4), on the tiny WAN model on CPU; ratios against references run in the
same process on the same model and data.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 60]

- trainer steps/s against a bare diffusers + peft loop (same model, adapter, optimizer, cached latents,
  batch and accumulation; target ≥ 0.9×);
- cached latents and text embeddings against encoding every step with the VAE and the text encoder;
- peak memory (RSS) of the process;
- FLOPs per step and model-FLOPs utilisation: the 14B reference (480×832×81) is computed here; the MFU
  figure needs a GPU run (`--device cuda`), which this machine does not have.
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

from registry.wan import BASE_MODELS  # noqa: E402
from trainer.cache import build_cache, load_pixels  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.dataset import check_dataset  # noqa: E402
from trainer.models import build_tiny_transformer, load_models  # noqa: E402
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
            latents, text = encode(sample) if encode else (sample.latents[None], sample.text[None])
            s = torch.sigmoid(torch.randn(1, generator=g))
            noise = torch.randn(latents.shape, generator=g)
            noisy = (1 - s.view(-1, 1, 1, 1, 1)) * latents + s.view(-1, 1, 1, 1, 1) * noise
            pred = model(hidden_states=noisy, timestep=s * 1000, encoder_hidden_states=text).sample
            (F.mse_loss(pred, noise - latents) / config.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
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

    vae, text_encoder = models.vae.eval(), models.text_encoder.eval()
    mean = torch.tensor(vae.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(-1, 1, 1, 1)
    by_stem = {s.stem: s for s in report.samples}

    def encode(sample):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            pixels = load_pixels(by_stem[sample.stem], 32, 1)
            latents = (vae.encode(pixels[None]).latent_dist.mean[0] - mean) / std
            ids, mask = models.tokenize([by_stem[sample.stem].caption])
            text = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, : int(mask.sum())]
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
        "mfu": "needs a GPU run (none on this machine)",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
