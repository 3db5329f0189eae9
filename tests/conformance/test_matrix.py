"""The format-conformance matrix: every trainer × model family × variant, written with the tool's own
conventions (``tools.py``), must

- register;
- sync into a ComfyUI folder, where ComfyUI's own loader (``../shared/vendor``, in-process in a worker:
  ``tests/comfyui/lora_probe.py``) loads the synced file with no key left unloaded and applies exactly
  the tool's intended delta;
- apply the same delta in diffusers: through diffusers' own Wan LoRA loader into a real
  ``WanTransformer3DModel`` of the family's size (on the meta device, with only the adapted layers made
  real) where the file is plain LoRA (diffusers reads no LoKr, LoHa or diff), and through the
  evaluator's loading into the same model for every file.

Deltas are compared whole: ‖got − intended‖ / ‖intended‖ ≤ 1e-4.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders import WanLoraLoaderMixin

from registry.backends.local import Wanlora
from registry.domain.keys import diffusers_module
from registry.domain.register import RegisterRequest
from registry.sync.comfyui import sync_comfyui
from tests.conformance.tools import (
    FAMILIES,
    Family,
    Made,
    Writer,
    comfy_names,
    diffusers_names,
    kohya,
    peft_metadata,
    rslora_scale,
)

pytestmark = [pytest.mark.conformance]
TOLERANCE = 1e-4
_SHM = Path("/dev/shm")  # the deltas ComfyUI computes pass through memory, not the disk
B0, B1 = "blocks.0.self_attn.q", "blocks.1.cross_attn.o"


def _musubi(f: Family, seed: int) -> Made:
    w = Writer(kohya(), f, seed)
    w.lora(B0, 4, alpha=2.0, alpha_dtype=torch.bfloat16)
    w.lora(B1, 4, alpha=2.0, alpha_dtype=torch.bfloat16)
    return w.made


def _musubi_int64(f: Family, seed: int) -> Made:
    w = Writer(kohya(), f, seed)
    w.lora(B0, 4, alpha=4, alpha_dtype=torch.int64)
    return w.made


def _lokr(names: Callable[[str], str]) -> Callable[[Family, int], Made]:
    def make(f: Family, seed: int) -> Made:
        w = Writer(names, f, seed)
        w.lokr(B0, 8, 4, alpha=2.0)
        return w.made

    return make


def _loha(names: Callable[[str], str]) -> Callable[[Family, int], Made]:
    def make(f: Family, seed: int) -> Made:
        w = Writer(names, f, seed)
        w.loha(B1, 4, alpha=2.0)
        return w.made

    return make


def _peft_plain(f: Family, seed: int) -> Made:
    w = Writer(comfy_names, f, seed)
    w.lora(B0, 4, alpha=None, down="lora_A")
    w.lora(B1, 8, alpha=None, down="lora_A")
    return w.made


def _ai_toolkit_lokr(f: Family, seed: int) -> Made:
    w = Writer(comfy_names, f, seed)
    w.lokr(B0, 4, None, alpha=1.0)
    return w.made


def _diffusers(alpha: float, *, prefixed: bool = True, pattern: float | None = None, rslora: bool = False):  # type: ignore[no-untyped-def]
    def make(f: Family, seed: int) -> Made:
        w = Writer(diffusers_names(), f, seed, dtype=torch.float32)
        extra: dict[str, object] = {}
        if pattern is not None:
            extra["alpha_pattern"] = {diffusers_module(B1): pattern}
        if rslora:
            extra["use_rslora"] = True
        scale = rslora_scale(alpha, 4) if rslora else alpha / 4
        w.lora(B0, 4, alpha=None, down="lora_A", scale=scale)
        w.lora(B1, 4, alpha=None, down="lora_A", scale=(pattern / 4) if pattern is not None else scale)
        w.made.metadata = peft_metadata(4, alpha, prefixed=prefixed, **extra)
        return w.made

    return make


def _diffusers_non_block(f: Family, seed: int) -> Made:
    w = Writer(diffusers_names(), f, seed)
    for module in (B0, "head.head", "text_embedding.0"):
        w.lora(module, 4, alpha=None, down="lora_A", scale=2.0)
    w.made.metadata = peft_metadata(4, 8, prefixed=True)
    return w.made


def _comfy_extract(f: Family, seed: int) -> Made:
    """ComfyUI's Extract LoRA node with bias_diff: lora_down/up without alpha, diff_b, diff on the norms."""
    d = f.dim
    w = Writer(comfy_names, f, seed)
    w.lora(B0, 8, alpha=None)
    w.diff(f"{B0}.bias", (d,), bias=True)
    w.diff("blocks.0.norm3.weight", (d,))
    w.diff("blocks.0.norm3.bias", (d,), bias=True)
    w.diff("blocks.0.self_attn.norm_q.weight", (d,))
    return w.made


