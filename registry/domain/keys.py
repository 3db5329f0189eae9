"""LoRA key names: every layout wanlora reads, mapped onto the original Wan module names.

A tensor name is a *prefix family* (how the module path is spelled), a *module* (the original Wan path:
``blocks.0.self_attn.q``, ``blocks.0.norm3``, ``head.modulation``) and a *part* (which tensor of which
algorithm: LoRA's down/up/alpha, LoKr's and LoHa's factors, or a plain weight/bias difference):

- ComfyUI's names, ``diffusion_model.<module>.<part>``: diffusion-pipe and ai-toolkit (``lora_A/B``),
  ComfyUI's Extract/Train LoRA nodes, Kijai, lightx2v and CausVid (``lora_down/up``, ``diff``,
  ``diff_b``), LyCORIS's ``lokr_*`` and ``hada_*``;
- kohya's, ``lora_unet_<module with underscores>.<part>``: musubi-tuner and sd-scripts, and VideoX-Fun,
  which writes ``lora_unet__`` (ComfyUI's loader drops the second underscore);
- diffusers/peft's, ``transformer.<diffusers module>.lora_A/B.weight`` (and ``lora_B.bias``).

The parser never guesses: a name that maps onto no Wan module, or onto a part it does not know, is
refused with what it looks like, so a DoRA, OFT or text-encoder LoRA is named as such.
"""

from __future__ import annotations

import re
from enum import Enum

from registry.domain.errors import InvalidFile

__all__ = [
    "ALGORITHM_OF",
    "LINEAR_PARTS",
    "KeyFormat",
    "LoraPart",
    "canonical_key",
    "diffusers_module",
    "family",
    "is_block_module",
    "is_linear_module",
    "parse_key",
]


class KeyFormat(str, Enum):
    CANONICAL = "canonical"  # what wanlora stores: ComfyUI's names, lora_A/B with block alphas
    KOHYA = "kohya"  # musubi-tuner / sd-scripts: lora_unet_blocks_0_self_attn_q.lora_down.weight + .alpha
    DIFFUSION_PIPE = "diffusion-pipe"  # diffusion-pipe / ai-toolkit: diffusion_model.<module>.lora_A.weight
    DIFFUSERS = "diffusers"  # diffusers / peft: transformer.blocks.0.attn1.to_q.lora_A.weight
    COMFYUI = "comfyui"  # ComfyUI's nodes, Kijai, lightx2v, CausVid: diffusion_model.<module>.lora_down.weight
    VIDEOX_FUN = "videox-fun"  # VideoX-Fun: lora_unet__blocks_0_self_attn_q.lora_down.weight


def family(fmt: KeyFormat) -> str:
    """The spelling of module paths: formats of one family may share a file (LoRA beside diff keys)."""
    if fmt in (KeyFormat.CANONICAL, KeyFormat.DIFFUSION_PIPE, KeyFormat.COMFYUI):
        return "diffusion_model"
    return fmt.value


class LoraPart(str, Enum):
    A = "A"  # LoRA down: (rank, in_features)
    B = "B"  # LoRA up: (out_features, rank)
    ALPHA = "alpha"
    LORA_BIAS = "lora_B.bias"  # peft's lora_bias: a bias delta, scaled like the LoRA
    LOKR_W1 = "lokr_w1"
    LOKR_W1_A = "lokr_w1_a"
    LOKR_W1_B = "lokr_w1_b"
    LOKR_W2 = "lokr_w2"
    LOKR_W2_A = "lokr_w2_a"
    LOKR_W2_B = "lokr_w2_b"
    LOKR_T2 = "lokr_t2"
    HADA_W1_A = "hada_w1_a"
    HADA_W1_B = "hada_w1_b"
    HADA_W2_A = "hada_w2_a"
    HADA_W2_B = "hada_w2_b"
    HADA_T1 = "hada_t1"
    HADA_T2 = "hada_t2"
    DIFF = "diff"  # the full difference of a weight (or of a bare parameter: modulation)
    DIFF_B = "diff_b"  # the difference of a bias


