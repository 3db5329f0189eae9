"""Every malformed or hostile file is refused with a message naming the problem, and nothing is stored."""

from __future__ import annotations

import json
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
}


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
    size = sum(int.__mul__(*s) if len(s) == 2 else 1 for _, _, s in entries) * 2
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
