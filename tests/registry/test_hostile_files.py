"""Every malformed or hostile file is refused with a message naming the problem, and nothing is stored."""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.backends.local import Wanlora
from registry.domain.errors import InvalidFile, InvalidInput
from registry.files.safetensors_io import build_header
from tests.conftest import stored_objects
from tests.helpers import make, register


def raw(path: Path, header: dict | bytes, data: bytes = b"", prefix: bytes | None = None) -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((prefix if prefix is not None else len(blob).to_bytes(8, "little")) + blob + data)
    return path


def tensor(dtype: str, shape: list[int], start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def _good(tmp: Path) -> Path:
    return make(tmp, "good")


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "huge header": (
        lambda t: raw(t / "x.safetensors", b"{}", prefix=(200 * 2**20).to_bytes(8, "little")),
        "over the 100 MB",
    ),
    "too short": (lambda t: (t / "x.safetensors").write_bytes(b"abc") and t / "x.safetensors", "too short"),
    "header past end": (lambda t: raw(t / "x.safetensors", b"{}", prefix=(5000).to_bytes(8, "little")), "truncated"),
    "not json": (lambda t: raw(t / "x.safetensors", b"{not json}"), "not valid JSON"),
    "not utf-8": (lambda t: raw(t / "x.safetensors", b"\xff\xfenot json"), "not UTF-8"),
    "json list": (lambda t: raw(t / "x.safetensors", b"[1,2]"), "JSON object"),
    "unknown dtype": (
        lambda t: raw(t / "x.safetensors", {"a": tensor("Q4", [2], 0, 2)}, b"\0\0"),
        "unknown dtype",
    ),
    "offsets out of range": (
        lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [4], 0, 8)}, b"\0" * 4),
        "ends at byte",
    ),
    "overlap": (
        lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [2], 0, 4), "b": tensor("F16", [2], 2, 6)}, b"\0" * 6),
        "overlaps",
    ),
    "hole": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [2], 4, 8)}, b"\0" * 8), "hole"),
    "size mismatch": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [3], 0, 4)}, b"\0" * 4), "needs 6"),
    "trailing bytes": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [2], 0, 4)}, b"\0" * 9), "holds 9"),
    "duplicate key": (
        lambda t: raw(
            t / "x.safetensors",
            b'{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},'
            b'"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}',
            b"\0\0",
        ),
        "twice",
    ),
    "truncated data": (lambda t: _truncate(make(t, "trunc")), "truncated"),
    "no tensors": (lambda t: raw(t / "x.safetensors", {}), "no tensors"),
    "not a lora key": (
        lambda t: raw(
            t / "x.safetensors", {"model.diffusion_model.input_blocks.0.weight": tensor("F16", [1], 0, 2)}, b"\0\0"
        ),
        "not a LoRA weight",
    ),
    "pickle by suffix": (lambda t: (t / "x.ckpt").write_bytes(b"anything") and t / "x.ckpt", "pickled"),
    "pickle by content": (
        lambda t: (t / "x.safetensors").write_bytes(pickle.dumps({"a": 1})) and t / "x.safetensors",
        "pickled",
    ),
    "torch zip": (lambda t: _zip(t / "model.safetensors"), "pickled"),
    "nan f16": (lambda t: make(t, "nan", poison="nan"), "NaN or infinite"),
    "inf f32": (lambda t: make(t, "inf", poison="inf", dtype="F32"), "NaN or infinite"),
    "nan bf16": (lambda t: make(t, "nanbf", poison="nan", dtype="BF16"), "NaN or infinite"),
    "wrong base model": (lambda t: make(t, "big", base_model="wan2.2-t2v-a14b"), "trained for another base model"),
    "block beyond model": (
        lambda t: make(t, "deep", blocks=range(30, 31), base_model="wan2.1-t2v-14b"),
        "has no module",
    ),
    "missing up matrix": (lambda t: _drop(make(t, "half"), ".lora_up.weight"), "no up/B"),
    "rank mismatch": (lambda t: _rank_mismatch(t / "x.safetensors"), "inconsistent rank"),
    "mixed formats": (lambda t: _mixed(t / "x.safetensors"), "mixes key formats"),
    "negative alpha": (lambda t: make(t, "alpha", alpha=-1.0), "positive finite"),
    "integer weights": (lambda t: _int_weights(t / "x.safetensors"), "floating point"),
    # the header's JSON, against the streaming scanner's bounds (registered end to end)
    "deep nesting": (lambda t: raw(t / "x.safetensors", b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}"), "nested"),
    "too many tensors": (lambda t: raw(t / "x.safetensors", _many(40_000)), "more than 32,768 tensors"),
    "huge metadata": (
        lambda t: raw(t / "x.safetensors", b'{"__metadata__":{"a":"' + b"x" * (17 * 2**20) + b'"}}'),
        "over 16,777,216",
    ),
    "many metadata keys": (
        lambda t: raw(t / "x.safetensors", {"__metadata__": {f"k{i}": "" for i in range(5000)}}),
        "5,000 entries; at most 4,096",
    ),
    "long tensor name": (lambda t: raw(t / "x.safetensors", {"n" * 2000: tensor("F16", [1], 0, 2)}, b"\0\0"), "name over"),
    "trailing json": (lambda t: raw(t / "x.safetensors", b'{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}{}', b"\0\0"), "after its closing"),
    "incomplete json": (lambda t: raw(t / "x.safetensors", b'{"a":{"dtype":"F16"'), "incomplete"),
    "escaped duplicate": (
        lambda t: raw(t / "x.safetensors", b'{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},'
                                          b'"\\u0061":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}', b"\0\0"),
        "twice",
    ),
    "non-string metadata": (lambda t: raw(t / "x.safetensors", {"__metadata__": {"a": 1}}), "strings to strings"),
    "metadata list": (lambda t: raw(t / "x.safetensors", {"__metadata__": ["a"]}), "strings to strings"),
    "entry is a list": (lambda t: raw(t / "x.safetensors", {"a": [1, 2]}), "not a tensor description"),
    "shape not a list": (lambda t: raw(t / "x.safetensors", {"a": {"dtype": "F16", "shape": 4, "data_offsets": [0, 8]}}, b"\0" * 8), "invalid shape"),
    "negative dimension": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [-1], 0, 2)}, b"\0\0"), "invalid shape"),
    "too many dimensions": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [1] * 9, 0, 2)}, b"\0\0"), "invalid shape"),
    "boolean offsets": (lambda t: raw(t / "x.safetensors", {"a": {"dtype": "F16", "shape": [1], "data_offsets": [False, 2]}}, b"\0\0"), "invalid data_offsets"),
    "float offsets": (lambda t: raw(t / "x.safetensors", {"a": {"dtype": "F16", "shape": [1], "data_offsets": [0.0, 2.0]}}, b"\0\0"), "invalid data_offsets"),
    "three offsets": (lambda t: raw(t / "x.safetensors", {"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 1, 2]}}, b"\0\0"), "invalid data_offsets"),
    "offsets reversed": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [1], 2, 0)}, b"\0\0"), "out of order"),
    "shape overflows": (lambda t: raw(t / "x.safetensors", {"a": tensor("F16", [2**40, 2**40], 0, 2)}, b"\0\0"), "needs"),
    "header length 2^63": (lambda t: raw(t / "x.safetensors", b"{}", prefix=(2**63).to_bytes(8, "little")), "over the 100 MB"),
    "header length zero": (lambda t: raw(t / "x.safetensors", b"", prefix=(0).to_bytes(8, "little"), data=b"\0" * 16), "incomplete"),
    "empty file": (lambda t: (t / "x.safetensors").write_bytes(b"") or t / "x.safetensors", "too short"),
    "gzip file": (lambda t: (t / "x.safetensors").write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 64) and t / "x.safetensors", "over the 100 MB|truncated"),
    "pickle protocol 2": (lambda t: (t / "x.safetensors").write_bytes(pickle.dumps([1], protocol=2)) and t / "x.safetensors", "pickled"),
    "uppercase .PT": (lambda t: (t / "x.PT").write_bytes(b"anything at all") and t / "x.PT", "pickled"),
    ".pth suffix": (lambda t: (t / "x.pth").write_bytes(b"anything at all") and t / "x.pth", "pickled"),
    # key names: one module named two ways would let the same weights in twice
    "leading zero block": (lambda t: _key(t, "diffusion_model.blocks.00.self_attn.q"), "not a LoRA weight"),
    "arabic-indic block": (lambda t: _key(t, "diffusion_model.blocks.\u0660.self_attn.q"), "not a LoRA weight"),
    "fullwidth block": (lambda t: _key(t, "diffusion_model.blocks.\uff10.self_attn.q"), "not a LoRA weight"),
    "unknown module": (lambda t: _key(t, "diffusion_model.blocks.0.self_attn.zz"), "not a LoRA weight"),
    "path in a key": (lambda t: _key(t, "../../etc/passwd"), "not a LoRA weight"),
    "empty key": (lambda t: _key(t, ""), "not a LoRA weight"),
    "nan alpha": (lambda t: _alpha(t, float("nan")), "positive finite"),
    "infinite alpha": (lambda t: _alpha(t, float("inf")), "positive finite"),
    "zero alpha": (lambda t: _alpha(t, 0.0), "positive finite"),
    "3-d matrix": (lambda t: _rewrite(t / "x.safetensors", [("lora_unet_blocks_0_self_attn_q.lora_down.weight", "F16", (4, 3072, 1)), ("lora_unet_blocks_0_self_attn_q.lora_up.weight", "F16", (3072, 4))]), "2-D"),
    "rank zero": (lambda t: _rewrite(t / "x.safetensors", [("lora_unet_blocks_0_self_attn_q.lora_down.weight", "F16", (0, 3072)), ("lora_unet_blocks_0_self_attn_q.lora_up.weight", "F16", (3072, 0))]), "inconsistent rank"),
}  # fmt: skip


