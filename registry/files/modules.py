"""One adapted module of a LoRA file: which algorithm, its tensors checked against the base model, its
alpha wherever the trainer put it, and the tensors wanlora stores for it.

The stored form is ComfyUI's own (``diffusion_model.<module>.<part>``), chosen so that ComfyUI's loader,
diffusers' Wan loader and the evaluator apply the same delta:

- LoRA on a block module: ``lora_A``/``lora_B`` as they came, and ``alpha`` (delta = alpha/rank·B·A);
- LoRA on the embedders, ``img_emb`` or the head: diffusers' loader takes no alpha there, so the scale
  alpha/rank is folded into ``lora_B`` (in float32, exact to 2⁻²⁴) and no alpha is written;
- LoKr (``lokr_w1``/``lokr_w2``, each whole or as ``_a``·``_b``) and LoHa (``hada_w1_a``…): the factors as
  they came, with the alpha that gives ComfyUI's scale (alpha / the rank of the decomposed factor);
- ``diff`` (a whole weight's difference) and ``diff_b`` (a bias's), as they came; peft's
  ``lora_B.bias`` becomes a ``diff_b`` scaled like its LoRA.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.domain.errors import InvalidFile
from registry.domain.keys import LINEAR_PARTS, LoraPart, canonical_key, diffusers_module, is_block_module
from registry.domain.wan import BaseModel
from registry.files.safetensors_io import FLOAT_DTYPES, Header, TensorInfo

__all__ = ["AdapterConfig", "ModuleInfo", "Row", "adapter_config", "module_info"]

P = LoraPart
# struct formats of the dtypes an alpha may have (read with struct: no numpy for a few scalars)
_INT_DTYPES = {"I64": "<q", "I32": "<i", "I16": "<h", "I8": "<b", "U64": "<Q", "U32": "<I", "U16": "<H", "U8": "<B"}
_FLOATS = {"F64": "<d", "F32": "<f", "F16": "<e"}
_LOKR = {P.LOKR_W1, P.LOKR_W1_A, P.LOKR_W1_B, P.LOKR_W2, P.LOKR_W2_A, P.LOKR_W2_B, P.LOKR_T2}
_LOHA = {P.HADA_W1_A, P.HADA_W1_B, P.HADA_W2_A, P.HADA_W2_B, P.HADA_T1, P.HADA_T2}
_NAMES = {"lora": "LoRA", "lokr": "LoKr", "loha": "LoHa", "diff": "diff"}


@dataclass(frozen=True)
class Row:
    """One stored tensor: from ``src`` (converted to float32 and scaled when ``scale`` is not None), or,
    with no source, the float32 scalar ``value`` (an alpha), or, where ``alpha_src`` is set, the alpha
    read from there when the row is written (a file inspected while it was still arriving)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    src: TensorInfo | None = None
    value: float = 0.0
    scale: float | None = None
    alpha_src: TensorInfo | None = None

    @property
    def copied(self) -> bool:
        """Stored as it came: its source's bytes, unchanged."""
        return self.src is not None and self.scale is None

    @property
    def nbytes(self) -> int:
        """Its size in the stored file: its source's when copied, else float32 elements."""
        return self.src.nbytes if self.src is not None and self.scale is None else 4 * math.prod(self.shape)


@dataclass(frozen=True)
class AdapterConfig:
    """The alpha a peft/diffusers config in the file's metadata sets (``lora_adapter_metadata``)."""

    alpha: float | None = None
    patterns: dict[str, float] = field(default_factory=dict)
    rslora: bool = False

    def alpha_for(self, module: str, rank: int) -> float | None:
        """The alpha to store for ``module`` (rsLoRA's alpha/√r scale becomes the alpha with that scale)."""
        names = {module, diffusers_module(module)}
        value = next((a for pattern, a in self.patterns.items() for n in names if _matches(n, pattern)), self.alpha)
        if value is None:
            return None
        return value * math.sqrt(rank) if self.rslora else value


def _matches(name: str, pattern: str) -> bool:
    # peft's alpha_pattern keys are matched on a module-name suffix; read literally (never as a regex
    # from a file).
    pattern = pattern.removeprefix("transformer.")
    return name == pattern or name.endswith("." + pattern)


