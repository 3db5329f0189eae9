"""Synthetic LoRA files with the real shapes of a WAN base model, for the demo, tests and benchmarks.

The files are valid LoRAs in any of the key formats wanlora reads; their weights are random. Writing
streams tensor by tensor, so a 1 GB file needs a few MB of memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from registry.domain.wan import BASE_MODELS, KeyFormat
from registry.files.safetensors_io import build_header

__all__ = ["synth_lora"]

_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": np.float32}
_DIFFUSERS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}  # fmt: skip
DEFAULT_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o")


def _names(fmt: KeyFormat, module: str) -> tuple[str, str, str | None]:
    """(A key, B key, alpha key or None) for one original Wan module name."""
    if fmt in (KeyFormat.KOHYA, KeyFormat.VIDEOX_FUN):
        flat = ("lora_unet__" if fmt is KeyFormat.VIDEOX_FUN else "lora_unet_") + module.replace(".", "_")
        return f"{flat}.lora_down.weight", f"{flat}.lora_up.weight", f"{flat}.alpha"
    if fmt is KeyFormat.DIFFUSERS:
        block, index, rest = module.split(".", 2)
        name = f"transformer.{block}.{index}.{_DIFFUSERS[rest]}"
        return f"{name}.lora_A.weight", f"{name}.lora_B.weight", None
    name = f"diffusion_model.{module}"
    if fmt is KeyFormat.COMFYUI:
        return f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"
    alpha = f"{name}.alpha" if fmt is KeyFormat.CANONICAL else None
    return f"{name}.lora_A.weight", f"{name}.lora_B.weight", alpha


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":  # round-to-nearest-even is not needed for random data: truncate
        return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return values.astype(_DTYPES[dtype]).tobytes()


def synth_lora(
    path: Path,
    *,
    base_model: str = "wan2.2-t2v-a14b",
    fmt: KeyFormat | str = KeyFormat.KOHYA,
    rank: int = 4,
    alpha: float | None = None,
    blocks: int | range = 2,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    dtype: str = "F16",
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    zero_b: bool = False,
    poison: str | None = None,
    scale: float = 0.01,
) -> Path:
    """Write a LoRA file. ``poison="nan"`` or ``"inf"`` plants one bad value in the last B matrix;
    ``scale`` is the standard deviation of the random A and B entries."""
    fmt = KeyFormat(fmt)
    base = BASE_MODELS[base_model]
    block_ids = range(blocks) if isinstance(blocks, int) else blocks
    modules = [f"blocks.{i}.{t}" for i in block_ids for t in targets]
    # (name, dtype, shape, what): what is a float for an alpha, or (seed, zero, poisoned) for a matrix,
    # made only when written so that memory does not grow with the file.
    entries: list[tuple[str, str, tuple[int, ...], float | tuple[int, bool, bool]]] = []
    for n, module in enumerate(modules):
        shape = base.module_shape(module)
        assert shape is not None, module
        out_f, in_f = shape
        a_key, b_key, alpha_key = _names(fmt, module)
        last = n == len(modules) - 1
        entries.append((a_key, dtype, (rank, in_f), (seed * 1_000_003 + 2 * n, False, False)))
        entries.append((b_key, dtype, (out_f, rank), (seed * 1_000_003 + 2 * n + 1, zero_b, bool(poison) and last)))
        if alpha_key is not None:
            entries.append((alpha_key, "F32", (), float(alpha if alpha is not None else rank)))
    header = build_header([(n, d, s) for n, d, s, _ in entries], metadata or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header)
        for _, dt, shp, what in entries:
            fh.write(_tensor_bytes(dt, shp, what, poison, scale))
    return path


def _tensor_bytes(
    dtype: str, shape: tuple[int, ...], what: float | tuple[int, bool, bool], poison: str | None, scale: float = 0.01
) -> bytes:
    if isinstance(what, float):
        return np.float32(what).tobytes()
    tensor_seed, zero, poisoned = what
    values = (
        np.zeros(shape, np.float32)
        if zero
        else np.random.default_rng(tensor_seed).standard_normal(shape, dtype=np.float32) * np.float32(scale)
    )
    if poisoned:
        values.flat[values.size // 2] = np.nan if poison == "nan" else np.inf
    return _encode(values, dtype)