ALGORITHM_OF = {
    **dict.fromkeys((LoraPart.A, LoraPart.B, LoraPart.LORA_BIAS), "lora"),
    **{p: "lokr" for p in LoraPart if p.value.startswith("lokr_")},
    **{p: "loha" for p in LoraPart if p.value.startswith("hada_")},
    LoraPart.DIFF: "diff",
    LoraPart.DIFF_B: "diff",
}
# The parts that change a linear layer through a factorisation (the rest are plain differences).
LINEAR_PARTS = frozenset(p for p, algo in ALGORITHM_OF.items() if algo in ("lora", "lokr", "loha"))

# A block index is ASCII decimal without leading zeros: `blocks.00`, `blocks.٠` or `blocks.０` would name
# block 0 a second way (and \d matches any Unicode digit), so the same weights could pass as new ones.
_INDEX = r"(?:0|[1-9][0-9]{0,2})"
_BLOCK_LINEAR = rf"blocks\.{_INDEX}\.(?:(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)|ffn\.[02])"
_TOP_LINEAR = r"text_embedding\.[02]|time_embedding\.[02]|time_projection\.1|head\.head|img_emb\.proj\.[13]"
_LINEAR = re.compile(rf"{_BLOCK_LINEAR}|{_TOP_LINEAR}")
# What else holds parameters a diff can change: norms, modulation tables, the patch embedding.
_OTHER = re.compile(
    rf"blocks\.{_INDEX}\.(?:norm3|modulation|self_attn\.norm_[qk]|cross_attn\.norm_(?:q|k|k_img))"
    r"|head\.modulation|patch_embedding|img_emb\.proj\.[04]"
)
_BLOCK = re.compile(rf"blocks\.(?P<index>{_INDEX})\.(?P<rest>.+)")

# kohya flattens the dotted path with underscores; these patterns undo it unambiguously.
_FLAT_BLOCK = re.compile(
    rf"blocks_(?P<index>{_INDEX})_(?P<rest>self_attn_(?:q|k|v|o|norm_q|norm_k)"
    r"|cross_attn_(?:q|k|v|o|k_img|v_img|norm_q|norm_k|norm_k_img)|ffn_[02]|norm3|modulation)"
)
_FLAT_TOP = {
    "text_embedding_0": "text_embedding.0", "text_embedding_2": "text_embedding.2",
    "time_embedding_0": "time_embedding.0", "time_embedding_2": "time_embedding.2",
    "time_projection_1": "time_projection.1", "head_head": "head.head", "head_modulation": "head.modulation",
    "patch_embedding": "patch_embedding",
    "img_emb_proj_0": "img_emb.proj.0", "img_emb_proj_1": "img_emb.proj.1",
    "img_emb_proj_3": "img_emb.proj.3", "img_emb_proj_4": "img_emb.proj.4",
}  # fmt: skip
# diffusers module names (WanTransformer3DModel) → original Wan names.
_DIFFUSERS_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
    "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
    "attn2.norm_added_k": "cross_attn.norm_k_img", "norm2": "norm3", "scale_shift_table": "modulation",
}  # fmt: skip
_DIFFUSERS_TOP = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
    "patch_embedding": "patch_embedding",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
}
_TO_DIFFUSERS_BLOCK = {v: k for k, v in _DIFFUSERS_BLOCK.items()}
_TO_DIFFUSERS_TOP = {v: k for k, v in _DIFFUSERS_TOP.items()}