def adapter_config(metadata: dict[str, str], name: str) -> AdapterConfig:
    """Alpha settings from diffusers' ``lora_adapter_metadata`` (a peft LoraConfig, keys optionally
    prefixed ``transformer.``) or a ``peft_config`` / ``adapter_config`` key holding one."""
    for key in ("lora_adapter_metadata", "peft_config", "adapter_config"):
        raw = metadata.get(key)
        if not raw:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise InvalidFile(
                f"{name}: its {key} metadata is not a JSON object, so its LoRA alpha cannot be read",
                hint=f"re-save the file with diffusers, or remove the {key} metadata if alpha = rank was meant",
            )
        conf = {k.removeprefix("transformer."): v for k, v in doc.items()}
        alpha = conf.get("lora_alpha")
        patterns = conf.get("alpha_pattern") or {}
        good_alpha = alpha is None or (_number(alpha) and alpha > 0)
        good_patterns = isinstance(patterns, dict) and all(_number(v) and v > 0 for v in patterns.values())
        if not (good_alpha and good_patterns):
            raise InvalidFile(
                f"{name}: {key} sets lora_alpha {alpha!r} / alpha_pattern {patterns!r}; alpha must be a positive number",
                hint="re-save the file with a valid peft LoraConfig",
            )
        return AdapterConfig(
            float(alpha) if alpha is not None else None,
            {str(k): float(v) for k, v in patterns.items()},
            conf.get("use_rslora") is True,
        )
    return AdapterConfig()


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_scalar(t: TensorInfo, name: str) -> None:
    """An alpha's tensor is one number of a float or integer dtype (its value is read by read_scalar)."""
    if t.shape not in ((), (1,)) or (t.dtype not in _INT_DTYPES and t.dtype not in _FLOATS and t.dtype != "BF16"):
        raise InvalidFile(f"{name}: alpha {t.name!r} must be one number, found {t.dtype}{list(t.shape)}")


def read_scalar(fd: int, header: Header, t: TensorInfo, name: str) -> float:
    """An alpha: one value of any float or integer dtype (musubi writes int64), positive and finite."""
    check_scalar(t, name)
    raw = os.pread(fd, t.nbytes, header.data_offset + t.start)
    if t.dtype == "BF16":
        (value,) = struct.unpack("<f", b"\0\0" + raw)  # bf16 is the top half of an f32
    else:
        (value,) = struct.unpack({**_FLOATS, **_INT_DTYPES}[t.dtype], raw)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidFile(f"{name}: alpha {t.name!r} is {value:g}; alpha must be a positive finite number")
    return value


@dataclass(frozen=True)
class ModuleInfo:
    module: str
    algorithm: str  # lora | lokr | loha | diff (a module may add a diff_b to any of them)
    rank: int  # the rank the alpha divides (0: a whole difference, or LoKr with both factors whole)
    in_features: int
    out_features: int
    alpha: float  # the trainer's alpha (rank where the file has none; 0 where the algorithm takes none)
    parts: dict[LoraPart, TensorInfo]
    alpha_from_file: bool
    alpha_pending: bool = False  # the file was still arriving: ``alpha`` is a stand-in until it is read

    @property
    def dtype(self) -> str:
        return next(t.dtype for p, t in self.parts.items() if p is not P.ALPHA)

    def rows(self) -> list[Row]:
        """The tensors stored for this module, in ComfyUI's names."""
        rows = []
        scale = self.alpha / self.rank if self.rank else 1.0
        fold = self.algorithm == "lora" and not is_block_module(self.module)
        for part, t in self.parts.items():
            if part is P.ALPHA:
                continue
            if part is P.LORA_BIAS or (part is P.B and fold and scale != 1.0):
                rows.append(Row(canonical_key(self.module, part), "F32", t.shape, t, scale=scale))
            else:
                rows.append(Row(canonical_key(self.module, part), t.dtype, t.shape, t))
        if self.rank and not fold:
            pending = self.parts[P.ALPHA] if self.alpha_pending else None
            rows.append(Row(canonical_key(self.module, P.ALPHA), "F32", (), value=self.alpha, alpha_src=pending))
        return rows


# (module, its alpha tensor) → the alpha, or None: read it when its row is written
AlphaReader = Callable[[str, TensorInfo], "float | None"]


