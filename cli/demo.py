"""The main job: an end-to-end walk-through on a throwaway $WANLORA_HOME, through the real CLI."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

from rich.rule import Rule

from cli import render
from cli.app import app
from registry.domain.wan import KeyFormat

# The README's tiny training recipe, flag for flag (a test holds the two together): the demo proves that
# what it makes passes all three phases.
TINY_RECIPE = ("--goal", "style", "--tiny", "--base-model", "wan-tiny", "--resolution", "32", "--rank", "4",
               "--epochs", "4")  # fmt: skip


def _run(*args: str) -> None:
    render.console.print(f"\n[bold cyan]$ wanlora {shlex.join(args)}[/]")
    app(list(args), standalone_mode=False)


def _train(work: Path) -> None:
    """With the train extra: a captioned dataset becomes registered candidates (tiny models, CPU)."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401

        from trainer.synthdata import make_image_dataset
    except ImportError:
        render.console.print(
            "\n[dim]Training is skipped: it needs the train extra "
            "(pip install torch==2.13.0 'wanlora[train]'); then this demo trains a tiny LoRA too.[/]"
        )
        return
    render.console.print("\nA captioned dataset (synthetic images) for the bundled trainer, on tiny random models:")
    dataset = make_image_dataset(work / "dataset", count=12, size=48)
    _run("dataset", "check", str(dataset))
    _run("train", "--dataset", str(dataset), "--lora", "watercolor", "--project", "brandx", *TINY_RECIPE,
         "--checkpoint-every", "6", "--output", str(work / "runs"))  # fmt: skip
    candidate = "watercolor@0.1.0-step.24"
    render.console.print("\nThe three phases for the last checkpoint (tiny models, CPU):")
    _run("eval", "run", candidate, "--project", "brandx", "--tiny", "--references", str(dataset),
         "--out", str(work / "evals"))  # fmt: skip
    _run("trial", "start", candidate, "--project", "brandx", "--share", "20", "--reason", "phases 1 and 2 passed")
    _run("pick", "watercolor", "--project", "brandx", "--job", "job-0001")
    render.console.print("\nComfyUI hosts report how their jobs went (here: five good ones):")
    for i in range(5):
        _run("report", candidate, "--project", "brandx", "--job", f"job-{i:04}", "--success", "--rating", "8",
             "--seconds", "41.5")  # fmt: skip
    _run("eval", "status", candidate, "--project", "brandx")
    _run("promote", "watercolor", "0.1.0-step.24", "--project", "brandx", "--reason", "three phases passed")
    _run("review")


