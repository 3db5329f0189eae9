"""Ingest following a file that is still being written (the server's upload): each read waits for its
bytes, a block module's alpha that has not come yet is read when its row is written, nothing is
committed before the writer has checked the whole file, and the stored file is byte for byte what
ingesting the finished file gives."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from registry.blobs.local import LocalStore
from registry.domain.errors import InvalidFile
from registry.domain.wan import BASE_MODELS
from registry.files.arrival import Abandoned, Arrival
from registry.files.ingest import IngestedFile, ingest_lora, inspect_lora
from registry.files.safetensors_io import build_header
from registry.files.source_digests import SourceDigests, file_identity, hash_source
from registry.files.synth import synth_lora
from tests.helpers import SINGLE

BASE = BASE_MODELS[SINGLE]


def _alphas_last(path: Path, *, head_alpha: float = 4.0) -> Path:
    """A kohya LoRA on a block module and on the head, its two alphas at the very end of the file (the
    head's last): the head's alpha decides how the head is stored, the block's does not."""
    d, out = BASE.module_shape("blocks.0.self_attn.q"), BASE.module_shape("head.head")
    assert d is not None and out is not None
    rng = np.random.default_rng(5)
    tensors = [
        ("lora_unet_blocks_0_self_attn_q.lora_down.weight", rng.standard_normal((8, d[1]), np.float32) * 0.01),
        ("lora_unet_blocks_0_self_attn_q.lora_up.weight", rng.standard_normal((d[0], 8), np.float32) * 0.01),
        ("lora_unet_head_head.lora_down.weight", rng.standard_normal((8, out[1]), np.float32) * 0.01),
        ("lora_unet_head_head.lora_up.weight", rng.standard_normal((out[0], 8), np.float32) * 0.01),
        ("lora_unet_blocks_0_self_attn_q.alpha", np.float32(2.0)),
        ("lora_unet_head_head.alpha", np.float32(head_alpha)),
    ]
    header = build_header([(n, "F32", tuple(np.shape(v))) for n, v in tensors], {})
    path.write_bytes(header + b"".join(np.asarray(v, "<f4").tobytes() for _, v in tensors))
    return path


class _Upload:
    """Writes ``src`` to ``dest`` in pieces, as the server's upload does, while ingest follows it (with
    ``route``, handing each piece over as the server does, so that tensors go to the stored file)."""

    def __init__(self, src: Path, dest: Path, store: LocalStore, *, route: bool = False) -> None:
        self.data, self.dest, self.route = src.read_bytes(), dest, route
        self.arrival = Arrival(len(self.data))
        self.fh = open(dest, "wb", buffering=0)  # noqa: SIM115 (closed by finish or fail)
        self.written = 0
        self.outcome: IngestedFile | BaseException | None = None
        self.thread = threading.Thread(target=self._follow, args=(store,))
        self.thread.start()

    def _follow(self, store: LocalStore) -> None:
        try:
            self.outcome = ingest_lora(self.dest, store, base=BASE, arrival=self.arrival)
        except BaseException as exc:
            self.outcome = exc

    def write(self, upto: int, piece: int = 4096) -> None:
        while self.written < upto:
            chunk = self.data[self.written : min(upto, self.written + piece)]
            if self.route:
                self.arrival.deliver(self.fh.fileno(), memoryview(chunk))
            else:
                self.fh.write(chunk)
                self.arrival.grew(len(chunk))
            self.written += len(chunk)

    def finish(self) -> IngestedFile | BaseException | None:
        self.write(len(self.data))
        self.fh.close()
        sha256, autov3 = hash_source(self.dest)
        self.arrival.finish(SourceDigests(sha256, autov3, file_identity(self.dest.stat())))
        self.thread.join(30)
        return self.outcome

    def fail(self) -> IngestedFile | BaseException | None:
        self.arrival.fail()
        self.fh.close()
        self.thread.join(30)
        return self.outcome


def _stored_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()]


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "comfyui"])
def test_a_file_ingested_as_it_arrives_is_stored_as_the_finished_file_would_be(tmp_path: Path, fmt: str) -> None:
    src = synth_lora(tmp_path / "src.safetensors", fmt=fmt, base_model=SINGLE, rank=8, blocks=12, seed=3)
    expected = ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE)
    store = LocalStore(tmp_path / "store")
    got = _Upload(src, tmp_path / "upload", store).finish()
    assert isinstance(got, IngestedFile), got
    assert (got.sha256, got.payload_sha256, got.size) == (expected.sha256, expected.payload_sha256, expected.size)
    assert (got.source_sha256, got.source_autov3) == (expected.source_sha256, expected.source_autov3)
    reference = LocalStore(tmp_path / "reference").path(expected.sha256)
    assert store.path(got.sha256).read_bytes() == reference.read_bytes()