def module_info(
    name: str,
    read_alpha: AlphaReader,
    module: str,
    parts: dict[LoraPart, TensorInfo],
    base: BaseModel | None,
    config: AdapterConfig,
) -> ModuleInfo:
    """Check one module's tensors and work out its algorithm, rank and alpha (``read_alpha`` reads it
    from the file, or returns None for an alpha to be read when its row is written: only a block
    module's, whose value does not change how the module is stored)."""
    for t in parts.values():
        if t.dtype not in FLOAT_DTYPES and t is not parts.get(P.ALPHA):
            raise InvalidFile(f"{name}: {t.name!r} is {t.dtype}; LoRA weights must be floating point")
    weight = {_algo(p) for p in parts if p in LINEAR_PARTS - {P.LORA_BIAS}}
    if P.DIFF in parts:
        weight.add("diff")
    if len(weight) > 1:
        names = " and ".join(_NAMES[a] for a in sorted(weight))
        raise InvalidFile(
            f"{name}: module {module} is changed twice, by {names}; ComfyUI would apply only one of them",
            hint="the file was assembled from two adapters; export them as two files",
        )
    if not weight and P.DIFF_B not in parts:
        raise InvalidFile(
            f"{name}: module {module} has only "
            + ("a lora_B.bias" if P.LORA_BIAS in parts else "an alpha")
            + ", no down/A or up/B matrix; every LoRA module needs both",
            hint="the file is incomplete: export the LoRA again from the trainer",
        )
    algorithm = weight.pop() if weight else "diff"
    if P.LORA_BIAS in parts and (algorithm != "lora" or P.DIFF_B in parts):
        raise InvalidFile(
            f"{name}: module {module} has a lora_B.bias "
            + ("and a diff_b for the same bias" if P.DIFF_B in parts else "without its LoRA matrices"),
            hint="the file is corrupt or was assembled from two different adapters",
        )
    if algorithm != "diff" and base is not None and base.module_shape(module) is None:
        raise InvalidFile(
            f"{name}: {base.name} has no module {module} (the file puts a {_NAMES[algorithm]} on it)",
            hint="LoRA, LoKr and LoHa adapt linear layers; check the LoRA's base model",
        )
    expected = base.module_shape(module) if base is not None else None
    if algorithm == "lora":
        rank, out_f, in_f = _lora(name, module, parts, expected)
    elif algorithm == "lokr":
        rank, out_f, in_f = _lokr(name, module, parts, expected)
    elif algorithm == "loha":
        rank, out_f, in_f = _loha(name, module, parts, expected)
    else:
        rank, out_f, in_f = 0, 0, 0
    _diffs(name, module, parts, base)
    alpha_t = parts.get(P.ALPHA)
    pending = False
    if alpha_t is not None:
        check_scalar(alpha_t, name)
        value = read_alpha(module, alpha_t)
        pending = value is None
        alpha = float(rank) if value is None else value
    else:
        from_config = config.alpha_for(module, rank) if rank and algorithm == "lora" else None
        # No alpha means scale 1.0 in every loader, which is alpha == rank.
        alpha = from_config if from_config is not None else float(rank)
    return ModuleInfo(module, algorithm, rank, in_f, out_f, alpha, dict(parts), alpha_t is not None, pending)


def _algo(part: LoraPart) -> str:
    if part in _LOKR:
        return "lokr"
    if part in _LOHA:
        return "loha"
    return "lora"


def _matrix(name: str, t: TensorInfo) -> tuple[int, int]:
    if len(t.shape) != 2:
        raise InvalidFile(f"{name}: {t.name!r} has shape {list(t.shape)}; these factors are 2-D matrices")
    return t.shape[0], t.shape[1]


