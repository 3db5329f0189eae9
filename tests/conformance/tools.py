"""LoRA files written with each tool's own key names, dtypes and alpha conventions, and the delta each
tool means by them (``scale × B @ A`` for a LoRA, LyCORIS's formulas for LoKr and LoHa).

The conventions, from each tool's source:

- musubi-tuner (``networks/lora_wan.py``, kohya's ``LoRAModule``): ``lora_unet_<module, dots as
  underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, everything cast to the save dtype
  (bf16, the alpha too); scale alpha/rank. ``convert_lora.py --target default`` writes
  ``torch.tensor(rank)``: an int64 alpha. Its LyCORIS networks (``lycoris.kohya``) write ``lokr_w1``,
  ``lokr_w2_a``, ``lokr_w2_b`` or ``hada_w1_a``… with a float alpha under the same prefix.
- diffusion-pipe (``utils/saver.py``): peft's state dict renamed to ``diffusion_model.<module>.lora_A/B
  .weight``, no alpha (peft's lora_alpha = rank: scale 1); LyCORIS adapters under the same prefix.
- ai-toolkit: ``diffusion_model.<module>.lora_A/B.weight`` without alpha; its LoKr keeps both Kronecker
  factors whole (``lokr_w1``, ``lokr_w2``) beside an alpha that LyCORIS then ignores (scale 1).
- diffusers/peft (``WanLoraLoaderMixin.save_lora_weights``, ``get_peft_model_state_dict``):
  ``transformer.<diffusers module>.lora_A/B.weight``; the LoraConfig goes into the ``lora_adapter_metadata``
  header as JSON (``transformer.``-prefixed keys from a pipeline, bare keys from
  ``model.save_lora_adapter``); scale lora_alpha/r, or lora_alpha/√r with ``use_rslora``, and
  ``alpha_pattern`` per module.
- ComfyUI's Extract LoRA node, Kijai's extractions, lightx2v and CausVid: ``diffusion_model.<module>
  .lora_down/lora_up.weight`` (+ ``.alpha`` = rank for Kijai and lightx2v), ``.diff_b`` for the biases,
  ``.diff`` for norms, modulation and whole layers (lightx2v's ``head.head.diff``); LoRAs on the text
  and time embedders, ``time_projection``, ``img_emb`` and the head.
- VideoX-Fun (``videox_fun/utils/lora_utils.py``): ``lora_unet__<module>.lora_down/up.weight`` with a
  float alpha (the double underscore ComfyUI's ``convert_lora_wan_fun`` drops).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from registry.domain.keys import diffusers_module

Delta = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Family:
    """A base model at its real sizes. The models the loaders are given have its real widths but only the
    two blocks the files touch (a layer count changes no module's shape, and building 40 blocks for each
    file would be most of the matrix's time); register checks against the full model."""

    base: str
    comfy: dict[str, object]  # comfy.ldm.wan.model.WanModel kwargs
    diffusers: dict[str, object]  # diffusers.WanTransformer3DModel kwargs

    @property
    def dim(self) -> int:
        return int(self.comfy["dim"])  # type: ignore[call-overload]


def _family(base: str, dim: int, ffn: int, in_dim: int, out_dim: int, i2v: bool = False, layers: int = 2) -> Family:
    comfy = dict(model_type="i2v" if i2v else "t2v", dim=dim, ffn_dim=ffn, num_heads=dim // 128,
                 num_layers=layers, in_dim=in_dim, out_dim=out_dim)  # fmt: skip
    diffusers: dict[str, object] = dict(patch_size=(1, 2, 2), num_attention_heads=dim // 128, attention_head_dim=128,
                                        in_channels=in_dim, out_channels=out_dim, text_dim=4096, freq_dim=256,
                                        ffn_dim=ffn, num_layers=layers)  # fmt: skip
    if i2v:
        diffusers |= {"image_dim": 1280, "added_kv_proj_dim": dim}
    return Family(base, comfy, diffusers)


FAMILIES = {
    f.base: f
    for f in (
        _family("wan2.1-t2v-14b", 5120, 13824, 16, 16),
        _family("wan2.1-i2v-14b", 5120, 13824, 36, 16, i2v=True),
        _family("wan2.2-t2v-a14b", 5120, 13824, 16, 16),
        _family("wan2.2-ti2v-5b", 3072, 14336, 48, 48),
    )
}


@dataclass
class Made:
    """A file as a tool writes it, and the delta the tool means for each changed parameter."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    deltas: dict[str, Delta] = field(default_factory=dict)  # "blocks.0.self_attn.q.weight" -> delta

    def save(self, path: Path) -> Path:
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path), metadata=self.metadata or None)
        return path


def _shape(family: Family, module: str) -> tuple[int, int]:
    from registry.domain.wan import BASE_MODELS

    shape = BASE_MODELS[family.base].module_shape(module)
    assert shape is not None, (family.base, module)
    return shape


def _rand(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen) * 0.02).to(dtype)


class Writer:
    """Adds modules to a :class:`Made` in one tool's key names."""

    def __init__(self, name: Callable[[str], str], family: Family, seed: int, dtype: torch.dtype = torch.bfloat16):
        self.name, self.family, self.dtype = name, family, dtype
        self.gen = torch.Generator().manual_seed(seed)
        self.made = Made()

    def lora(
        self, module: str, rank: int, *, alpha: float | None, scale: float | None = None, down: str = "lora_down",
        alpha_dtype: torch.dtype = torch.float32,
    ) -> None:  # fmt: skip
        """A LoRA; ``scale`` is what the tool multiplies B @ A by (alpha/rank unless said otherwise)."""
        out_f, in_f = _shape(self.family, module)
        a, b = _rand(self.gen, rank, in_f, dtype=self.dtype), _rand(self.gen, out_f, rank, dtype=self.dtype)
        up = "lora_up" if down == "lora_down" else "lora_B"
        key = self.name(module)
        self.made.tensors[f"{key}.{down}.weight"] = a
        self.made.tensors[f"{key}.{up}.weight"] = b
        if alpha is not None:
            self.made.tensors[f"{key}.alpha"] = torch.tensor(alpha).to(alpha_dtype)
        s = scale if scale is not None else (alpha / rank if alpha is not None else 1.0)
        self.made.deltas[f"{module}.weight"] = lambda: (b.float() @ a.float()).mul_(s)

    def lokr(self, module: str, factor: int, rank: int | None, alpha: float) -> None:
        """LoKr: w1 whole (factor × factor); w2 as w2_a @ w2_b of ``rank``, or whole when rank is None."""
        out_f, in_f = _shape(self.family, module)
        key = self.name(module)
        w1 = _rand(self.gen, factor, factor, dtype=self.dtype) * 10
        self.made.tensors[f"{key}.lokr_w1"] = w1
        self.made.tensors[f"{key}.alpha"] = torch.tensor(alpha)
        o2, i2 = out_f // factor, in_f // factor
        if rank is None:
            w2 = _rand(self.gen, o2, i2, dtype=self.dtype)
            self.made.tensors[f"{key}.lokr_w2"] = w2
            self.made.deltas[f"{module}.weight"] = lambda: torch.kron(w1.float(), w2.float())  # scale 1
            return
        w2a, w2b = _rand(self.gen, o2, rank, dtype=self.dtype), _rand(self.gen, rank, i2, dtype=self.dtype)
        self.made.tensors[f"{key}.lokr_w2_a"] = w2a
        self.made.tensors[f"{key}.lokr_w2_b"] = w2b
        self.made.deltas[f"{module}.weight"] = lambda: torch.kron(w1.float(), w2a.float() @ w2b.float()).mul_(
            alpha / rank
        )

    def loha(self, module: str, rank: int, alpha: float) -> None:
        out_f, in_f = _shape(self.family, module)
        key = self.name(module)
        t = {p: _rand(self.gen, *s, dtype=self.dtype) * 5 for p, s in (
            ("hada_w1_a", (out_f, rank)), ("hada_w1_b", (rank, in_f)),
            ("hada_w2_a", (out_f, rank)), ("hada_w2_b", (rank, in_f)))}  # fmt: skip
        for p, v in t.items():
            self.made.tensors[f"{key}.{p}"] = v
        self.made.tensors[f"{key}.alpha"] = torch.tensor(alpha)
        d = {p: v.float() for p, v in t.items()}
        self.made.deltas[f"{module}.weight"] = lambda: (
            (alpha / rank) * ((d["hada_w1_a"] @ d["hada_w1_b"]) * (d["hada_w2_a"] @ d["hada_w2_b"]))
        )

    def diff(self, param: str, shape: tuple[int, ...], *, bias: bool = False) -> None:
        """A whole difference: ``<owner>.diff`` (a weight, or a bare parameter) or ``<owner>.diff_b``."""
        owner = param.rsplit(".", 1)[0] if param.endswith((".weight", ".bias")) else param
        value = _rand(self.gen, *shape, dtype=self.dtype)
        self.made.tensors[f"{self.name(owner)}.{'diff_b' if bias else 'diff'}"] = value
        self.made.deltas[param] = lambda: value.float()


def kohya(prefix: str = "lora_unet_") -> Callable[[str], str]:
    return lambda module: prefix + module.replace(".", "_")


def comfy_names(module: str) -> str:
    return f"diffusion_model.{module}"


def diffusers_names(prefix: str = "transformer.") -> Callable[[str], str]:
    return lambda module: prefix + diffusers_module(module)


def peft_metadata(r: int, alpha: float, *, prefixed: bool, **extra: object) -> dict[str, str]:
    """The ``lora_adapter_metadata`` header diffusers writes (a LoraConfig as JSON)."""
    config = {"r": r, "lora_alpha": alpha, "target_modules": ["to_q", "to_k"], "lora_dropout": 0.0, **extra}
    if prefixed:
        config = {f"transformer.{k}": v for k, v in config.items()}
    return {"lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True), "format": "pt"}


def rslora_scale(alpha: float, r: int) -> float:
    return alpha / math.sqrt(r)