def _kijai(f: Family, seed: int) -> Made:
    """Kijai's extractions: alpha = rank, LoRAs on the embedders and the head, diff_b, modulation diffs."""
    d = f.dim
    w = Writer(comfy_names, f, seed)
    for module in (B0, "text_embedding.2", "time_embedding.0", "head.head"):
        w.lora(module, 4, alpha=4.0)
    w.diff(f"{B0}.bias", (d,), bias=True)
    w.diff("blocks.0.modulation", (1, 6, d))
    return w.made


def _lightx2v(f: Family, seed: int) -> Made:
    """lightx2v's distill LoRAs: a whole head.head diff with its diff_b, and head.modulation."""
    d = f.dim
    out = int(f.comfy["out_dim"]) * 4  # type: ignore[call-overload]
    w = Writer(comfy_names, f, seed)
    w.lora(B0, 4, alpha=8.0)
    w.diff("head.head.weight", (out, d))
    w.diff("head.head.bias", (out,), bias=True)
    w.diff("head.modulation", (1, 2, d))
    return w.made


def _causvid(f: Family, seed: int) -> Made:
    w = Writer(comfy_names, f, seed)
    w.lora(B0, 4, alpha=4.0)
    w.lora(B1, 4, alpha=4.0)
    w.diff("blocks.0.ffn.0.bias", (int(f.comfy["ffn_dim"]),), bias=True)  # type: ignore[call-overload]
    return w.made


def _videox_fun(f: Family, seed: int) -> Made:
    w = Writer(kohya("lora_unet__"), f, seed)
    w.lora(B0, 4, alpha=2.0)
    w.lora("blocks.0.cross_attn.k", 4, alpha=2.0)  # ComfyUI tells VideoX-Fun files by this key
    return w.made


def _kijai_i2v(f: Family, seed: int) -> Made:
    w = Writer(comfy_names, f, seed)
    for module in ("blocks.0.cross_attn.k_img", "img_emb.proj.1"):
        w.lora(module, 4, alpha=8.0)
    w.diff("img_emb.proj.0.weight", (1280,))
    w.diff("img_emb.proj.0.bias", (1280,), bias=True)
    return w.made


@dataclass(frozen=True)
class Variant:
    tool: str
    name: str
    make: Callable[[Family, int], Made]
    families: tuple[str, ...] = ("wan2.1-t2v-14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b")


VARIANTS = [
    Variant("musubi-tuner", "lora, bf16 alpha", _musubi),
    Variant("musubi-tuner", "convert_lora default, int64 alpha", _musubi_int64),
    Variant("musubi-tuner", "lycoris lokr", _lokr(kohya())),
    Variant("musubi-tuner", "lycoris loha", _loha(kohya())),
    Variant("diffusion-pipe", "lora, no alpha", _peft_plain),
    Variant("diffusion-pipe", "lycoris lokr", _lokr(comfy_names)),
    Variant("diffusion-pipe", "lycoris loha", _loha(comfy_names)),
    Variant("ai-toolkit", "lora, no alpha", _peft_plain),
    Variant("ai-toolkit", "lokr, whole factors", _ai_toolkit_lokr),
    Variant("diffusers", "lora_alpha = 2 x rank", _diffusers(8)),
    Variant("diffusers", "save_lora_adapter, alpha_pattern", _diffusers(4, prefixed=False, pattern=16)),
    Variant("diffusers", "use_rslora", _diffusers(8, rslora=True)),
    Variant("diffusers", "embedders and head", _diffusers_non_block),
    Variant("comfyui", "extract lora node, diff_b and norm diffs", _comfy_extract),
    Variant("kijai", "embedders, head, diff_b, modulation", _kijai),
    Variant("kijai", "i2v: k_img and img_emb", _kijai_i2v, ("wan2.1-i2v-14b",)),
    Variant("lightx2v", "head diff", _lightx2v),
    Variant("causvid", "lora and diff_b", _causvid),
    Variant("videox-fun", "lora_unet__", _videox_fun),
]
ROWS = [pytest.param(v, fam, id=f"{v.tool}:{v.name}:{fam}") for v in VARIANTS for fam in v.families]


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got = got.detach().float()
    scale = max(float(torch.linalg.vector_norm(want)), 1e-30)
    return float(torch.linalg.vector_norm(got.sub_(want) if got is not want else got - want)) / scale


