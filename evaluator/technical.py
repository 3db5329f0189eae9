"""Phase 1, technical validation: integrity and structure, rank and alpha, the effect check, test
generations free of NaN, black and frozen frames, and speed and memory against the base model.

Every check is recorded with its figure, passed or not; the phase passes when all do. A file that is
not a sound LoRA fails at the first check and nothing is generated with it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluator.generate import Generator
from registry.domain.errors import WanloraError
from registry.domain.policy import TechnicalPolicy
from registry.domain.wan import BASE_MODELS
from registry.files.ingest import inspect_lora, nonfinite_tensors

__all__ = ["Check", "PhaseResult", "check_structure", "run_technical"]

Progress = Callable[[str, int, int], None]
PROBE_SIGMAS = (0.3, 0.6, 0.9)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    value: Any = None


@dataclass
class PhaseResult:
    phase: str
    checks: list[Check] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def summary(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        if failed:
            return "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return f"all {len(self.checks)} checks passed"

    def record(self) -> dict[str, Any]:
        checks = [{"name": c.name, "passed": c.passed, "detail": c.detail, "value": c.value} for c in self.checks]
        return {**self.details, "checks": checks}


def check_structure(files: dict[str, Path], base_model: str, policy: TechnicalPolicy) -> list[Check]:
    spec = BASE_MODELS[base_model]
    checks = []
    for role, path in files.items():
        try:
            info = inspect_lora(path, spec)  # safetensors structure, keys → modules, shapes
        except WanloraError as exc:
            return [Check("integrity", False, f"{role}: {exc.message}")]
        bad = nonfinite_tensors(info)
        if bad:
            return [Check("integrity", False, f"{role}: NaN or infinite values in {len(bad)} tensor(s): {bad[0]}")]
        checks.append(
            Check("integrity", True, f"{role}: {len(info.modules)} modules map onto {base_model} with matching shapes")
        )
        if not info.rank:  # whole differences (diff) or LoKr with both factors whole: no rank, no alpha
            checks.append(
                Check("rank_alpha", True, f"{role}: {', '.join(info.algorithms)} without a rank: nothing to bound")
            )
            continue
        ratio = info.alpha / info.rank
        sane = 1 <= info.rank <= policy.max_rank and 0 < ratio <= policy.max_alpha_ratio
        checks.append(
            Check(
                "rank_alpha",
                sane,
                f"{role}: rank {info.rank}, alpha {info.alpha:g} (alpha/rank {ratio:.2f}; "
                f"allowed rank ≤ {policy.max_rank}, alpha/rank ≤ {policy.max_alpha_ratio:g})",
                {"rank": info.rank, "alpha": info.alpha},
            )
        )
    return checks


def effect(
    generator: Generator, adapter: str, strengths: tuple[float, ...], prompts: list[str], seed: int
) -> dict[float, float]:
    """Relative change of the denoiser's prediction against the base model, per strength: mean |Δ| over
    mean |base|, on fixed noisy latents for a few prompts and noise levels (base predictions are made
    once and reused)."""
    generator_ = torch.Generator().manual_seed(seed)
    probes = []
    for prompt in prompts[:3]:
        text = generator.encode([prompt])
        for sigma in PROBE_SIGMAS:
            probes.append((torch.randn(generator.latent_shape(), generator=generator_), sigma, text))
    generator.use(None)
    base = [generator.predict(x, s, t) for x, s, t in probes]
    scale = sum(float(b.abs().mean()) for b in base) / len(base)
    out = {}
    for strength in strengths:
        generator.use(adapter, strength)
        diffs = [
            float((generator.predict(x, s, t) - b).abs().mean()) for (x, s, t), b in zip(probes, base, strict=True)
        ]
        out[strength] = sum(diffs) / len(diffs) / max(scale, 1e-12)
    return out


def frame_problems(frames: torch.Tensor) -> list[str]:
    """NaN/Inf, black or frozen output, for (F, H, W, 3) frames in [0, 1]."""
    if not torch.isfinite(frames).all():
        return ["NaN or Inf in the output"]
    problems = []
    if float(frames.mean()) < 0.02 and float(frames.max()) < 0.1:
        problems.append("black frames")
    if frames.shape[0] > 1:
        motion = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
        if float(motion.max()) < 1e-4:
            problems.append("frozen frames (no change between frames)")
    return problems


def _noise_band(generator: Generator, prompts: list[str], seed: int, base_seconds: list[float]) -> float:
    """How much the base model's own generation time varies in this run, as a fraction of its median.

    A tiny model generates in milliseconds, where the machine's noise is larger than any margin; the
    base model is timed once more on fresh seeds (not cached) and the spread of all its timings widens
    the allowance, so the check cannot flip on noise. Real models keep the policy's margin as it is."""
    generator.use(None)
    seconds = base_seconds + [generator.generate(p, seed + 20_000 + i).seconds for i, p in enumerate(prompts)]
    median = statistics.median(seconds)
    return (max(seconds) - min(seconds)) / median if median > 0 else 0.0


