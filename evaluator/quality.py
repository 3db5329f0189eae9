"""Phase 2, quality assessment: production-like generations scored on consistency, style adherence
and prompt flexibility (0–10), against the base model and the LoRA's previous version, with a strength
sweep that finds the best strength and flags overfitting; a markdown report with PNG charts and a
contact sheet of frames.

The candidate's scores are those at its best strength (what a workflow should use); the previous
version is scored at its own recorded best strength, else 1.0. Base-model generations come from the
generator's cache when another phase or version already made them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from evaluator.generate import Generator
from evaluator.scorer import Scorer, consistency, flexibility, style_adherence
from evaluator.technical import Check, PhaseResult
from registry.domain.policy import QualityPolicy

__all__ = ["run_quality"]

Progress = Callable[[str, int, int], None]
SCORES = ("consistency", "style_adherence", "prompt_flexibility")


def _keyframes(frames: torch.Tensor) -> list[np.ndarray]:
    """First, middle and last frame (one for an image) as uint8 arrays."""
    picks = sorted({0, frames.shape[0] // 2, frames.shape[0] - 1})
    return [(frames[i].numpy() * 255).round().astype(np.uint8) for i in picks]


def _score(
    outputs: list[torch.Tensor], prompts: list[str], scorer: Scorer, references: torch.Tensor | None
) -> dict[str, float]:
    images = [_keyframes(f) for f in outputs]
    flat = [im for group in images for im in group]
    per_frame = scorer.images(flat)
    sizes = [len(g) for g in images]
    embeddings = torch.stack([chunk.mean(dim=0) for chunk in per_frame.split(sizes)])
    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    scores = {
        "consistency": consistency(embeddings),
        "prompt_flexibility": flexibility(embeddings, scorer.texts(prompts)),
    }
    if references is not None:
        scores["style_adherence"] = style_adherence(embeddings, references)
    return scores


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def run_quality(
    generator: Generator,
    scorer: Scorer,
    policy: QualityPolicy,
    prompts: list[str],
    *,
    adapter: str = "candidate",
    previous: tuple[str, float] | None = None,
    references: list[np.ndarray] | None = None,
    out_dir: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    label: str = "candidate",
) -> PhaseResult:
    """``adapter`` (and ``previous``: an adapter name and its strength) must be loaded on ``generator``."""
    result = PhaseResult("quality")
    refs = scorer.images(references) if references else None
    runs: list[tuple[str, str | None, float]] = [("base", None, 0.0)]
    runs += [(f"{s:g}", adapter, s) for s in policy.strengths]
    if previous is not None:
        runs.append(("previous", previous[0], previous[1]))
    total, done = len(runs) * len(prompts), 0
    outputs: dict[str, list[torch.Tensor]] = {}
    for name, which, strength in runs:
        generator.use(which, strength)
        outputs[name] = []
        for i, prompt in enumerate(prompts):
            outputs[name].append(generator.generate(prompt, seed + i).frames)
            done += 1
            if progress:
                progress(name if name in ("base", "previous") else f"strength {name}", done, total)
    table = {name: _score(outs, prompts, scorer, refs) for name, outs in outputs.items()}

    sweep = {s: table[f"{s:g}"] for s in policy.strengths}
    best = max(policy.strengths, key=lambda s: (_mean(sweep[s]), -abs(s - 0.8)))
    ours = sweep[best]
    at_full = sweep.get(1.0)
    overfit = bool(at_full is not None and 0.6 <= best <= 0.8 and _mean(ours) - _mean(at_full) > policy.overfit_margin)
    result.scores = {**ours, "best_strength": best}
    result.details = {
        "prompts": len(prompts),
        "best_strength": best,
        "overfitting": overfit,
        "base": table["base"],
        "previous": table.get("previous"),
        "sweep": {f"{s:g}": v for s, v in sweep.items()},
        "forward_passes": dict(generator.forward_passes),
    }
    minimums = {"consistency": policy.min_consistency, "style_adherence": policy.min_style,
                "prompt_flexibility": policy.min_flexibility}  # fmt: skip
    for key in SCORES:
        if key not in ours:
            result.checks.append(Check(key, True, "not measured: no reference images (--references DIR)"))
            continue
        vs = [f"base {table['base'][key]:.2f}"]
        ok = ours[key] >= minimums[key]
        detail = f"{ours[key]:.2f} at strength {best:g}"
        if "previous" in table and key in table["previous"]:
            prev = table["previous"][key]
            vs.append(f"previous {prev:.2f}")
            if ours[key] < prev - policy.max_drop:
                ok = False
                detail += f"; dropped more than {policy.max_drop:g} against the previous version"
        if ours[key] < minimums[key]:
            detail += f"; under the minimum {minimums[key]:g}"
        result.checks.append(Check(key, ok, f"{detail} ({', '.join(vs)})", ours[key]))
    sweep_text = ", ".join(f"{s:g}: {_mean(v):.2f}" for s, v in sweep.items())
    result.checks.append(
        Check(
            "strength_sweep",
            not (overfit and policy.fail_on_overfit),
            f"best strength {best:g} (mean score by strength {sweep_text})"
            + ("; overfitting: best at 0.6–0.8 and worse at 1.0" if overfit else ""),
            best,
        )
    )
    if out_dir is not None:
        result.details["report"] = str(write_report(out_dir, label, result, table, sweep, outputs, prompts))
    return result


def write_report(
    out_dir: Path,
    label: str,
    result: PhaseResult,
    table: dict[str, dict[str, float]],
    sweep: dict[float, dict[str, float]],
    outputs: dict[str, list[torch.Tensor]],
    prompts: list[str],
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    best = result.details["best_strength"]
    columns = {"base model": table["base"], f"{label} @ {best:g}": table[f"{best:g}"]}
    if table.get("previous"):
        columns["previous version"] = table["previous"]
    keys = [k for k in SCORES if k in table["base"]]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(columns)
    for i, (name, values) in enumerate(columns.items()):
        ax.bar([x + i * width for x in range(len(keys))], [values[k] for k in keys], width, label=name)
    ax.set_xticks([x + width * (len(columns) - 1) / 2 for x in range(len(keys))], [k.replace("_", " ") for k in keys])
    ax.set_ylim(0, 10)
    ax.set_ylabel("score (0–10)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    strengths = list(sweep)
    for key in keys:
        ax.plot(strengths, [sweep[s][key] for s in strengths], marker="o", label=key.replace("_", " "))
    ax.axvline(best, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("LoRA strength")
    ax.set_ylabel("score (0–10)")
    ax.set_ylim(0, 10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "sweep.png", dpi=100)
    plt.close(fig)

    contact_sheet(out_dir / "contact.png", {name: outputs[key] for name, key in (
        ("base", "base"), (f"{label} @ {best:g}", f"{best:g}"), ("previous", "previous")) if key in outputs})  # fmt: skip
    result.details["preview"] = str(preview_frame(out_dir / "preview.png", outputs[f"{best:g}"][0]))

    lines = [
        f"# Quality assessment: {label}",
        "",
        f"**{'passed' if result.passed else 'failed'}**: {result.summary}. {len(prompts)} production-like prompts; "
        f"best strength {best:g}" + (" (**overfitting**: worse at 1.0)" if result.details["overfitting"] else "") + ".",
        "",
        "| score | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key in keys:
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(f"{v[key]:.2f}" for v in columns.values()) + " |")
    lines += ["", "![scores](scores.png)", "", "## Strength sweep", "", "| strength | " + " | ".join(keys) + " |",
              "|---|" + "---|" * len(keys)]  # fmt: skip
    for s, values in sweep.items():
        lines.append(f"| {s:g} | " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |")
    lines += ["", "![sweep](sweep.png)", "", "## Checks", ""]
    lines += [f"- {'✓' if c.passed else '✗'} **{c.name}**: {c.detail}" for c in result.checks]
    lines += ["", "## Contact sheet (rows: base, candidate at its best strength, previous; middle frames)", "",
              "![contact sheet](contact.png)", "", "## Prompts", ""]  # fmt: skip
    lines += [f"{i + 1}. {p}" for i, p in enumerate(prompts)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def preview_frame(path: Path, frames: torch.Tensor, size: int = 256) -> Path:
    """The contact sheet's frame of the candidate at its best strength for the first prompt, at most
    ``size`` pixels a side: the preview ComfyUI users' tools show next to the LoRA."""
    from PIL import Image

    middle = (frames[frames.shape[0] // 2].numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(middle)
    if max(image.size) > size:
        image.thumbnail((size, size))
    elif (factor := 64 // max(image.size)) > 1:  # tiny test models: big enough to see
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    image.save(path, optimize=True)
    return path


def contact_sheet(path: Path, rows: dict[str, list[torch.Tensor]], columns: int = 8, cell: int = 96) -> Path:
    """A grid of middle frames: one row per model, one column per prompt."""
    from PIL import Image, ImageDraw

    label_w = 150
    sheet = Image.new("RGB", (label_w + columns * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, outs) in enumerate(rows.items()):
        draw.text((6, r * cell + cell // 2 - 6), name, fill="black")
        for c, frames in enumerate(outs[:columns]):
            middle = (frames[frames.shape[0] // 2].numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(middle).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + c * cell, r * cell))
    sheet.save(path)
    return path
