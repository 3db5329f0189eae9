"""Presets from the guide, config validation and the memory preflight (no torch needed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from registry.domain.errors import InvalidInput
from registry.domain.wan import BASE_MODELS
from trainer.config import load_config
from trainer.preflight import estimate, remedies, step_flops, tokens
from trainer.presets import GOALS, SWEEP, preset_for, size_ranges


@pytest.mark.parametrize(
    ("goal", "samples", "rank", "lr", "epochs"),
    [
        ("character", 300, 64, 1.5e-4, 15),  # inside the guide's ranges: untouched
        ("character", 150, 48, 1.5e-4, 15),  # 100–200 samples: rank 32–48
        ("style", 300, 64, 1e-4, 18),  # 200–400: rank 48–64, epochs 12–18
        ("motion", 500, 96, 8e-5, 15),  # 400–800: rank 64–96, epochs 10–15
        ("motion", 1000, 128, 8e-5, 12),  # 800+: rank 96–128, epochs 8–12
        ("domain", 900, 96, 1e-4, 12),
    ],
)
def test_presets_follow_the_guide(goal: str, samples: int, rank: int, lr: float, epochs: int) -> None:
    p = preset_for(goal, samples)
    assert (p.rank, p.learning_rate, p.epochs, p.alpha) == (rank, lr, epochs, float(rank))


def test_goal_table_sweep_and_small_datasets() -> None:
    assert {g: (p.rank, p.learning_rate, p.epochs) for g, p in GOALS.items()} == {
        "character": (64, 1.5e-4, 15), "style": (96, 1e-4, 20), "motion": (128, 8e-5, 25), "domain": (64, 1e-4, 12),
    }  # fmt: skip
    assert SWEEP == {"conservative": (8e-5, 64, 12), "standard": (1.2e-4, 64, 15), "aggressive": (1.5e-4, 96, 18)}
    assert size_ranges(50) == ((32, 48), (15, 20))
    assert any("at least 100" in n for n in preset_for("character", 40).notes)


def test_config_from_toml_with_flags_on_top(tmp_path: Path) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text('dataset = "ds"\nlora = "sarah"\ngoal = "character"\ntiny = true\nframes = 17\nrank = 32\n')
    cfg = load_config(toml, learning_rate=2e-4)
    assert cfg.frames == 17 and cfg.rank == 32 and cfg.learning_rate == 2e-4
    resolved = cfg.resolved(300)
    assert resolved.rank == 32 and resolved.alpha == 32 and resolved.epochs == 15
    trio = cfg.sweep_configs()
    assert {k: (c.learning_rate, c.rank, c.epochs) for k, c in trio.items()} == SWEEP


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 16}, "4n\\+1"),
        ({"resolution": 500}, "multiple of 16"),
        ({"goal": "comedy"}, "goal"),
        ({"base_model": "sdxl"}, "unknown base model"),
        ({"tiny": False}, "model_path is required"),
        ({"learning_rate": 3}, "learning_rate"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_errors_name_the_field(change: dict, message: str) -> None:
    base = {"dataset": "ds", "lora": "x", "goal": "style", "tiny": True}
    with pytest.raises(InvalidInput, match=message):
        load_config(None, **{**base, **change})


def test_bad_toml_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("dataset = [unclosed")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_config(bad)


def test_sequence_and_flops_match_the_14b_reference() -> None:
    assert tokens(512, 17) == 5 * 32 * 32
    # the reference: 14B DiT at 480×832×81 is about 4.25 PFLOP a step
    seq = 21 * (480 // 16) * (832 // 16)
    assert 4.0e15 < step_flops(BASE_MODELS["wan2.1-t2v-14b"], seq, 1) < 4.7e15


def test_preflight_and_remedies_in_the_guides_order() -> None:
    cfg = load_config(
        None, dataset="ds", lora="x", goal="style", tiny=True, base_model="wan2.2-ti2v-5b",
        resolution=1024, frames=25, batch_size=2, gradient_checkpointing=False, mixed_precision="no", rank=96,
    )  # fmt: skip
    big = estimate(cfg, 300)
    small = estimate(cfg.model_copy(update={"gradient_checkpointing": True, "resolution": 512, "batch_size": 1}), 300)
    assert big.peak_gb > small.peak_gb and big.activations_gb > 10 * small.activations_gb
    assert big.hours > 0 and big.cost_usd == pytest.approx(big.hours * 0.69)
    fixes = remedies(cfg, 300, budget_gb=24)
    labels = [label for label, _ in fixes]
    assert labels[:3] == ["enable gradient checkpointing", "enable mixed precision (bf16/fp16)", "set batch size 1"]
    assert all(a >= b for (_, a), (_, b) in itertools.pairwise(fixes))  # each remedy helps
    assert fixes[-1][1] <= 24 or labels[-1] == "use fewer gradient accumulation steps"
    offloaded = estimate(cfg.model_copy(update={"block_offload": 15}), 300)
    assert offloaded.weights_gb == pytest.approx(big.weights_gb / 2)