def run_technical(
    files: dict[str, Path],
    base_model: str,
    generator: Generator,
    policy: TechnicalPolicy,
    prompts: list[str],
    *,
    seed: int = 0,
    progress: Progress | None = None,
    adapter: str = "candidate",
    structure: list[Check] | None = None,
) -> PhaseResult:
    """``structure``: the result of ``check_structure`` when the caller has it already (the files are
    read and scanned for NaN/Inf once)."""
    result = PhaseResult("technical")
    result.checks = list(structure) if structure is not None else check_structure(files, base_model, policy)
    if not result.passed:
        return result
    if not generator.has_lora(adapter):
        generator.add_lora(adapter, files)

    strengths = policy.strengths
    change = effect(generator, adapter, strengths, prompts, seed)
    rising = all(change[a] < change[b] for a, b in itertools.pairwise(strengths))
    lowest = change[strengths[0]]
    figures = ", ".join(f"{s:g}: {change[s]:.2%}" for s in strengths)
    if lowest < policy.min_effect:
        detail = f"the LoRA has no visible effect: output change {figures} (needs ≥ {policy.min_effect:.2%})"
    elif not rising:
        detail = f"the effect does not grow with strength: {figures}"
    else:
        detail = f"output change by strength {figures}"
    result.checks.append(Check("effect", lowest >= policy.min_effect and rising, detail, change))
    result.details["effect"] = {str(k): v for k, v in change.items()}
    if not result.checks[-1].passed:
        return result  # nothing to learn from generations of a LoRA that does nothing

    total = len(prompts) * (len(strengths) + 1) + 1
    done = 0
    generator.use(None)
    generator.generate(prompts[0], seed + 10_000)  # warm-up: first-call costs do not count against anyone
    base_runs = []
    for i, prompt in enumerate(prompts):
        base_runs.append(generator.generate(prompt, seed + i))
        done += 1
        if progress:
            progress("base", done, total)
    problems: dict[str, list[str]] = {}
    lora_runs = []
    for strength in strengths:
        generator.use(adapter, strength)
        for i, prompt in enumerate(prompts):
            out = generator.generate(prompt, seed + i)
            for problem in frame_problems(out.frames):
                problems.setdefault(problem, []).append(f"{strength:g}/{i}")
            if strength == strengths[-1]:
                lora_runs.append(out)
            done += 1
            if progress:
                progress(f"strength {strength:g}", done, total)
    count = len(prompts) * len(strengths)
    bad = "; ".join(f"{p} in {len(w)} of {count} (strength/prompt {', '.join(w[:5])})" for p, w in problems.items())
    result.checks.append(
        Check("generations", not problems, bad or f"{count} generations without NaN, black or frozen frames")
    )

    base_s = statistics.median(o.seconds for o in base_runs)
    lora_s = statistics.median(o.seconds for o in lora_runs)
    slowdown = lora_s / base_s - 1
    allowed, band = policy.max_slowdown, 0.0
    if generator.tiny:
        band = _noise_band(generator, prompts, seed, [o.seconds for o in base_runs])
        allowed += band
    noise = f" + a noise band of {band:.0%} measured in this run (--tiny)" if band else ""
    result.checks.append(
        Check(
            "speed",
            slowdown <= allowed,
            f"{lora_s:.3f} s vs base {base_s:.3f} s per generation ({slowdown:+.1%}; allowed "
            f"+{policy.max_slowdown:.0%}{noise})",
            {"lora_seconds": lora_s, "base_seconds": base_s, "noise_band": band},
        )
    )
    base_m = max(o.peak_memory for o in base_runs)
    lora_m = max(o.peak_memory for o in lora_runs)
    growth = lora_m / base_m - 1
    where = "peak allocated" if generator.device.type == "cuda" else "weights"
    result.checks.append(
        Check(
            "memory",
            growth <= policy.max_memory_increase,
            f"{_mb(lora_m)} vs base {_mb(base_m)} ({where}; {growth:+.1%}; allowed +{policy.max_memory_increase:.0%})",
            {"lora_bytes": lora_m, "base_bytes": base_m},
        )
    )
    result.details["generations"] = count
    return result


def _mb(n: int) -> str:
    return f"{n / 1024**2:,.1f} MB" if n >= 1024**2 else f"{n / 1024:,.1f} KB"