def test_an_alpha_not_there_yet_is_read_when_its_row_is_written_unless_it_decides_the_stored_form(
    tmp_path: Path,
) -> None:
    src = _alphas_last(tmp_path / "src.safetensors")
    data = src.read_bytes()
    alphas = 8  # two float32 scalars at the end
    upload = tmp_path / "upload"
    upload.write_bytes(data[: len(data) - alphas])
    arrival = Arrival(len(data))
    arrival.grew(len(data) - alphas)
    inspected: dict[str, object] = {}

    def inspect() -> None:
        inspected["ins"] = inspect_lora(upload, BASE, arrival=arrival)

    thread = threading.Thread(target=inspect)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # the head's alpha decides whether its B is scaled: the inspection waits for it
    with open(upload, "ab") as fh:
        fh.write(data[len(data) - alphas :])
    arrival.grew(alphas)
    thread.join(10)
    ins = inspected["ins"]
    assert not thread.is_alive()
    modules = {m.module: m for m in ins.modules}  # type: ignore[attr-defined]
    assert modules["head.head"].alpha == 4.0 and not modules["head.head"].alpha_pending
    assert modules["blocks.0.self_attn.q"].alpha_pending  # read when ingest writes its row
    (alpha_row,) = [r for r in ins.canonical_layout() if r.name.endswith(".alpha")]  # type: ignore[attr-defined]
    assert alpha_row.alpha_src is not None
    assert inspect_lora(src, BASE).modules[0].alpha == 2.0

    expected = ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE)
    got = _Upload(src, tmp_path / "upload2", LocalStore(tmp_path / "store")).finish()
    assert isinstance(got, IngestedFile), got
    assert (got.sha256, got.payload_sha256) == (expected.sha256, expected.payload_sha256)


def test_an_upload_that_fails_midway_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=12, seed=4)
    store = LocalStore(tmp_path / "store")
    upload = _Upload(src, tmp_path / "upload", store)
    upload.write(len(upload.data) // 2)
    assert isinstance(upload.fail(), Abandoned)
    assert _stored_files(tmp_path / "store") == []


def test_nothing_is_committed_before_the_writer_has_checked_the_whole_file(tmp_path: Path) -> None:
    """The bytes can all be there and ingest done with them; until the writer says the file checked
    out (its digest matched), the stored file waits, and a refusal then keeps nothing."""
    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=4, seed=6)
    store = LocalStore(tmp_path / "store")
    upload = _Upload(src, tmp_path / "upload", store)
    upload.write(len(upload.data))
    upload.thread.join(0.3)
    assert upload.thread.is_alive() and upload.outcome is None
    assert not any(p.parent.name != "tmp" for p in _stored_files(tmp_path / "store"))
    assert isinstance(upload.fail(), Abandoned)
    assert _stored_files(tmp_path / "store") == []


def test_a_file_that_holds_nan_or_is_shorter_than_declared_is_refused_as_the_finished_file_is(
    tmp_path: Path,
) -> None:
    poisoned = synth_lora(tmp_path / "nan.safetensors", base_model=SINGLE, rank=8, blocks=4, poison="nan")
    store = LocalStore(tmp_path / "store")
    got = _Upload(poisoned, tmp_path / "upload", store).finish()
    assert isinstance(got, InvalidFile) and "NaN" in got.message
    assert _stored_files(tmp_path / "store") == []

    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=4, seed=7)
    short = Arrival(src.stat().st_size + 100)  # declared longer than what is written
    (tmp_path / "short").write_bytes(src.read_bytes())
    short.grew(src.stat().st_size)
    short.finish(SourceDigests("0" * 64, "0" * 64, ()))
    with pytest.raises(InvalidFile):
        ingest_lora(tmp_path / "short", store, base=BASE, arrival=short)
    assert _stored_files(tmp_path / "store") == []


@pytest.mark.parametrize("kernel", ["refuses", "missing"])
def test_where_the_kernel_cannot_copy_an_arriving_file_is_placed_through_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    import errno
    import os

    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=12, seed=8)
    expected = ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE)
    if kernel == "missing":
        monkeypatch.delattr(os, "copy_file_range")
    else:

        def refuse(*args: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    store = LocalStore(tmp_path / "store")
    got = _Upload(src, tmp_path / "upload", store).finish()
    assert isinstance(got, IngestedFile), got
    assert got.sha256 == expected.sha256
    assert store.path(got.sha256).read_bytes() == LocalStore(tmp_path / "reference").path(expected.sha256).read_bytes()


def test_a_failed_placement_is_raised_and_nothing_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import registry.blobs.local as local_store

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_store, "place_range", full)
    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=4, seed=9)
    got = _Upload(src, tmp_path / "upload", LocalStore(tmp_path / "store")).finish()
    assert isinstance(got, OSError) and "No space" in str(got)
    assert _stored_files(tmp_path / "store") == []


