"""Phase 1 on every form wanlora stores (issue 12): LoKr, LoHa, diff and diff_b files pass the effect
check and generate, their strength scales their change, and switching back to the base model leaves
its weights bit for bit as they were. The LoRA on the head keeps no alpha a diffusers loader rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch

from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.db.engine import Database
from registry.domain.policy import Policy
from tests.conformance.tools import Family, Made, Writer, comfy_names, kohya
from tests.evaluator.test_evaluator import TINY, _evaluate
from tests.helpers import register

pytestmark = pytest.mark.gate
TINY_FAMILY = Family("wan-tiny", {}, {})


def _lokr(seed: int) -> Made:
    w = Writer(kohya(), TINY_FAMILY, seed, dtype=torch.float32)
    for block in (0, 1):
        w.lokr(f"blocks.{block}.self_attn.q", 4, 2, alpha=2.0)
        w.lokr(f"blocks.{block}.ffn.0", 4, None, alpha=1.0)
    return w.made


def _loha(seed: int) -> Made:
    w = Writer(comfy_names, TINY_FAMILY, seed, dtype=torch.float32)
    for block in (0, 1):
        w.loha(f"blocks.{block}.cross_attn.v", 2, alpha=2.0)
        w.loha(f"blocks.{block}.self_attn.o", 2, alpha=2.0)
    return w.made


def _diffs(seed: int) -> Made:
    """Kijai's kind: a LoRA with its diff_b, norm and modulation diffs, and a LoRA on the head."""
    w = Writer(comfy_names, TINY_FAMILY, seed, dtype=torch.float32)
    for block in (0, 1):
        w.lora(f"blocks.{block}.self_attn.q", 4, alpha=8.0)
        w.diff(f"blocks.{block}.self_attn.q.bias", (16,), bias=True)
        w.diff(f"blocks.{block}.norm3.weight", (16,))
        w.diff(f"blocks.{block}.modulation", (1, 6, 16))
    w.lora("head.head", 4, alpha=8.0)
    return w.made


def _scaled(made: Made, factor: float) -> Made:
    made.tensors = {k: v * factor if not k.endswith(".alpha") else v for k, v in made.tensors.items()}
    return made


@pytest.fixture
def wl(db: Database, store: LocalStore) -> Wanlora:
    return Wanlora(db=db, store=store, actor="tester", policy=Policy(TINY))


@pytest.mark.parametrize(("kind", "make"), [("lokr", _lokr), ("loha", _loha), ("diff", _diffs)])
def test_phase_1_passes_a_file_of_each_stored_form(kind: str, make: object, wl: Wanlora, tmp_path: Path) -> None:
    made = _scaled(make(3), 15.0)  # type: ignore[operator]
    path = made.save(tmp_path / f"{kind}.safetensors")
    version = register(wl, tmp_path, version="1.0.0", file=path, base_model="wan-tiny")
    assert version.files[0].source_format
    result = _evaluate(wl, tmp_path, "1.0.0", ["technical"])["phases"]["technical"]
    assert result["passed"], result["summary"]
    effect = result["effect"]
    assert 0 < effect["0.6"] < effect["0.8"] < effect["1.0"], effect


def test_patches_come_off_exactly(tmp_path: Path) -> None:
    from evaluator.generate import Generator
    from registry.files.ingest import ingest_lora

    store = LocalStore(tmp_path / "store")
    stored = store.path(ingest_lora(_scaled(_diffs(1), 15.0).save(tmp_path / "d.safetensors"), store).sha256)
    from safetensors import safe_open

    with safe_open(str(stored), framework="pt") as f:
        keys = set(f.keys())
    assert "diffusion_model.head.head.lora_B.weight" in keys and "diffusion_model.head.head.alpha" not in keys
    generator = Generator.load("wan-tiny", tiny=True)
    model = generator.models.transformers["single"]
    generator.add_lora("d", {"single": stored})
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    generator.use("d", 0.7)
    changed = {k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])}
    # norm3 is diffusers' norm2, modulation its scale_shift_table; the LoRA's own weights are peft's
    assert changed == {
        f"blocks.{b}.{p}" for b in (0, 1) for p in ("norm2.weight", "scale_shift_table", "attn1.to_q.base_layer.bias")
    }
    generator.use(None)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key