_LYCORIS = {f".{p.value}": p for p in LoraPart if p.value.startswith(("lokr_", "hada_"))}
_DIFF = {".diff": LoraPart.DIFF, ".diff_b": LoraPart.DIFF_B}
_SUFFIX_AB = {".lora_A.weight": LoraPart.A, ".lora_B.weight": LoraPart.B}
_SUFFIX_DOWN_UP = {".lora_down.weight": LoraPart.A, ".lora_up.weight": LoraPart.B}
_ALPHA = {".alpha": LoraPart.ALPHA}
_COMFY_SUFFIXES = {**_SUFFIX_AB, **_SUFFIX_DOWN_UP, **_ALPHA, **_LYCORIS, **_DIFF}
_KOHYA_SUFFIXES = {**_SUFFIX_DOWN_UP, **_ALPHA, **_LYCORIS, **_DIFF}
_DIFFUSERS_SUFFIXES = {**_SUFFIX_AB, **_ALPHA, ".lora_B.bias": LoraPart.LORA_BIAS}
_DIFFUSERS_PREFIXES = ("transformer.", "base_model.model.", "model.")

# Parts of adapters wanlora does not store, to name them when a file holds one.
_UNSUPPORTED = {
    ".dora_scale": "DoRA (a magnitude vector, dora_scale)",
    ".oft_blocks": "OFT (oft_blocks)",
    ".oft_diag": "OFT (oft_diag)",
    ".oft_R": "BOFT (oft_R)",
    ".a1.weight": "GLoRA (a1/a2/b1/b2)",
    ".w_norm": "a norm patch (w_norm)",
    ".set_weight": "a weight replacement (set_weight)",
    ".lora_mid.weight": "LoCon with a Tucker core (lora_mid)",
}
_FORMATS_HINT = (
    "wanlora reads LoRA, LoKr, LoHa and diff weights of the WAN DiT: ComfyUI's names "
    "(diffusion_model.<module>.lora_A/B, lora_down/up, lokr_*, hada_*, diff, diff_b: diffusion-pipe, "
    "ai-toolkit, Kijai, lightx2v, ComfyUI's nodes), kohya's (lora_unet_…: musubi-tuner, sd-scripts, "
    "VideoX-Fun) and diffusers/peft's (transformer.…lora_A/B)"
)


def is_linear_module(module: str) -> bool:
    return _LINEAR.fullmatch(module) is not None


def is_block_module(module: str) -> bool:
    return module.startswith("blocks.")


def _original(module: str) -> str | None:
    return module if (_LINEAR.fullmatch(module) or _OTHER.fullmatch(module)) else None


def _from_diffusers(module: str) -> str | None:
    if module in _DIFFUSERS_TOP:
        return _DIFFUSERS_TOP[module]
    m = _BLOCK.fullmatch(module)
    if m and m["rest"] in _DIFFUSERS_BLOCK:
        return f"blocks.{m['index']}.{_DIFFUSERS_BLOCK[m['rest']]}"
    return None


def diffusers_module(module: str) -> str:
    """The diffusers (WanTransformer3DModel) path of an original Wan module or parameter."""
    if module in _TO_DIFFUSERS_TOP:
        return _TO_DIFFUSERS_TOP[module]
    m = _BLOCK.fullmatch(module)
    if m and m["rest"] in _TO_DIFFUSERS_BLOCK:
        return f"blocks.{m['index']}.{_TO_DIFFUSERS_BLOCK[m['rest']]}"
    raise KeyError(module)


def _from_flat(flat: str) -> str | None:
    if flat in _FLAT_TOP:
        return _FLAT_TOP[flat]
    m = _FLAT_BLOCK.fullmatch(flat)
    if not m:
        return None
    rest = m["rest"]
    for head in ("self_attn_", "cross_attn_", "ffn_"):
        if rest.startswith(head):
            rest = head[:-1] + "." + rest[len(head) :]
            break
    return f"blocks.{m['index']}.{rest}"


def _split(key: str, suffixes: dict[str, LoraPart]) -> tuple[str, LoraPart] | None:
    for suffix in sorted(suffixes, key=len, reverse=True):  # `.diff_b` before `.diff`
        if key.endswith(suffix):
            return key[: -len(suffix)], suffixes[suffix]
    return None


