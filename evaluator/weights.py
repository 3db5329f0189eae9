"""Every form wanlora stores, applied to a diffusers WAN DiT the way ComfyUI applies it.

A stored file (``registry.files.modules`` says which forms) splits in two:

- its plain LoRA modules become a peft adapter in diffusers' names, with alpha/rank folded into
  ``lora_B`` (so peft's own scale is 1 and a strength is peft's adapter weight);
- LoKr, LoHa, ``diff`` and ``diff_b`` become :class:`Patch` es: the factors, and the delta ComfyUI
  computes from them (``comfy/weight_adapter/lokr.py``, ``loha.py``, ``comfy/lora.py``), added to the
  parameter at a strength and taken off again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from registry.domain.keys import LoraPart, diffusers_module, parse_key

__all__ = ["Patch", "split_stored"]

P = LoraPart


@dataclass
class Patch:
    """A change to one parameter (diffusers path) from LoKr/LoHa factors or a plain difference."""

    target: str  # a module path (its .weight or .bias is changed) or a bare parameter's path
    leaf: str  # "weight", "bias" or "" for a bare parameter
    kind: str  # lokr | loha | diff
    tensors: dict[LoraPart, torch.Tensor]
    alpha: float | None

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """The full difference, in float32, as ComfyUI's ``calculate_weight`` makes it."""
        t = {k: v.float() for k, v in self.tensors.items()}
        if self.kind == "diff":
            return t[P.DIFF_B if self.leaf == "bias" else P.DIFF].reshape(shape)
        if self.kind == "loha":
            scale = self.alpha / t[P.HADA_W1_B].shape[0] if self.alpha is not None else 1.0
            m1 = t[P.HADA_W1_A] @ t[P.HADA_W1_B]
            m2 = t[P.HADA_W2_A] @ t[P.HADA_W2_B]
            return (m1 * m2).reshape(shape) * scale
        dim = None
        w1 = t.get(P.LOKR_W1)
        if w1 is None:
            dim = t[P.LOKR_W1_B].shape[0]
            w1 = t[P.LOKR_W1_A] @ t[P.LOKR_W1_B]
        w2 = t.get(P.LOKR_W2)
        if w2 is None:
            dim = t[P.LOKR_W2_B].shape[0]
            w2 = t[P.LOKR_W2_A] @ t[P.LOKR_W2_B]
        scale = self.alpha / dim if self.alpha is not None and dim is not None else 1.0
        return torch.kron(w1, w2).reshape(shape) * scale


def split_stored(path: Path | str) -> tuple[dict[str, torch.Tensor], list[Patch]]:
    """(peft state dict in diffusers' names with the ``transformer.`` prefix, patches) of a stored file."""
    from safetensors.torch import load_file

    stored = load_file(str(path))
    groups: dict[str, dict[LoraPart, torch.Tensor]] = defaultdict(dict)
    for key, value in stored.items():
        _, module, part = parse_key(key)
        groups[module][part] = value
    lora: dict[str, torch.Tensor] = {}
    patches: list[Patch] = []
    for module, parts in sorted(groups.items()):
        target = diffusers_module(module)
        alpha = float(parts[P.ALPHA].item()) if P.ALPHA in parts else None
        if P.A in parts:
            a, b = parts[P.A], parts[P.B]
            scale = alpha / a.shape[0] if alpha is not None else 1.0
            lora[f"transformer.{target}.lora_A.weight"] = a.float()
            lora[f"transformer.{target}.lora_B.weight"] = b.float() * scale
        for kind, prefix in (("lokr", "lokr_"), ("loha", "hada_")):
            factors = {p: t for p, t in parts.items() if p.value.startswith(prefix)}
            if factors:
                patches.append(Patch(target, "weight", kind, factors, alpha))
        if P.DIFF in parts:
            patches.append(Patch(target, "weight", "diff", {P.DIFF: parts[P.DIFF]}, None))
        if P.DIFF_B in parts:
            patches.append(Patch(target, "bias", "diff", {P.DIFF_B: parts[P.DIFF_B]}, None))
    return lora, patches


def resolve(model: Any, patch: Patch) -> torch.nn.Parameter:
    """The parameter a patch changes (under peft's wrapper, the base layer's)."""
    if patch.leaf == "weight" and patch.target.rsplit(".", 1)[-1] == "scale_shift_table":
        return model.get_parameter(patch.target)  # modulation: a bare parameter
    try:
        module = model.get_submodule(patch.target)
    except AttributeError:
        return model.get_parameter(patch.target)
    module = getattr(module, "base_layer", module)
    param = getattr(module, patch.leaf or "weight", None)
    if not isinstance(param, torch.nn.Parameter):
        raise KeyError(f"{patch.target}.{patch.leaf}")
    return param