@pytest.fixture
def offered(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once ingest has offered where the tensors go (from then on, pieces are routed)."""
    event = threading.Event()
    real = Arrival.offer

    def offer(self: Arrival, placer: object) -> None:
        real(self, placer)  # type: ignore[arg-type]
        event.set()

    monkeypatch.setattr(Arrival, "offer", offer)
    return event


def _routed(src: Path, tmp_path: Path, offered: threading.Event, piece: int = 1000) -> _Upload:
    """An upload of ``src`` whose header and first bytes are written to the file before ingest offers
    where the tensors go, and the rest handed over in ``piece``-byte pieces that straddle tensors."""
    upload = _Upload(src, tmp_path / "upload", LocalStore(tmp_path / "store"), route=True)
    data_offset = 8 + int.from_bytes(upload.data[:8], "little")
    upload.write(data_offset + 3 * piece + 17, piece)
    assert offered.wait(10)
    return upload


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "comfyui"])
def test_a_routed_upload_puts_its_tensors_straight_into_the_stored_file_and_keeps_only_the_rest(
    tmp_path: Path, fmt: str, offered: threading.Event
) -> None:
    """Once ingest knows where each tensor goes, the writer puts those bytes there and not in its own
    file: the stored file is byte for byte what ingesting the finished file gives, and the upload file
    keeps its length, its header and alphas (what registering inspects), and holes where tensors were."""
    src = synth_lora(tmp_path / "src.safetensors", fmt=fmt, base_model=SINGLE, rank=8, blocks=12, seed=10)
    expected = ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE)
    upload = _routed(src, tmp_path, offered)
    got = upload.finish()
    assert isinstance(got, IngestedFile), got
    assert upload.arrival.routed
    reference = LocalStore(tmp_path / "reference").path(expected.sha256).read_bytes()
    assert (got.sha256, got.payload_sha256, got.size) == (expected.sha256, expected.payload_sha256, expected.size)
    assert LocalStore(tmp_path / "store").path(got.sha256).read_bytes() == reference

    kept, data = upload.dest.read_bytes(), upload.data
    assert len(kept) == len(data) and kept != data
    header = 8 + int.from_bytes(data[:8], "little")
    assert kept[:header] == data[:header]
    assert kept.count(0) > len(data) // 2  # most of it never written there
    as_kept, as_sent = inspect_lora(upload.dest, BASE), inspect_lora(src, BASE)
    facts = [[(m.module, m.rank, m.alpha) for m in ins.modules] for ins in (as_kept, as_sent)]
    assert facts[0] == facts[1]


def _nan_first(path: Path) -> Path:
    """``path`` with a NaN in the tensor at the front of its data section (one of block 0's)."""
    import math

    from registry.files.safetensors_io import read_header

    data = bytearray(path.read_bytes())
    with open(path, "rb") as fh:
        header = read_header(fh, len(data))
    first = min(header.tensors, key=lambda t: t.start)
    assert first.dtype == "F16"
    at = header.data_offset + first.start + 2 * (math.prod(first.shape) // 2)
    data[at : at + 2] = b"\x00\x7e"  # fp16 quiet NaN
    path.write_bytes(bytes(data))
    return path


def test_a_routed_upload_that_ingest_refuses_is_written_to_its_file_from_then_on(
    tmp_path: Path, offered: threading.Event
) -> None:
    """Ingest refusing the file midway withdraws the route before the stored file goes: the rest of
    the upload lands in its own file, and nothing is kept in the store."""
    src = _nan_first(synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=12, seed=11))
    upload = _routed(src, tmp_path, offered)
    while upload.thread.is_alive() and upload.written < len(upload.data):
        upload.write(upload.written + 1000, 1000)
        upload.thread.join(0.002)
    upload.thread.join(10)
    assert not upload.thread.is_alive() and upload.written < len(upload.data)  # refused before the end
    tail = upload.written
    got = upload.finish()
    assert isinstance(got, InvalidFile) and "NaN" in got.message
    assert upload.dest.read_bytes()[tail:] == upload.data[tail:]
    assert _stored_files(tmp_path / "store") == []


def test_a_piece_that_cannot_be_routed_fails_the_upload_and_nothing_is_kept(
    tmp_path: Path, offered: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    import registry.blobs.local as local_store

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    src = synth_lora(tmp_path / "src.safetensors", base_model=SINGLE, rank=8, blocks=4, seed=12)
    upload = _routed(src, tmp_path, offered)
    monkeypatch.setattr(local_store._LocalWriter, "put", full)
    with pytest.raises(OSError, match="No space"):
        upload.write(len(upload.data), 1000)
    assert isinstance(upload.fail(), Abandoned)
    assert _stored_files(tmp_path / "store") == []