def parse_key(key: str) -> tuple[KeyFormat, str, LoraPart]:
    """Map one tensor name onto (source format, original Wan module, part).

    Raises InvalidFile for a key that is not a weight of the WAN DiT in a known layout, naming what it
    looks like.
    """
    if key.startswith("lora_unet_"):
        fmt, flat = (KeyFormat.VIDEOX_FUN, key[10:]) if key.startswith("lora_unet__") else (KeyFormat.KOHYA, key[10:])
        split = _split(flat.lstrip("_") if fmt is KeyFormat.VIDEOX_FUN else flat, _KOHYA_SUFFIXES)
        module = _from_flat(split[0]) if split else None
        if split and module:
            return fmt, module, split[1]
    elif key.startswith("diffusion_model."):
        split = _split(key[len("diffusion_model.") :], _COMFY_SUFFIXES)
        module = _original(split[0]) if split else None
        if split and module:
            down_up = key.endswith(tuple(_SUFFIX_DOWN_UP))
            return (KeyFormat.COMFYUI if down_up else KeyFormat.DIFFUSION_PIPE), module, split[1]
    else:
        rest = key
        for prefix in _DIFFUSERS_PREFIXES:
            if rest.startswith(prefix):
                rest = rest[len(prefix) :]
                break
        split = _split(rest, _DIFFUSERS_SUFFIXES)
        if split:
            module = _from_diffusers(split[0])
            if module and (is_linear_module(module) or split[1] is LoraPart.ALPHA):
                return KeyFormat.DIFFUSERS, module, split[1]
        # bare original names with a diffusers-style prefix are ai-toolkit's variant
        split = _split(rest, {**_SUFFIX_AB, **_ALPHA, **_LYCORIS})
        module = _original(split[0]) if split else None
        if split and module:
            return KeyFormat.DIFFUSION_PIPE, module, split[1]
    raise _unknown(key)


def _unknown(key: str) -> InvalidFile:
    for suffix, what in _UNSUPPORTED.items():
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            return InvalidFile(
                f"{what} on module {module!r}: wanlora stores LoRA, LoKr, LoHa and diff weights, which "
                "ComfyUI and diffusers apply the same way, and not this kind",
                hint="export the adapter as a plain LoRA (for DoRA: merge it into the weights and extract a "
                "LoRA from the difference, e.g. with ComfyUI's Extract LoRA node)",
            )
    if key.startswith(("lora_te", "text_encoder", "text_encoders.", "lora_te1_", "lora_te2_")):
        return InvalidFile(
            f"tensor {key!r} belongs to a text-encoder LoRA; wanlora registers LoRAs of the WAN DiT",
            hint="save the LoRA without the text encoder (WAN's trainers train the DiT only)",
        )
    known = _split(key, {**_COMFY_SUFFIXES, **_DIFFUSERS_SUFFIXES})
    if known:
        module = known[0]
        for prefix in ("diffusion_model.", "lora_unet__", "lora_unet_", *_DIFFUSERS_PREFIXES):
            module = module.removeprefix(prefix)
        algo = ALGORITHM_OF.get(known[1], "lora")
        return InvalidFile(
            f"tensor {key!r} is not a LoRA weight of the WAN DiT: it puts a {_ALGO_NAMES[algo]} on {module!r}, "
            "which is not one of its layers (WAN 2.1 / 2.2)",
            hint="is this a LoRA for another model? " + _FORMATS_HINT,
        )
    return InvalidFile(
        f"tensor {key!r} is not a LoRA weight of the WAN DiT in a layout wanlora knows", hint=_FORMATS_HINT
    )


_ALGO_NAMES = {"lora": "LoRA", "lokr": "LoKr", "loha": "LoHa", "diff": "diff"}


def canonical_key(module: str, part: LoraPart) -> str:
    """The name wanlora stores a part under: ComfyUI's (``diffusion_model.<module>.<part>``)."""
    if part is LoraPart.ALPHA:
        return f"diffusion_model.{module}.alpha"
    if part in (LoraPart.A, LoraPart.B):
        return f"diffusion_model.{module}.lora_{part.value}.weight"
    if part is LoraPart.LORA_BIAS:
        return f"diffusion_model.{module}.diff_b"
    return f"diffusion_model.{module}.{part.value}"
