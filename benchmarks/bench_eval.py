"""Evaluator benchmark (issue 5): a strength sweep over two versions, with base-model outputs cached
and reused against recomputed, on the tiny WAN model on CPU; both runs in the same process.

    .venv/bin/python benchmarks/bench_eval.py [--prompts 6] [--steps 8]

The sweep compares each version at each strength (0.5, 0.7, 0.9, 1.0) with the base model on the
same prompts and seeds, as phase 1's test generations and phase 2's sweep do:
- cached: the evaluator's ``Generator``: a base output is made once per (prompt, seed, settings) and
  reused for every strength and version;
- recomputed: the same code with the cache off, so each comparison generates its base output again.

It prints the DiT forward passes by kind, the wall time of each run, and the wall time the pass counts
predict for the recomputed run (cached time × its passes / the cached run's passes), so that "the wall
time matches" can be read off: the saving is the base passes, with no overhead of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluator.generate import GenerationSettings, Generator  # noqa: E402
from evaluator.prompts import production_prompts  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402

STRENGTHS = (0.5, 0.7, 0.9, 1.0)


def sweep(generator: Generator, versions: list[str], prompts: list[str]) -> dict[str, dict[str, float]]:
    """Mean absolute output change against the base model, per version and strength."""
    out: dict[str, dict[str, float]] = {}
    for version in versions:
        out[version] = {}
        for strength in STRENGTHS:
            changes = []
            for i, prompt in enumerate(prompts):
                generator.use(None)
                base = generator.generate(prompt, i).frames
                generator.use(version, strength)
                changes.append(float((generator.generate(prompt, i).frames - base).abs().mean()))
            out[version][f"{strength:g}"] = sum(changes) / len(changes)
    return out


def run(cache: bool, files: dict[str, Path], prompts: list[str], steps: int) -> dict[str, object]:
    settings = GenerationSettings.tiny()
    settings = GenerationSettings(settings.height, settings.width, settings.frames, steps, settings.guidance)
    generator = Generator.load("wan-tiny", tiny=True, settings=settings, cache_base=cache)
    for name, path in files.items():
        generator.add_lora(name, {"single": path})
    generator.use(None)
    generator._sample("warm-up", 999)  # first-call costs count for neither run
    generator.forward_passes.clear()
    start = time.perf_counter()
    result = sweep(generator, list(files), prompts)
    return {"seconds": time.perf_counter() - start, "passes": dict(generator.forward_passes), "sweep": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-eval-"))
    files = {
        f"v{i}": synth_lora(
            work / f"v{i}.safetensors", base_model="wan-tiny", fmt="canonical", dtype="F32", scale=0.3, seed=i
        )
        for i in (1, 2)
    }
    prompts = production_prompts("sarah", args.prompts)
    recomputed = run(False, files, prompts, args.steps)
    cached = run(True, files, prompts, args.steps)
    recomputed = run(False, files, prompts, args.steps)  # alternate, and keep the second of each
    cached = run(True, files, prompts, args.steps)
    assert cached["sweep"] == recomputed["sweep"], "the cache must not change any figure"
    c_pass, r_pass = cached["passes"], recomputed["passes"]
    c_total, r_total = sum(c_pass.values()), sum(r_pass.values())  # type: ignore[attr-defined]
    predicted = cached["seconds"] * r_total / c_total  # type: ignore[operator]
    result = {
        "versions": 2,
        "strengths": list(STRENGTHS),
        "prompts": args.prompts,
        "steps": args.steps,
        "base_forward_passes_cached": c_pass.get("base", 0),  # type: ignore[attr-defined]
        "base_forward_passes_recomputed": r_pass.get("base", 0),  # type: ignore[attr-defined]
        "base_passes_ratio": round(r_pass["base"] / c_pass["base"], 2),  # type: ignore[index]
        "lora_forward_passes": c_pass.get("lora", 0),  # type: ignore[attr-defined]
        "seconds_cached": round(cached["seconds"], 3),  # type: ignore[arg-type]
        "seconds_recomputed": round(recomputed["seconds"], 3),  # type: ignore[arg-type]
        "wall_time_ratio": round(recomputed["seconds"] / cached["seconds"], 2),  # type: ignore[operator]
        "recomputed_seconds_predicted_by_passes": round(predicted, 3),
        "identical_results": True,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