def _fits(name: str, module: str, what: str, got: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and got != expected:
        raise InvalidFile(
            f"{name}: {what} on module {module} makes a {got[0]}×{got[1]} change, but the layer is "
            f"{expected[0]}×{expected[1]}",
            hint="this LoRA was trained for another base model; register it under a LoRA with that model",
        )


def _need(name: str, module: str, what: str, parts: dict[LoraPart, TensorInfo], *need: LoraPart) -> None:
    missing = [p.value for p in need if p not in parts]
    if missing:
        raise InvalidFile(
            f"{name}: {what} on module {module} has no {', '.join(missing)}; the file is incomplete",
            hint="export the adapter again from the trainer",
        )


def _lora(
    name: str, module: str, parts: dict[LoraPart, TensorInfo], expected: tuple[int, int] | None
) -> tuple[int, int, int]:
    a, b = parts.get(P.A), parts.get(P.B)
    if a is None or b is None:
        missing = "down/A" if a is None else "up/B"
        raise InvalidFile(f"{name}: module {module} has no {missing} matrix; every LoRA module needs both")
    for t in (a, b):
        if len(t.shape) != 2:
            raise InvalidFile(f"{name}: {t.name!r} has shape {list(t.shape)}; LoRA matrices are 2-D")
    rank, in_f = a.shape
    out_f, rank_b = b.shape
    if rank != rank_b or rank == 0:
        raise InvalidFile(
            f"{name}: module {module} has inconsistent rank: down/A is {list(a.shape)}, up/B is {list(b.shape)}",
            hint="the file is corrupt or was assembled from two different LoRAs",
        )
    _fits(name, module, "the LoRA", (out_f, in_f), expected)
    bias = parts.get(P.LORA_BIAS)
    if bias is not None and bias.shape != (out_f,):
        raise InvalidFile(f"{name}: {bias.name!r} has shape {list(bias.shape)}; the layer's bias is [{out_f}]")
    return rank, out_f, in_f


def _lokr(
    name: str, module: str, parts: dict[LoraPart, TensorInfo], expected: tuple[int, int] | None
) -> tuple[int, int, int]:
    if P.LOKR_T2 in parts:
        raise InvalidFile(
            f"{name}: LoKr with a Tucker core (lokr_t2) on module {module}: a Tucker core belongs to a "
            "convolution, and WAN's adapted layers are linear",
            hint="export the LoKr without use_tucker (LyCORIS: use_tucker=False)",
        )
    sides = []
    rank = 0
    for whole, a, b in ((P.LOKR_W1, P.LOKR_W1_A, P.LOKR_W1_B), (P.LOKR_W2, P.LOKR_W2_A, P.LOKR_W2_B)):
        if whole in parts:
            sides.append(_matrix(name, parts[whole]))
            continue
        _need(name, module, "LoKr", parts, a, b)
        (o, r), (r2, i) = _matrix(name, parts[a]), _matrix(name, parts[b])
        if r != r2 or r == 0:
            raise InvalidFile(f"{name}: LoKr on module {module}: {a.value} is {o}×{r} but {b.value} is {r2}×{i}")
        sides.append((o, i))
        rank = r  # ComfyUI divides alpha by the rank of the last decomposed factor
    (o1, i1), (o2, i2) = sides
    _fits(name, module, "the LoKr", (o1 * o2, i1 * i2), expected)
    return rank, o1 * o2, i1 * i2


def _loha(
    name: str, module: str, parts: dict[LoraPart, TensorInfo], expected: tuple[int, int] | None
) -> tuple[int, int, int]:
    if P.HADA_T1 in parts or P.HADA_T2 in parts:
        raise InvalidFile(
            f"{name}: LoHa with Tucker cores (hada_t1/t2) on module {module}: they belong to a convolution, "
            "and WAN's adapted layers are linear",
            hint="export the LoHa without use_tucker",
        )
    _need(name, module, "LoHa", parts, P.HADA_W1_A, P.HADA_W1_B, P.HADA_W2_A, P.HADA_W2_B)
    (o1, r1), (r1b, i1) = _matrix(name, parts[P.HADA_W1_A]), _matrix(name, parts[P.HADA_W1_B])
    (o2, r2), (r2b, i2) = _matrix(name, parts[P.HADA_W2_A]), _matrix(name, parts[P.HADA_W2_B])
    if r1 != r1b or r2 != r2b or (o1, i1) != (o2, i2) or 0 in (r1, r2):
        raise InvalidFile(
            f"{name}: LoHa on module {module} has factors that do not fit: w1 {o1}×{r1}·{r1b}×{i1}, "
            f"w2 {o2}×{r2}·{r2b}×{i2}",
            hint="the file is corrupt or was assembled from two different adapters",
        )
    _fits(name, module, "the LoHa", (o1, i1), expected)
    return r1, o1, i1


def _diffs(name: str, module: str, parts: dict[LoraPart, TensorInfo], base: BaseModel | None) -> None:
    for part, leaf in ((P.DIFF, "weight"), (P.DIFF_B, "bias")):
        t = parts.get(part)
        if t is None:
            continue
        if base is None:
            if len(t.shape) > 5 or 0 in t.shape:
                raise InvalidFile(f"{name}: {t.name!r} has shape {list(t.shape)}, which no WAN parameter has")
            continue
        target = f"{module}.{leaf}"
        shape = base.parameter_shape(target)
        if shape is None and part is P.DIFF:
            target, shape = module, base.parameter_shape(module)  # a bare parameter: modulation
        if shape is None:
            raise InvalidFile(
                f"{name}: {t.name!r} changes {target}, which {base.name} does not have",
                hint="this file was made for another base model (or another WAN variant)",
            )
        if tuple(t.shape) != shape:
            raise InvalidFile(
                f"{name}: {t.name!r} has shape {list(t.shape)} but {base.name}'s {target} is {list(shape)}",
                hint="this file was made for another base model; register it under a LoRA with that model",
            )
