"""What wanlora knows about the WAN DiT: base models, their module shapes, and LoRA key formats.

Canonical names are the original Wan module paths (``blocks.0.self_attn.q``), the names ComfyUI's
native model uses; a canonical LoRA file stores ``diffusion_model.<module>.lora_A.weight``,
``.lora_B.weight`` and ``<module>.alpha``, which ComfyUI's native LoRA loader applies directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from registry.domain.errors import InvalidFile, InvalidInput

__all__ = [
    "BASE_MODELS",
    "BaseModel",
    "KeyFormat",
    "LoraPart",
    "base_model",
    "canonical_key",
    "parse_key",
]


@dataclass(frozen=True)
class BaseModel:
    name: str
    dim: int
    ffn_dim: int
    num_layers: int
    out_channels: int
    experts: bool  # A14B: a high-noise and a low-noise expert, so a LoRA version is a pair of files
    image_cross_attention: bool = False
    text_dim: int = 4096
    freq_dim: int = 256

    def module_shape(self, module: str) -> tuple[int, int] | None:
        """(out_features, in_features) of a linear module, or None when the model has no such module."""
        d, f = self.dim, self.ffn_dim
        m = _BLOCK.fullmatch(module)
        if m:
            if int(m["index"]) >= self.num_layers:
                return None
            rest = m["rest"]
            if rest in {"ffn.0"}:
                return (f, d)
            if rest in {"ffn.2"}:
                return (d, f)
            if rest.endswith(("k_img", "v_img")) and not self.image_cross_attention:
                return None
            return (d, d)
        fixed = {
            "text_embedding.0": (d, self.text_dim),
            "text_embedding.2": (d, d),
            "time_embedding.0": (d, self.freq_dim),
            "time_embedding.2": (d, d),
            "time_projection.1": (6 * d, d),
            "head.head": (self.out_channels * 4, d),
        }
        if self.image_cross_attention:
            fixed |= {"img_emb.proj.1": (1280, 1280), "img_emb.proj.3": (d, 1280)}
        return fixed.get(module)


BASE_MODELS: dict[str, BaseModel] = {
    m.name: m
    for m in (
        BaseModel("wan2.2-t2v-a14b", 5120, 13824, 40, 16, experts=True),
        BaseModel("wan2.2-i2v-a14b", 5120, 13824, 40, 16, experts=True),
        BaseModel("wan2.2-ti2v-5b", 3072, 14336, 30, 48, experts=False),
        BaseModel("wan2.1-t2v-14b", 5120, 13824, 40, 16, experts=False),
        BaseModel("wan2.1-i2v-14b", 5120, 13824, 40, 16, experts=False, image_cross_attention=True),
        BaseModel("wan2.1-t2v-1.3b", 1536, 8960, 30, 16, experts=False),
        # Tiny random models (trainer tests and the demo on CPU): the real layout at toy sizes.
        BaseModel("wan-tiny", 16, 32, 2, 16, experts=False, text_dim=32, freq_dim=32),
        BaseModel("wan-tiny-a14b", 16, 32, 2, 16, experts=True, text_dim=32, freq_dim=32),
        # The smallest WAN DiT that ComfyUI's model detection recognises (dim ≥ 128): node-pack tests.
        BaseModel("wan-tiny-comfy", 128, 256, 1, 16, experts=False),
        BaseModel("wan-tiny-comfy-a14b", 128, 256, 1, 16, experts=True),
    )
}

# The boundary (fraction of the 1000 training timesteps) at and above which the high-noise expert runs.
EXPERT_BOUNDARY = {
    "wan2.2-t2v-a14b": 0.875,
    "wan2.2-i2v-a14b": 0.9,
    "wan-tiny-a14b": 0.875,
    "wan-tiny-comfy-a14b": 0.875,
}


def base_model(name: str) -> BaseModel:
    try:
        return BASE_MODELS[name]
    except KeyError:
        raise InvalidInput(f"unknown base model {name!r}", hint=f"choose one of: {', '.join(BASE_MODELS)}") from None


class KeyFormat(str, Enum):
    CANONICAL = "canonical"  # diffusion_model.<wan module>.lora_A/B.weight + <module>.alpha
    KOHYA = "kohya"  # musubi-tuner / sd-scripts: lora_unet_blocks_0_self_attn_q.lora_down.weight + .alpha
    DIFFUSION_PIPE = "diffusion-pipe"  # diffusion-pipe / ai-toolkit: diffusion_model.<module>.lora_A.weight
    DIFFUSERS = "diffusers"  # diffusers / peft: transformer.blocks.0.attn1.to_q.lora_A.weight


class LoraPart(str, Enum):
    A = "A"  # down: (rank, in_features)
    B = "B"  # up: (out_features, rank)
    ALPHA = "alpha"


# A block index is ASCII decimal without leading zeros: `blocks.00`, `blocks.٠` or `blocks.０` would name
# block 0 a second way (and \d matches any Unicode digit), so the same weights could pass as new ones.
_INDEX = r"(?:0|[1-9][0-9]{0,2})"
_BLOCK = re.compile(
    rf"blocks\.(?P<index>{_INDEX})\.(?P<rest>(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)|ffn\.[02])"
)
_TOP = re.compile(r"text_embedding\.[02]|time_embedding\.[02]|time_projection\.1|head\.head|img_emb\.proj\.[13]")
# kohya flattens the dotted path with underscores; these patterns undo it unambiguously.
_KOHYA_MODULE = re.compile(
    rf"blocks_(?P<index>{_INDEX})_(?P<attn>self_attn|cross_attn)_(?P<proj>q|k|v|o|k_img|v_img)"
    rf"|blocks_(?P<findex>{_INDEX})_ffn_(?P<ffn>[02])"
    r"|(?P<top>text_embedding_[02]|time_embedding_[02]|time_projection_1|head_head|img_emb_proj_[13])"
)
_KOHYA_TOP = {
    "text_embedding_0": "text_embedding.0", "text_embedding_2": "text_embedding.2",
    "time_embedding_0": "time_embedding.0", "time_embedding_2": "time_embedding.2",
    "time_projection_1": "time_projection.1", "head_head": "head.head",
    "img_emb_proj_1": "img_emb.proj.1", "img_emb_proj_3": "img_emb.proj.3",
}  # fmt: skip
# diffusers module names (WanTransformer3DModel) → original Wan names.
_DIFFUSERS_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}  # fmt: skip
_DIFFUSERS_TOP = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
}
_DIFFUSERS_BLOCK_RE = re.compile(rf"blocks\.(?P<index>{_INDEX})\.(?P<rest>.+)")
_AB_SUFFIX = {".lora_A.weight": LoraPart.A, ".lora_B.weight": LoraPart.B, ".alpha": LoraPart.ALPHA}
_KOHYA_SUFFIX = {".lora_down.weight": LoraPart.A, ".lora_up.weight": LoraPart.B, ".alpha": LoraPart.ALPHA}


def _original_module(module: str) -> str | None:
    return module if (_BLOCK.fullmatch(module) or _TOP.fullmatch(module)) else None


def _diffusers_module(module: str) -> str | None:
    if module in _DIFFUSERS_TOP:
        return _DIFFUSERS_TOP[module]
    m = _DIFFUSERS_BLOCK_RE.fullmatch(module)
    if m and m["rest"] in _DIFFUSERS_BLOCK:
        return f"blocks.{m['index']}.{_DIFFUSERS_BLOCK[m['rest']]}"
    return None


def _kohya_module(flat: str) -> str | None:
    m = _KOHYA_MODULE.fullmatch(flat)
    if not m:
        return None
    if m["attn"]:
        return f"blocks.{m['index']}.{m['attn']}.{m['proj']}"
    if m["ffn"]:
        return f"blocks.{m['findex']}.ffn.{m['ffn']}"
    return _KOHYA_TOP[m["top"]]


def _split(key: str, suffixes: dict[str, LoraPart]) -> tuple[str, LoraPart] | None:
    for suffix, part in suffixes.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def parse_key(key: str) -> tuple[KeyFormat, str, LoraPart]:
    """Map one tensor name onto (source format, original Wan module, LoRA part).

    Raises InvalidFile for a key that is not a LoRA tensor of the Wan DiT in a known format.
    """
    if key.startswith("lora_unet_"):
        split = _split(key[len("lora_unet_") :], _KOHYA_SUFFIX)
        module = _kohya_module(split[0]) if split else None
        if split and module:
            return KeyFormat.KOHYA, module, split[1]
    elif key.startswith("diffusion_model."):
        split = _split(key[len("diffusion_model.") :], _AB_SUFFIX)
        module = _original_module(split[0]) if split else None
        if split and module:
            return KeyFormat.DIFFUSION_PIPE, module, split[1]
    else:
        rest = key
        for prefix in ("transformer.", "base_model.model.", "model."):
            if rest.startswith(prefix):
                rest = rest[len(prefix) :]
                break
        split = _split(rest, _AB_SUFFIX)
        if split:
            module = _diffusers_module(split[0])
            if module:
                return KeyFormat.DIFFUSERS, module, split[1]
            # bare original names with a diffusers-style prefix are ai-toolkit's variant
            module = _original_module(split[0])
            if module:
                return KeyFormat.DIFFUSION_PIPE, module, split[1]
    raise InvalidFile(
        f"tensor {key!r} is not a LoRA weight of the WAN DiT in a known format",
        hint="wanlora reads musubi-tuner/sd-scripts (lora_unet_…lora_down/up), diffusion-pipe/ai-toolkit "
        "(diffusion_model.…lora_A/B) and diffusers/peft (transformer.…lora_A/B) files",
    )


def canonical_key(module: str, part: LoraPart) -> str:
    if part is LoraPart.ALPHA:
        return f"diffusion_model.{module}.alpha"
    return f"diffusion_model.{module}.lora_{part.value}.weight"
