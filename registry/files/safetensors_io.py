"""Bounded, torch-free reading of safetensors headers and streaming writing of safetensors files.

The format: 8 bytes little-endian header length N, N bytes of JSON (``{name: {dtype, shape,
data_offsets}, "__metadata__": {str: str}}``), then the data section, which the offsets index entirely
and without holes. Every bound is checked before anything is trusted, so a hostile header can neither
make us allocate gigabytes nor read outside the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from registry.domain.errors import InvalidFile
from registry.files.header_scan import MAX_METADATA_KEYS, scan_header

__all__ = [
    "DTYPE_SIZES",
    "MAX_HEADER_BYTES",
    "Header",
    "TensorInfo",
    "build_header",
    "has_nonfinite",
    "read_header",
    "refuse_pickle",
]

MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip

# For each float dtype: the unsigned view, the mask that drops the sign bit, and the smallest
# sign-less bit pattern that is NaN or Inf (all exponent bits set; E4M3 has only NaN at 0x7F).
_NONFINITE: dict[str, tuple[str, int, int]] = {
    "F64": ("<u8", 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
    "F32": ("<u4", 0x7FFF_FFFF, 0x7F80_0000),
    "F16": ("<u2", 0x7FFF, 0x7C00),
    "BF16": ("<u2", 0x7FFF, 0x7F80),
    "F8_E4M3": ("u1", 0x7F, 0x7F),
    "F8_E5M2": ("u1", 0x7F, 0x7C),
}
FLOAT_DTYPES = frozenset(_NONFINITE)

_PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
_CONVERT_HINT = (
    "convert it to safetensors in a trusted environment, e.g. "
    'python -c "import torch, safetensors.torch as st; '
    "st.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')\""
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offset inside the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    tensors: list[TensorInfo]  # in data-section order
    metadata: dict[str, str] = field(default_factory=dict)
    header_len: int = 0
    file_size: int = 0

    @property
    def data_offset(self) -> int:
        return 8 + self.header_len

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}


def refuse_pickle(path: Path, first_bytes: bytes) -> None:
    """Refuse pickled checkpoints by name and by content (``first_bytes``: the first 9 bytes):
    unpickling runs arbitrary code."""
    is_zip = first_bytes[:4] == b"PK\x03\x04"  # torch.save's zip container
    # Pickle protocols 2-5 start with 0x80 0x02..0x05, and so does a safetensors file whose header is
    # 0x280, 0x380, … bytes long: that one has its JSON's "{" right after the 8-byte length.
    looks_safetensors = first_bytes[8:9] == b"{"
    is_pickle = len(first_bytes) >= 2 and first_bytes[0] == 0x80 and 2 <= first_bytes[1] <= 5 and not looks_safetensors
    if path.suffix.lower() in _PICKLE_SUFFIXES or is_zip or is_pickle:
        raise InvalidFile(
            f"{path.name} is a pickled PyTorch checkpoint; wanlora never loads pickles, because "
            "unpickling a file can run any code its author put in it",
            hint=_CONVERT_HINT,
        )


def read_header(fh: BinaryIO, file_size: int, *, name: str = "file") -> Header:
    """Parse and bound-check a safetensors header. ``fh`` is positioned at 0; nothing else is read."""
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise InvalidFile(f"{name} is {file_size} bytes: too short to be a safetensors file (truncated?)")
    header_len = int.from_bytes(prefix, "little")
    if header_len > MAX_HEADER_BYTES:
        raise InvalidFile(
            f"{name} declares a {header_len:,}-byte safetensors header, over the 100 MB limit",
            hint="this is not a LoRA file, or it was built to exhaust memory; do not use it",
        )
    if 8 + header_len > file_size:
        raise InvalidFile(
            f"{name} is truncated: its header needs {8 + header_len:,} bytes but the file has {file_size:,}",
            hint="copy or download the file again",
        )
    raw, metadata = scan_header(fh, header_len, name=name)
    metadata = metadata or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidFile(f"{name}: __metadata__ must map strings to strings")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidFile(f"{name}: __metadata__ has {len(metadata):,} entries; at most {MAX_METADATA_KEYS:,}")
    data_size = file_size - 8 - header_len
    tensors: list[TensorInfo] = []
    for tname, spec in raw.items():
        tensors.append(_tensor_info(name, tname, spec, data_size))
    tensors.sort(key=lambda t: (t.start, t.end))
    position = 0
    for t in tensors:
        if t.start < position:
            raise InvalidFile(f"{name}: tensor {t.name!r} overlaps the tensor before it in the data section")
        if t.start > position:
            raise InvalidFile(f"{name}: the data section has a hole before tensor {t.name!r}")
        position = t.end
    if position != data_size:
        raise InvalidFile(
            f"{name}: the header indexes {position:,} data bytes but the file holds {data_size:,}",
            hint="the file is truncated or has trailing bytes; copy it again",
        )
    return Header(tensors=tensors, metadata=dict(metadata), header_len=header_len, file_size=file_size)


def _tensor_info(name: str, tname: str, spec: object, data_size: int) -> TensorInfo:
    if not isinstance(spec, dict):
        raise InvalidFile(f"{name}: entry {tname!r} is not a tensor description")
    dtype = spec.get("dtype")
    if dtype not in DTYPE_SIZES:
        raise InvalidFile(
            f"{name}: tensor {tname!r} has unknown dtype {dtype!r}",
            hint=f"known dtypes: {', '.join(DTYPE_SIZES)}",
        )
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 8:
        raise InvalidFile(f"{name}: tensor {tname!r} has an invalid shape {shape!r}")
    offsets = spec.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise InvalidFile(f"{name}: tensor {tname!r} has invalid data_offsets {offsets!r}")
    start, end = offsets
    if not 0 <= start <= end:
        raise InvalidFile(f"{name}: tensor {tname!r} has data_offsets out of order {offsets!r}")
    if end > data_size:
        raise InvalidFile(
            f"{name}: tensor {tname!r} ends at byte {end:,} of a {data_size:,}-byte data section",
            hint="the file is truncated or its header is forged; copy it again",
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - start != expected:
        raise InvalidFile(f"{name}: tensor {tname!r} spans {end - start:,} bytes but {dtype}{shape} needs {expected:,}")
    return TensorInfo(tname, dtype, tuple(shape), start, end)


_NONFINITE_SLICE = 512 * 1024  # bytes masked at a time: the masked copy stays in the CPU's cache


def has_nonfinite(dtype: str, data: bytes | memoryview) -> bool:
    """True when a float buffer holds a NaN or an infinity (bit test: no float conversion, any dtype).
    The buffer is masked a cache-sized slice at a time into one scratch array: about twice as fast
    as masking a chunk of megabytes at once, which writes and reads back a copy as big as the chunk."""
    spec = _NONFINITE.get(dtype)
    if spec is None or not data:
        return False
    import numpy as np  # here, not at the top: reading a header (inspect, which) needs no numpy

    view_type, abs_mask, threshold = spec
    bits = np.frombuffer(data, dtype=view_type)
    step = _NONFINITE_SLICE // bits.itemsize
    scratch = np.empty(min(step, bits.size), dtype=view_type)
    for start in range(0, bits.size, step):
        part = bits[start : start + step]
        masked = scratch[: part.size]
        np.bitwise_and(part, abs_mask, out=masked)
        if masked.max() >= threshold:
            return True
    return False


def build_header(tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    """Header bytes (length prefix included) for tensors laid out back to back in the given order.

    The JSON is padded with spaces to a multiple of 8 bytes, as the reference implementation does, so
    that the data section stays aligned.
    """
    doc: dict[str, object] = {}
    if metadata:
        doc["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for tname, dtype, shape in tensors:
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        doc[tname] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob
