"""Every supported key format lands as the same canonical, ComfyUI-loadable file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from registry.blobs.local import LocalStore
from registry.domain.wan import BASE_MODELS, KeyFormat, LoraPart, parse_key
from registry.files.ingest import ingest_lora, inspect_lora
from registry.files.synth import synth_lora


@pytest.mark.parametrize(
    ("key", "module", "part", "fmt"),
    [
        ("lora_unet_blocks_0_self_attn_q.lora_down.weight", "blocks.0.self_attn.q", "A", "kohya"),
        ("lora_unet_blocks_12_cross_attn_k_img.lora_up.weight", "blocks.12.cross_attn.k_img", "B", "kohya"),
        ("lora_unet_blocks_3_ffn_2.alpha", "blocks.3.ffn.2", "alpha", "kohya"),
        ("lora_unet_head_head.lora_down.weight", "head.head", "A", "kohya"),
        ("diffusion_model.blocks.0.self_attn.q.lora_A.weight", "blocks.0.self_attn.q", "A", "diffusion-pipe"),
        ("diffusion_model.time_projection.1.lora_B.weight", "time_projection.1", "B", "diffusion-pipe"),
        ("transformer.blocks.0.attn1.to_q.lora_A.weight", "blocks.0.self_attn.q", "A", "diffusers"),
        ("transformer.blocks.1.attn1.to_out.0.lora_B.weight", "blocks.1.self_attn.o", "B", "diffusers"),
        ("transformer.blocks.1.attn2.to_k.lora_A.weight", "blocks.1.cross_attn.k", "A", "diffusers"),
        ("transformer.blocks.1.attn2.add_k_proj.lora_A.weight", "blocks.1.cross_attn.k_img", "A", "diffusers"),
        ("transformer.blocks.1.attn2.add_v_proj.lora_B.weight", "blocks.1.cross_attn.v_img", "B", "diffusers"),
        ("transformer.blocks.2.ffn.net.0.proj.lora_A.weight", "blocks.2.ffn.0", "A", "diffusers"),
        ("transformer.blocks.2.ffn.net.2.lora_B.weight", "blocks.2.ffn.2", "B", "diffusers"),
        ("transformer.proj_out.lora_A.weight", "head.head", "A", "diffusers"),
        ("transformer.condition_embedder.time_proj.lora_A.weight", "time_projection.1", "A", "diffusers"),
        ("base_model.model.blocks.0.attn1.to_v.lora_B.weight", "blocks.0.self_attn.v", "B", "diffusers"),
    ],
)
def test_key_mapping(key: str, module: str, part: str, fmt: str) -> None:
    got_fmt, got_module, got_part = parse_key(key)
    assert (got_fmt.value, got_module, got_part) == (fmt, module, LoraPart(part))


def test_formats_converge_on_one_canonical_payload(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    base = BASE_MODELS["wan2.2-t2v-a14b"]
    targets = ("self_attn.q", "self_attn.o", "cross_attn.v", "ffn.0", "ffn.2")
    payloads, files = set(), []
    for fmt in KeyFormat:
        src = synth_lora(tmp_path / f"{fmt.value}.safetensors", fmt=fmt, seed=3, targets=targets, dtype="BF16")
        assert inspect_lora(src, base).source_format is fmt
        ingested = ingest_lora(src, store, base=base)
        payloads.add(ingested.payload_sha256)
        files.append(store.path(ingested.sha256))
        assert ingested.source_format == fmt.value and ingested.rank == 4 and ingested.alpha == 4.0
    assert len(payloads) == 1
    # The stored file is plain safetensors that the reference implementation reads, with the keys
    # ComfyUI's native loader maps for Wan: diffusion_model.<module>.lora_A/B.weight and .alpha.
    with safe_open(str(files[0]), framework="numpy") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in keys
    assert "diffusion_model.blocks.1.ffn.2.lora_B.weight" in keys
    assert "diffusion_model.blocks.0.cross_attn.v.alpha" in keys
    assert meta["wanlora.format"] == "canonical-v2" and meta["wanlora.algorithms"] == "lora"
    assert all(k.startswith("diffusion_model.blocks.") for k in keys)


def test_canonical_tensors_equal_source_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 3072)).astype(np.float16)
    b = rng.standard_normal((3072, 8)).astype(np.float16)
    src = tmp_path / "peft.safetensors"
    save_file(
        {"transformer.blocks.5.attn1.to_k.lora_A.weight": a, "transformer.blocks.5.attn1.to_k.lora_B.weight": b},
        str(src),
    )
    store = LocalStore(tmp_path / "store")
    ingested = ingest_lora(src, store, base=BASE_MODELS["wan2.2-ti2v-5b"])
    out = load_file(str(store.path(ingested.sha256)))
    assert np.array_equal(out["diffusion_model.blocks.5.self_attn.k.lora_A.weight"], a)
    assert np.array_equal(out["diffusion_model.blocks.5.self_attn.k.lora_B.weight"], b)
    assert out["diffusion_model.blocks.5.self_attn.k.alpha"] == np.float32(8)  # no alpha means scale 1: alpha = rank


def test_kohya_alpha_and_metadata_are_kept(tmp_path: Path) -> None:
    src = synth_lora(
        tmp_path / "k.safetensors", base_model="wan2.2-ti2v-5b", alpha=2.0, metadata={"ss_network_dim": "4"}
    )
    store = LocalStore(tmp_path / "store")
    ingested = ingest_lora(src, store, base=BASE_MODELS["wan2.2-ti2v-5b"])
    assert ingested.alpha == 2.0
    with safe_open(str(store.path(ingested.sha256)), framework="numpy") as f:
        assert f.metadata()["ss_network_dim"] == "4"
        assert f.get_tensor("diffusion_model.blocks.0.self_attn.q.alpha") == np.float32(2.0)


def test_image_cross_attention_only_where_the_model_has_it(tmp_path: Path) -> None:
    src = synth_lora(tmp_path / "i2v.safetensors", base_model="wan2.1-i2v-14b", targets=("cross_attn.k_img",))
    assert inspect_lora(src, BASE_MODELS["wan2.1-i2v-14b"]).target_modules == ["cross_attn.k_img"]
    with pytest.raises(Exception, match="has no module"):
        inspect_lora(src, BASE_MODELS["wan2.2-i2v-a14b"])


@pytest.mark.parametrize("header_len", [0x280, 0x380, 0x480, 0x580])
def test_a_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path: Path, header_len: int) -> None:
    """A header of 0x280 bytes makes the file start 0x80 0x02, pickle protocol 2's magic: the JSON right
    after the length tells them apart."""
    from registry.files.safetensors_io import build_header

    rng = np.random.default_rng(0)
    tensors = {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": rng.standard_normal((4, 3072)).astype(np.float16),
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight": rng.standard_normal((3072, 4)).astype(np.float16),
    }
    layout = [(k, "F16", v.shape) for k, v in tensors.items()]
    pad = header_len - (len(build_header(layout, {"p": ""})) - 8)
    header = build_header(layout, {"p": "x" * pad})
    assert header[:2] == bytes([0x80, header_len >> 8])
    path = tmp_path / "x.safetensors"
    path.write_bytes(header + b"".join(v.tobytes() for v in tensors.values()))
    assert inspect_lora(path, BASE_MODELS["wan2.2-ti2v-5b"]).rank == 4


def _file(tmp_path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    path = tmp_path / "x.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


_Q = "diffusion_model.blocks.0.self_attn.q"
_A, _B = np.zeros((4, 3072), np.float16), np.ones((3072, 4), np.float16)


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        ({f"{_Q}.lora_A.weight": _A, f"{_Q}.lora_B.weight": _B, f"{_Q}.dora_scale": np.ones((1, 3072), np.float16)},
         None, "DoRA .* on module 'diffusion_model.blocks.0.self_attn.q'"),
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": _A}, None, "text-encoder LoRA"),
        ({f"{_Q}.lokr_w1": np.ones((4, 4), np.float16), f"{_Q}.lokr_w2_a": np.ones((768, 2), np.float16),
          f"{_Q}.lokr_w2_b": np.ones((2, 768), np.float16), f"{_Q}.lokr_t2": np.ones((2, 2, 1, 1), np.float16)},
         None, "LoKr with a Tucker core"),
        ({f"{_Q}.lokr_w1": np.ones((4, 4), np.float16), f"{_Q}.lokr_w2": np.ones((700, 768), np.float16)},
         None, "LoKr on module blocks.0.self_attn.q makes a 2800×3072 change, but the layer is 3072×3072"),
        ({f"{_Q}.hada_w1_a": np.ones((3072, 2), np.float16), f"{_Q}.hada_w1_b": np.ones((2, 3072), np.float16)},
         None, "LoHa on module blocks.0.self_attn.q has no hada_w2_a, hada_w2_b"),
        ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": _A}, None,
         "puts a LoRA on 'double_blocks.0.img_attn.qkv', which is not one of its layers"),
        ({f"{_Q}.lora_A.weight": _A, f"{_Q}.lora_B.weight": _B, f"{_Q}.diff": np.ones((3072, 3072), np.float16)},
         None, "changed twice, by diff and LoRA"),
        ({"diffusion_model.blocks.0.norm3.diff": np.ones((5,), np.float16)}, None,
         r"has shape \[5\] but wan2.2-ti2v-5b's blocks.0.norm3.weight is \[3072\]"),
        ({"diffusion_model.blocks.0.self_attn.norm_q.diff_b": np.ones((3072,), np.float16)}, None,
         "changes blocks.0.self_attn.norm_q.bias, which wan2.2-ti2v-5b does not have"),
        ({f"{_Q}.lora_A.weight": _A, f"{_Q}.lora_B.weight": _B, "diffusion_model.blocks.1.ffn.0.alpha": np.ones(())},
         None, "module blocks.1.ffn.0 has only an alpha"),
        ({"lora_unet_blocks_0_self_attn_q.alpha": np.ones((), np.float32)}, None, "has only an alpha"),
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": _A, "transformer.blocks.0.attn1.to_q.lora_B.weight": _B},
         {"lora_adapter_metadata": "{not json"}, "lora_adapter_metadata metadata is not a JSON object"),
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": _A, "transformer.blocks.0.attn1.to_q.lora_B.weight": _B},
         {"lora_adapter_metadata": '{"lora_alpha": -2}'}, "alpha must be a positive number"),
    ],
)  # fmt: skip
def test_what_is_refused_is_named(
    tmp_path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None, message: str
) -> None:
    from registry.domain.errors import InvalidFile

    with pytest.raises(InvalidFile, match=message):
        inspect_lora(_file(tmp_path, tensors, metadata), BASE_MODELS["wan2.2-ti2v-5b"])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float16, np.float64])
def test_alpha_of_any_numeric_dtype(tmp_path: Path, dtype: type) -> None:
    path = _file(
        tmp_path, {f"{_Q}.lora_down.weight": _A, f"{_Q}.lora_up.weight": _B, f"{_Q}.alpha": np.array(8, dtype)}
    )
    ins = inspect_lora(path, BASE_MODELS["wan2.2-ti2v-5b"])
    assert ins.alpha == 8.0 and ins.source_format.value == "comfyui"


def test_alpha_from_diffusers_metadata_is_stored(tmp_path: Path) -> None:
    meta = {"lora_adapter_metadata": '{"transformer.r": 4, "transformer.lora_alpha": 8}'}
    path = _file(tmp_path, {"transformer.blocks.0.attn1.to_q.lora_A.weight": _A,
                            "transformer.blocks.0.attn1.to_q.lora_B.weight": _B}, meta)  # fmt: skip
    store = LocalStore(tmp_path / "store")
    ingested = ingest_lora(path, store, base=BASE_MODELS["wan2.2-ti2v-5b"])
    assert ingested.alpha == 8.0
    out = load_file(str(store.path(ingested.sha256)))
    assert float(out[f"{_Q}.alpha"]) == 8.0  # ComfyUI then applies 8/4, as diffusers does from the metadata


@pytest.mark.parametrize("kernel", ["copies", "refuses", "missing"])
def test_the_stored_file_is_the_same_however_its_tensors_are_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """Tensors stored as they are go by the kernel (copy_file_range) into a local store, and through
    Python where the kernel cannot copy (another file system, another OS) or into any other sink:
    the bytes, the digests and what the file holds are the same every way, across several chunks."""
    import errno
    import os

    from registry.blobs.base import CHUNK
    from registry.files.ingest import file_digests

    calls: list[int] = []
    if kernel == "copies":
        real = os.copy_file_range

        def counted(*args: object, **kw: object) -> int:
            calls.append(1)
            return real(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "copy_file_range", counted)
    if kernel == "refuses":

        def refuse(*_: object, **__: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    elif kernel == "missing":
        monkeypatch.delattr(os, "copy_file_range")
    # rank 1024 on a 14B FFN: lora_B is 13824×1024 fp16, 27 MiB, several chunks of one tensor
    src = synth_lora(tmp_path / "big.safetensors", base_model="wan2.1-t2v-14b", rank=1024, blocks=1, seed=2,
                     targets=("ffn.0",), dtype="F16")  # fmt: skip
    assert max(t.nbytes for t in inspect_lora(src).header.tensors) > 3 * CHUNK
    ingested = ingest_lora(src, LocalStore(tmp_path / "store"), base=BASE_MODELS["wan2.1-t2v-14b"])
    stored = tmp_path / "store" / "sha256" / ingested.sha256[:2] / ingested.sha256
    import hashlib

    assert hashlib.sha256(stored.read_bytes()).hexdigest() == ingested.sha256
    (b_matrix,) = [t for t in load_file(str(src)).values() if t.shape == (13824, 1024)]
    assert np.array_equal(load_file(str(stored))["diffusion_model.blocks.0.ffn.0.lora_B.weight"], b_matrix)
    assert bool(calls) == (kernel == "copies")  # the kernel did copy when it could
    again = file_digests(src)  # the same digests from a sink that keeps nothing (no kernel copy there)
    assert (again.sha256, again.payload_sha256) == (ingested.source_sha256, ingested.payload_sha256)
    assert again.autov3 == ingested.source_autov3


def test_ingest_takes_source_digests_only_for_the_file_they_were_made_of(tmp_path: Path) -> None:
    """Digests worked out while the file was written (the server's upload) stand in for reading it
    again only while the file has the identity recorded with them; otherwise the file is hashed."""
    import os

    from registry.files.ingest import file_digests
    from registry.files.source_digests import SourceDigests, file_identity

    src = synth_lora(tmp_path / "a.safetensors", base_model="wan2.2-ti2v-5b", rank=4, blocks=1, seed=5)
    real = file_digests(src)
    store, base = LocalStore(tmp_path / "store"), BASE_MODELS["wan2.2-ti2v-5b"]
    marked = SourceDigests("a" * 64, "b" * 64, file_identity(os.stat(src)))  # not its digests: shows they were used
    used = ingest_lora(src, store, base=base, source_digests=marked)
    assert (used.source_sha256, used.source_autov3) == ("a" * 64, "b" * 64)
    stale = SourceDigests("a" * 64, "b" * 64, (0, 0, 0, 0, 0))
    hashed = ingest_lora(src, store, base=base, source_digests=stale)
    assert (hashed.source_sha256, hashed.source_autov3) == (real.sha256, real.autov3)
    assert used.sha256 == hashed.sha256 and used.payload_sha256 == hashed.payload_sha256


@pytest.mark.parametrize("piece", [1, 3, 7, 8, 9, 4096, 10**9])
def test_the_data_section_hash_is_autov3_whatever_the_pieces(tmp_path: Path, piece: int) -> None:
    from registry.files.ingest import file_digests
    from registry.files.source_digests import DataSectionHash

    src = synth_lora(tmp_path / "a.safetensors", base_model="wan2.2-ti2v-5b", rank=4, blocks=1, seed=6)
    data = src.read_bytes()
    h = DataSectionHash()
    for i in range(0, len(data), piece):
        h.update(data[i : i + piece])
    assert h.hexdigest() == file_digests(src).autov3
    short = DataSectionHash()
    short.update(data[:5])
    assert short.hexdigest() is None  # too short to say where its data starts