def run_demo(keep: Path | None = None) -> None:
    from registry.files.synth import synth_lora

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="wanlora-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    home, comfyui, files = work / "home", work / "ComfyUI", work / "files"
    (comfyui / "models" / "loras").mkdir(parents=True, exist_ok=True)
    (comfyui / "models" / "loras" / "my_old_lora.safetensors").write_bytes(b"not managed by wanlora")
    names = ("WANLORA_HOME", "WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_POLICY_FILE", "WANLORA_SERVER",
             "WANLORA_TOKEN")  # fmt: skip
    previous = {k: os.environ.get(k) for k in names}
    for key in names:
        os.environ.pop(key, None)
    os.environ["WANLORA_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    # The default policy requires all three phases, and a trial 50 reports over 24 hours; the demo's
    # project lets its trial pass after 5 reports at once, and does not hold tiny CPU models, whose
    # generations take milliseconds, to a speed margin (the policy file is per project).
    (home / "policy.toml").write_text(
        "[projects.brandx.trial]\nmin_reports = 5\nmin_hours = 0\nabort_after = 5\n"
        "[projects.brandx.technical]\nmax_slowdown = 3.0\n"
    )
    try:
        render.console.print(Rule("wanlora walk-through"))
        render.console.print(f"throwaway WANLORA_HOME: {home}\nComfyUI folder: {comfyui}")
        render.console.print("\nMaking small but valid WAN 2.2 A14B LoRA pairs (real shapes, random weights):")
        meta = {
            "ss_learning_rate": "0.00015",
            "ss_network_dim": "16",
            "ss_network_alpha": "16",
            "ss_num_epochs": "15",
            "ss_batch_size_per_device": "1",
            "ss_optimizer": "AdamW8bit",
            "ss_lr_scheduler": "cosine_with_restarts",
            "ss_num_train_images": "250",
            "ss_training_finished_at": "1736899200",
            "modelspec.trigger_phrase": "sarah",
        }
        v1 = {
            role: synth_lora(files / f"sarah_v1_{role}.safetensors", rank=16, seed=i, metadata=meta)
            for i, role in enumerate(("high", "low"))
        }
        meta2 = meta | {"ss_learning_rate": "0.00012", "ss_num_train_images": "350"}
        v2 = {
            role: synth_lora(
                files / f"sarah_v2_{role}.safetensors", rank=16, seed=10 + i, fmt=KeyFormat.DIFFUSERS, metadata=meta2
            )
            for i, role in enumerate(("high", "low"))
        }
        for path in [*v1.values(), *v2.values()]:
            render.console.print(f"  {path.name} ({path.stat().st_size // 1024} KB)")

        _run(
            "register", str(v1["high"]), "--low-noise", str(v1["low"]), "--lora", "sarah", "--project", "brandx",
            "--category", "character", "--base-model", "wan2.2-t2v-a14b", "--version", "1.0.0",
            "--changelog", "First training: 250 images", "--from-metadata", "--score", "consistency=8.1", "--quiet",
        )  # fmt: skip
        render.console.print("\n[bold]Promotion is gated[/]: it needs phases 1–3 passed for the version's files.")
        _run("promote", "sarah", "1.0.0", "--project", "brandx", "--reason", "ship it")
        render.console.print(
            "\n1.0.0 ran in production before wanlora existed, so an admin brings it in on a recorded override:"
        )
        _run(
            "promote", "sarah", "1.0.0", "--project", "brandx", "--override",
            "--reason", "in production since March; imported from the shared drive",
        )  # fmt: skip
        _run("sync", "--comfyui", str(comfyui))
        _run(
            "register", str(v2["high"]), "--low-noise", str(v2["low"]), "--lora", "sarah", "--project", "brandx",
            "--bump", "minor", "--changelog", "Added 100 new expressions", "--from-metadata",
            "--score", "consistency=9.2", "--score", "prompt_flexibility=8.9", "--quiet",
        )  # fmt: skip
        _run("diff", "sarah", "1.0.0", "1.1.0", "--project", "brandx")
        _run("eval", "status", "sarah@1.1.0", "--project", "brandx")
        _run(
            "promote", "sarah", "1.1.0", "--project", "brandx", "--override",
            "--reason", "client deadline; evaluation scheduled after release",
        )  # fmt: skip
        _run("sync", "--comfyui", str(comfyui))
        _run("rollback", "sarah", "--project", "brandx", "--reason", "faces drift at strength 1.0 in production")
        _run("sync", "--comfyui", str(comfyui))
        _run("sync", "--comfyui", str(comfyui), "--check")
        _run("history", "sarah", "--project", "brandx")
        _train(work)
        _run("list")
        _run("notes", "sarah", "--project", "brandx")
        render.console.print("")
        render.console.print(render.folder_tree(comfyui / "models" / "loras", "ComfyUI/models/loras"))
        render.console.print(
            "\nThe workflow keeps loading [bold]wanlora/brandx/character/sarah_high_noise.safetensors[/] and "
            "[bold]sarah_low_noise.safetensors[/]; the rollback swapped their contents atomically and left "
            "my_old_lora.safetensors alone."
        )
        render.console.print(f"\neverything is in {work}" + ("" if keep else " (a temporary folder)"))
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