def _many(n: int) -> bytes:
    entry = b'"t%06d":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},'
    return b"{" + b"".join(entry % i for i in range(n)) + b'"end":{}}'


def _key(t: Path, module: str) -> Path:
    """A canonical pair of tensors under the given module name, sized for WAN 1.3B's q projection."""
    return _rewrite(t / "x.safetensors", [(f"{module}.lora_A.weight", "F16", (4, 3072)),
                                          (f"{module}.lora_B.weight", "F16", (3072, 4))])  # fmt: skip


def _alpha(t: Path, value: float) -> Path:
    import struct

    m = "lora_unet_blocks_0_self_attn_q"
    entries = [
        (f"{m}.lora_down.weight", "F16", (4, 3072)),
        (f"{m}.lora_up.weight", "F16", (3072, 4)),
        (f"{m}.alpha", "F32", ()),
    ]
    header = build_header(entries, {})
    path = t / "x.safetensors"
    path.write_bytes(header + b"\0" * (2 * 2 * 4 * 3072) + struct.pack("<f", value))
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    return path


def _rewrite(path: Path, entries: list[tuple[str, str, tuple[int, ...]]]) -> Path:
    header = build_header(entries, {})
    size = sum(math.prod(s) for _, _, s in entries) * 2
    path.write_bytes(header + b"\0" * size)
    return path


