"""What wanlora knows about the WAN DiT: base models, their module shapes, and LoRA key formats.

Canonical names are the original Wan module paths (``blocks.0.self_attn.q``), the names ComfyUI's
native model uses; a canonical LoRA file stores ``diffusion_model.<module>.lora_A.weight``,
``.lora_B.weight`` and ``<module>.alpha``, which ComfyUI's native LoRA loader applies directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.domain.errors import InvalidInput
from registry.domain.keys import KeyFormat, LoraPart, canonical_key, parse_key

__all__ = [
    "BASE_MODELS",
    "BaseModel",
    "KeyFormat",
    "LoraPart",
    "base_model",
    "canonical_key",
    "parse_key",
]


_BLOCK = re.compile(r"blocks\.(?P<index>0|[1-9][0-9]{0,2})\.(?P<rest>.+)")
_LINEAR_REST = re.compile(r"(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)|ffn\.[02]")


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
    in_channels: int = 0  # the patch embedding's input: out_channels, plus the image condition for I2V

    @property
    def patch_in(self) -> int:
        return self.in_channels or self.out_channels

    def module_shape(self, module: str) -> tuple[int, int] | None:
        """(out_features, in_features) of a linear module, or None when the model has no such module."""
        d, f = self.dim, self.ffn_dim
        m = _BLOCK.fullmatch(module)
        if m and _LINEAR_REST.fullmatch(m["rest"]):
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

    def parameter_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of one parameter (``blocks.0.norm3.bias``, ``head.modulation``), None when the model
        has none of that name: what a diff or diff_b key must match."""
        d = self.dim
        owner, _, leaf = name.rpartition(".")
        if leaf in ("weight", "bias"):
            linear = self.module_shape(owner)
            if linear is not None:
                return linear if leaf == "weight" else (linear[0],)
            m = _BLOCK.fullmatch(owner)
            if m and int(m["index"]) < self.num_layers:
                rest = m["rest"]
                if rest == "norm3" or (leaf == "weight" and rest.split(".")[-1] in ("norm_q", "norm_k")):
                    return (d,)
                if leaf == "weight" and rest == "cross_attn.norm_k_img" and self.image_cross_attention:
                    return (d,)
            if owner == "patch_embedding":
                return (d, self.patch_in, 1, 2, 2) if leaf == "weight" else (d,)
            if self.image_cross_attention and owner in ("img_emb.proj.0", "img_emb.proj.4"):
                return (1280,) if owner.endswith("0") else (d,)
            return None
        m = _BLOCK.fullmatch(name)
        if m and m["rest"] == "modulation" and int(m["index"]) < self.num_layers:
            return (1, 6, d)
        return (1, 2, d) if name == "head.modulation" else None


BASE_MODELS: dict[str, BaseModel] = {
    m.name: m
    for m in (
        BaseModel("wan2.2-t2v-a14b", 5120, 13824, 40, 16, experts=True),
        BaseModel("wan2.2-i2v-a14b", 5120, 13824, 40, 16, experts=True, in_channels=36),
        BaseModel("wan2.2-ti2v-5b", 3072, 14336, 30, 48, experts=False),
        BaseModel("wan2.1-t2v-14b", 5120, 13824, 40, 16, experts=False),
        BaseModel("wan2.1-i2v-14b", 5120, 13824, 40, 16, experts=False, image_cross_attention=True, in_channels=36),
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