@pytest.mark.parametrize(("variant", "family_name"), ROWS)
def test_tool_file_registers_syncs_and_applies_its_delta(
    variant: Variant, family_name: str, wl: Wanlora, tmp_path: Path, comfyui_probe: Callable[..., dict]
) -> None:
    family = FAMILIES[family_name]
    pair = family_name.endswith("a14b")
    made = {role: variant.make(family, seed) for role, seed in (("high", 1), ("low", 2))[: 2 if pair else 1]}
    paths = {role: m.save(tmp_path / f"{variant.tool}-{role}.safetensors") for role, m in made.items()}
    version = wl.register(
        RegisterRequest(
            project="default", lora="conformance", file=paths["high"], low_noise=paths.get("low"),
            version="1.0.0", changelog=f"{variant.tool}: {variant.name}", category="style", base_model=family_name,
        )
    )  # fmt: skip
    assert version.version == "1.0.0"
    with wl.registry() as reg:
        reg.promote(project="default", name="conformance", version="1.0.0")
        targets = reg.current_targets(project=None)
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    report = sync_comfyui(targets, wl.store, comfy)
    synced = sorted((comfy / "models" / "loras").rglob("*.safetensors"))
    assert len(synced) == len(made) and len(report.copied) == len(made)
    for path in synced:
        role = "low" if "low" in path.name else "high"
        # The low-noise expert's file has the high-noise one's layout: its deltas are sampled (one).
        _check_file(path, made[role], family, comfyui_probe, tmp_path, sample=role == "low")


def _check_file(
    path: Path, made: Made, family: Family, probe: Callable[..., dict], tmp: Path, *, sample: bool = False
) -> None:
    from evaluator.weights import resolve, split_stored

    loaded = probe(op="load", file=str(path), model=family.comfy)
    assert loaded["unloaded"] == [], f"ComfyUI left keys unloaded: {loaded['unloaded']}"
    assert sorted(loaded["patched"]) == sorted(f"diffusion_model.{p}" for p in made.deltas)

    model = _meta_model(family, made)
    lora, patches = split_stored(path)
    plain = all(k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha")) for k in _keys(path))
    if plain:  # diffusers' own Wan loader reads the synced file
        model.load_lora_adapter(WanLoraLoaderMixin.lora_state_dict(str(path)), adapter_name="x", prefix="transformer")
    if lora:
        model.load_lora_adapter(lora, adapter_name="evaluator", prefix="transformer")
    out = _SHM / f"wanlora-delta-{os.getpid()}.npy" if _SHM.is_dir() else tmp / "delta.npy"
    for param, intended in list(made.deltas.items())[: 1 if sample else None]:
        want = intended().float()
        probe(op="delta", key=f"diffusion_model.{param}", out=str(out))
        got = torch.from_numpy(np.load(out))
        out.unlink()
        assert _rel(got, want) <= TOLERANCE, f"ComfyUI: {param} off by {_rel(got, want):.2e}"
        ours = _evaluator_delta(model, param, patches, resolve)
        assert _rel(ours, want) <= TOLERANCE, f"evaluator: {param} off by {_rel(ours, want):.2e}"
        if plain:
            official = model.get_submodule(diffusers_module(param.rsplit(".", 1)[0])).get_delta_weight("x")
            assert _rel(official, want) <= TOLERANCE, f"diffusers: {param} off by {_rel(official, want):.2e}"


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _meta_model(family: Family, made: Made) -> torch.nn.Module:
    """The family's WanTransformer3DModel on the meta device, with only the layers the file changes real."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**family.diffusers)
    for param in made.deltas:
        owner = param.rsplit(".", 1)[0] if param.endswith((".weight", ".bias")) else param
        target = diffusers_module(owner)
        if target.endswith("scale_shift_table"):
            parent, _, leaf = target.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            setattr(holder, leaf, torch.nn.Parameter(torch.zeros(getattr(holder, leaf).shape)))
        else:
            model.get_submodule(target).to_empty(device="cpu")  # real, untouched memory: only shapes matter
    return model


def _evaluator_delta(model: torch.nn.Module, param: str, patches: list, resolve: Callable) -> torch.Tensor:
    """What the evaluator adds to one parameter at strength 1: its peft adapter's delta and its patches."""
    owner, _, leaf = param.rpartition(".") if param.endswith((".weight", ".bias")) else (param, "", "")
    target = diffusers_module(owner)
    total: torch.Tensor | None = None
    if leaf == "weight":
        layer = model.get_submodule(target)
        if hasattr(layer, "get_delta_weight") and "evaluator" in getattr(layer, "lora_A", {}):
            total = layer.get_delta_weight("evaluator").detach()
    for patch in patches:
        if patch.target == target and patch.leaf == (leaf or "weight"):
            delta = patch.delta(resolve(model, patch).shape)
            total = delta if total is None else total + delta
    assert total is not None, f"the evaluator does not change {param}"
    return total