def _drop(path: Path, suffix: str) -> Path:
    from registry.files.safetensors_io import read_header

    with open(path, "rb") as fh:
        h = read_header(fh, path.stat().st_size)
    kept = [(t.name, t.dtype, t.shape) for t in h.tensors if not t.name.endswith(suffix) and t.dtype == "F16"]
    return _rewrite(path, kept)


def _rank_mismatch(path: Path) -> Path:
    m = "lora_unet_blocks_0_self_attn_q"
    return _rewrite(path, [(f"{m}.lora_down.weight", "F16", (4, 3072)), (f"{m}.lora_up.weight", "F16", (3072, 8))])


def _mixed(path: Path) -> Path:
    a, b = "lora_unet_blocks_0_self_attn_q", "diffusion_model.blocks.0.self_attn.k"
    return _rewrite(
        path,
        [
            (f"{a}.lora_down.weight", "F16", (4, 3072)),
            (f"{a}.lora_up.weight", "F16", (3072, 4)),
            (f"{b}.lora_A.weight", "F16", (4, 3072)),
            (f"{b}.lora_B.weight", "F16", (3072, 4)),
        ],
    )


def _int_weights(path: Path) -> Path:
    m = "lora_unet_blocks_0_self_attn_q"
    return _rewrite(path, [(f"{m}.lora_down.weight", "I16", (4, 3072)), (f"{m}.lora_up.weight", "I16", (3072, 4))])


def test_the_corpus_has_at_least_60_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_is_refused_and_nothing_is_stored(case: str, wl: Wanlora, tmp_path: Path) -> None:
    build, message = CASES[case]
    path = build(tmp_path)
    with pytest.raises(InvalidInput, match=message) as info:
        register(wl, tmp_path, file=path)
    assert isinstance(info.value, InvalidFile) or case in ("wrong base model",)
    assert stored_objects(wl.store) == []
    assert list(wl.store.tmp_dir.iterdir()) == []
    with wl.registry(write=False) as reg:
        assert reg.list_loras() == []  # not even the LoRA that the first register would have created


def test_pickle_error_explains_the_fix(wl: Wanlora, tmp_path: Path) -> None:
    path = tmp_path / "lora.pt"
    path.write_bytes(b"\x80\x04stuff")
    with pytest.raises(InvalidFile) as info:
        register(wl, tmp_path, file=path)
    assert "run any code" in info.value.message and "safetensors" in (info.value.hint or "")


def test_refused_pair_leaves_nothing_from_the_good_half(wl: Wanlora, tmp_path: Path) -> None:
    good = make(tmp_path, "h", base_model="wan2.2-t2v-a14b", seed=1)
    bad = make(tmp_path, "l", base_model="wan2.2-t2v-a14b", seed=2, poison="nan")
    with pytest.raises(InvalidFile, match="NaN"):
        register(wl, tmp_path, base_model="wan2.2-t2v-a14b", file=good, low_noise=bad)
    assert stored_objects(wl.store) == []


@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"])
def test_a_nan_or_infinity_is_found_wherever_it_sits_in_a_buffer(dtype: str) -> None:
    """The check masks a slice at a time: a bad value at the start, across a slice's end or in the
    last element is found, for either sign; finite values of any size are not flagged."""
    import numpy as np

    from registry.files.safetensors_io import _NONFINITE, _NONFINITE_SLICE, has_nonfinite

    view, mask, threshold = _NONFINITE[dtype]
    width = np.dtype(view).itemsize
    count = 3 * _NONFINITE_SLICE // width + 5  # three slices and a short one
    finite = np.full(count, threshold - 1, dtype=view)  # the largest finite magnitude
    finite[1::2] |= mask + 1  # every other one negative
    assert not has_nonfinite(dtype, finite.tobytes())
    step = _NONFINITE_SLICE // width
    for at in (0, step - 1, step, count - 1):
        for sign in (0, mask + 1):
            bad = finite.copy()
            bad[at] = threshold | sign
            assert has_nonfinite(dtype, bad.tobytes()), (at, sign)
    assert not has_nonfinite(dtype, b"") and not has_nonfinite("I32", b"\xff" * 8)
