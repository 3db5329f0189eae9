"""The local store's I/O shortcuts, each held to what it may skip: early writeback (bytes intact, ranges
handed to the disk as they land), hashing a source before the registry has loaded (used only for the
very file it hashed), and a hash of a stored file shared by the processes of one host (kept in the
host's folder, never the store; never for bytes that changed since)."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from registry.blobs import base as blobs_base
from registry.blobs import writeback
from registry.blobs.local import LocalStore
from registry.domain.errors import IntegrityError
from registry.files import ingest as ingest_module
from registry.files.ingest import ingest_lora
from registry.files.source_digests import DataSectionHash, early_digests, hash_early
from registry.files.synth import synth_lora

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")


def autov3(path: Path) -> str:
    digest = DataSectionHash()
    digest.update(path.read_bytes())
    return digest.hexdigest() or ""


def big_lora(path: Path) -> Path:
    """A LoRA of about 40 MB: more than one writeback step."""
    return synth_lora(path, base_model="wan2.1-t2v-14b", rank=64, blocks=5, dtype="F32", seed=3)


# -- early writeback ------------------------------------------------------------------------------------


@linux_only
def test_writeback_hands_each_step_to_the_disk_once_it_has_landed(tmp_path: Path) -> None:
    assert writeback.available()
    with open(tmp_path / "f", "wb") as fh:
        wb = writeback.Writeback(fh.fileno())
        fh.write(b"\0" * (writeback.STEP + 10))
        fh.flush()
        wb.landed(writeback.STEP - 1)
        assert wb.flushed == 0  # less than a step: left to the fsync
        wb.landed(writeback.STEP + 10)
        assert wb.flushed == writeback.STEP + 10


def test_store_writes_past_several_writeback_steps_keep_every_byte(tmp_path: Path) -> None:
    """Through write() (the path of rescaled tensors and of S3-bound bytes) and through copy_from (the
    kernel copies of ingest, on a side thread): what is stored is byte for byte what was given."""
    store = LocalStore(tmp_path / "store")
    data = os.urandom(writeback.STEP * 2 + 12345)
    w = store.writer()
    for i in range(0, len(data), 1 << 20):
        w.write(data[i : i + (1 << 20)])
    sha, size, created = w.commit()
    assert (sha, size, created) == (hashlib.sha256(data).hexdigest(), len(data), True)
    assert store.path(sha).read_bytes() == data

    src = big_lora(tmp_path / "big.safetensors")
    assert src.stat().st_size > writeback.STEP
    stored = ingest_lora(src, store)
    assert store.path(stored.sha256).stat().st_size == stored.size
    assert hashlib.sha256(store.path(stored.sha256).read_bytes()).hexdigest() == stored.sha256
    assert not list((tmp_path / "store/tmp").iterdir())


def test_a_failed_kernel_copy_is_raised_and_nothing_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies run on a side thread; an error there still reaches the caller, and the half-written
    temporary file is removed."""
    store = LocalStore(tmp_path / "store")
    src = big_lora(tmp_path / "big.safetensors")
    calls = 0

    def failing(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        blobs_base.copy_range(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("registry.blobs.local.copy_range", failing)
    with pytest.raises(OSError, match="No space left"):
        ingest_lora(src, store)
    assert not list((tmp_path / "store/tmp").iterdir())
    assert not list((tmp_path / "store/sha256").iterdir())


# -- hashing the source early -----------------------------------------------------------------------------


def _wait(path: Path) -> None:
    early = early_digests(path)
    assert early is not None
    assert early.done.wait(30)


def test_ingest_uses_the_early_hash_of_the_very_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = synth_lora(tmp_path / "a.safetensors", seed=1)
    hash_early([src, None])
    hash_early([src])  # asked twice: hashed once
    _wait(src)

    def not_again(*_: object) -> tuple[str, str]:
        raise AssertionError("the source was hashed again")

    monkeypatch.setattr(ingest_module, "hash_source", not_again)
    stored = ingest_lora(src, LocalStore(tmp_path / "store"))
    assert stored.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert stored.source_autov3 == autov3(src)


def test_a_file_rewritten_after_its_early_hash_is_hashed_again(tmp_path: Path) -> None:
    """The early digests carry the file's identity (inode, size, times): a file written again since
    (here: another LoRA under the same name) is read and hashed by ingest itself."""
    src = synth_lora(tmp_path / "a.safetensors", seed=1)
    hash_early([src])
    _wait(src)
    synth_lora(tmp_path / "b.safetensors", seed=2).replace(src)
    stored = ingest_lora(src, LocalStore(tmp_path / "store"))
    assert stored.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert stored.source_autov3 == autov3(src)


def test_a_file_that_changes_while_it_is_hashed_early_gets_no_early_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = synth_lora(tmp_path / "a.safetensors", seed=1)
    real = ingest_module.hash_source  # the same function the early thread runs
    started = threading.Event()

    def rewritten_midway(path: Path, stop: threading.Event | None = None) -> tuple[str, str]:
        started.set()
        digests = real(path, stop)
        with open(path, "r+b") as fh:  # someone writes the file before the read is over
            fh.seek(-4, os.SEEK_END)
            fh.write(b"\0\0\0\0")
        return digests

    monkeypatch.setattr("registry.files.source_digests.hash_source", rewritten_midway)
    hash_early([src])
    _wait(src)
    assert started.is_set()
    early = early_digests(src)
    assert early is not None and early.digests is None


def test_no_early_read_of_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """/dev/zero would never end, a pipe would block: only regular files are read early."""
    os.mkfifo(tmp_path / "pipe")
    hash_early([Path("/dev/zero"), tmp_path / "pipe", tmp_path / "missing.safetensors"])
    for path in (Path("/dev/zero"), tmp_path / "pipe", tmp_path / "missing.safetensors"):
        early = early_digests(path)
        assert early is not None and early.done.wait(5) and early.digests is None


def test_the_cli_register_hashes_its_file_early_on_the_embedded_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    src = synth_lora(tmp_path / "a.safetensors", base_model="wan2.2-ti2v-5b", seed=4)
    result = CliRunner().invoke(app, ["register", str(src), "--lora", "a", "-p", "p", "--category", "style",
                                      "--base-model", "wan2.2-ti2v-5b", "--version", "1.0.0", "-m", "x", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    early = early_digests(src)
    assert early is not None and early.done.is_set() and early.digests is not None
    assert early.digests.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


# -- a stored file's hash, shared by the processes of one host --------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hashed: list[str] = []
    real = blobs_base.verify_stored

    def counted(store: object, sha256: str) -> str | None:
        hashed.append(sha256)
        return real(store, sha256)  # type: ignore[arg-type]

    monkeypatch.setattr(blobs_base, "verify_stored", counted)
    return hashed


def _stored(store: LocalStore, data: bytes) -> str:
    w = store.writer()
    w.write(data)
    return w.commit()[0]


def _host_store(tmp_path: Path) -> LocalStore:
    """A store as a host's process opens it: the shared hashes in the host's folder, not the store."""
    return LocalStore(tmp_path / "store", verified_dir=tmp_path / "home/verified")


def test_another_process_trusts_a_recent_hash_of_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = _stored(_host_store(tmp_path), b"weights" * 1000)
    assert not (tmp_path / "store/verified").exists()  # nothing of it in the store folder
    hashed = _counting(monkeypatch)
    other = _host_store(tmp_path)  # a second server worker, or a CLI process
    other.check(sha)
    assert hashed == []
    other.check(sha)
    assert hashed == []
    LocalStore(tmp_path / "store").check(sha)  # a store opened without the host's folder hashes for itself
    assert hashed == [sha]


def test_the_embedded_backend_keeps_the_shared_hashes_in_its_home(tmp_path: Path) -> None:
    from registry.backends.local import Wanlora
    from registry.settings import Settings

    wl = Wanlora.from_settings(Settings(home=tmp_path / "home", storage_url=str(tmp_path / "shared-store")))
    try:
        sha = _stored(wl.store, b"weights" * 1000)  # type: ignore[arg-type]
    finally:
        wl.close()
    assert (tmp_path / "home/verified" / sha).is_file()
    assert not (tmp_path / "shared-store/verified").exists()


def test_a_recorded_hash_never_vouches_for_changed_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _host_store(tmp_path)
    sha = _stored(store, b"weights" * 1000)
    path = store.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"WEIGHTS" * 1000)  # same size, new bytes: the change time moves
    hashed = _counting(monkeypatch)
    with pytest.raises(IntegrityError):
        _host_store(tmp_path).check(sha)
    assert hashed == [sha]


def test_a_damaged_or_foreign_record_means_hashing_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _host_store(tmp_path)
    sha = _stored(store, b"weights" * 1000)
    record = tmp_path / "home/verified" / sha
    hashed = _counting(monkeypatch)
    for text in ("not json", '{"identity": [1, 2, 3, 4], "at": 1e18}', '{"identity": "x"}', "[]"):
        record.write_text(text)
        _host_store(tmp_path).check(sha)
    assert hashed == [sha] * 4
    _host_store(tmp_path).check(sha)  # the last hash was recorded again, soundly
    assert hashed == [sha] * 4
    store.delete(sha)
    assert not record.exists()


def test_a_refused_file_is_not_held_up_by_its_early_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest that fails (here: NaN weights) raises at once, even while the early read is still going."""
    from registry.domain.errors import InvalidFile
    from registry.files.safetensors_io import read_header

    src = synth_lora(tmp_path / "nan.safetensors", seed=1)
    with open(src, "rb") as fh:
        header = read_header(fh, src.stat().st_size, name=src.name)
    weight = next(t for t in header.tensors if t.name.endswith("lora_up.weight") and t.dtype == "F16")
    data = bytearray(src.read_bytes())
    at = header.data_offset + weight.start
    data[at : at + 2] = b"\x00\x7e"  # its first value becomes a NaN
    src.write_bytes(bytes(data))
    release, returned = threading.Event(), threading.Event()

    def slow(path: Path, stop: threading.Event | None = None) -> tuple[str, str]:
        release.wait(10)
        returned.set()
        return "", ""

    monkeypatch.setattr("registry.files.source_digests.hash_source", slow)
    hash_early([src])
    try:
        with pytest.raises(InvalidFile, match="NaN"):
            ingest_lora(src, LocalStore(tmp_path / "store"))
        assert not returned.is_set()  # the refusal came while the early read was still going
    finally:
        release.set()
