"""ComfyUI sync: layout, ownership, drift, idempotence, extra_model_paths.yaml and --watch."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from registry.backends.local import Wanlora
from registry.blobs.base import copy_hashed, copy_in_kernel
from registry.domain.errors import IntegrityError, InvalidInput
from registry.sync.comfyui import MANIFEST, SyncReport, loras_dir, sync_comfyui, watch_comfyui
from tests.helpers import PAIR, make, register


def do_sync(wl: Wanlora, comfy: Path, **kw: object) -> SyncReport:
    with wl.registry(write=False) as reg:
        targets = reg.current_targets(project=kw.get("project"))  # type: ignore[arg-type]
    return sync_comfyui(targets, wl.store, comfy, **kw)  # type: ignore[arg-type]


def promote(wl: Wanlora, name: str, version: str, project: str = "default") -> None:
    with wl.registry() as reg:
        reg.promote(project=project, name=name, version=version)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "models" / "loras").mkdir(parents=True)
    return root


def test_stable_names_follow_promotions_and_rollbacks(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    v1 = register(wl, tmp_path, version="1.0.0", seed=1)
    v2 = register(wl, tmp_path, version="1.1.0", seed=2)
    target = comfy / "models/loras/wanlora/default/character/sarah.safetensors"
    assert do_sync(wl, comfy).copied == []  # nothing current yet
    promote(wl, "sarah", "1.0.0")
    report = do_sync(wl, comfy)
    assert report.copied == ["default/character/sarah.safetensors"] and sha(target) == v1.files[0].sha256
    promote(wl, "sarah", "1.1.0")
    assert do_sync(wl, comfy).outdated == ["default/character/sarah.safetensors"]
    assert sha(target) == v2.files[0].sha256
    with wl.registry() as reg:
        reg.rollback(project="default", name="sarah")
    do_sync(wl, comfy)
    assert sha(target) == v1.files[0].sha256


def test_pairs_and_pins(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    high, low = make(tmp_path, "h", base_model=PAIR, seed=1), make(tmp_path, "l", base_model=PAIR, seed=2)
    register(wl, tmp_path, lora="hero", base_model=PAIR, category="style", file=high, low_noise=low, version="2.0.0")
    promote(wl, "hero", "2.0.0")
    report = do_sync(wl, comfy, pin=True)
    assert sorted(report.copied) == [
        "default/style/hero@2.0.0_high_noise.safetensors",
        "default/style/hero@2.0.0_low_noise.safetensors",
        "default/style/hero_high_noise.safetensors",
        "default/style/hero_low_noise.safetensors",
    ]


def test_nothing_changed_copies_nothing(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    manifest = (comfy / "models/loras/wanlora" / MANIFEST).stat().st_mtime_ns
    again = do_sync(wl, comfy)
    assert again.copied == [] and again.removed == [] and again.unchanged == ["default/character/sarah.safetensors"]
    assert (comfy / "models/loras/wanlora" / MANIFEST).stat().st_mtime_ns == manifest


def test_unmanaged_files_are_never_touched(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    mine = comfy / "models/loras/sarah_v3_final2.safetensors"
    mine.write_bytes(b"hand made")
    squatter = comfy / "models/loras/wanlora/default/character/sarah.safetensors"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's")
    register(wl, tmp_path)
    promote(wl, "sarah", "1.0.0")
    report = do_sync(wl, comfy)
    assert report.conflicts == ["default/character/sarah.safetensors"] and report.copied == []
    assert squatter.read_bytes() == b"someone else's" and mine.read_bytes() == b"hand made"


def test_lora_without_current_is_removed(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    with wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.0.0", reason="recall")
    report = do_sync(wl, comfy)
    assert report.removed == ["default/character/sarah.safetensors"]
    assert not (comfy / "models/loras/wanlora/default").exists()  # empty folders pruned


def test_check_reports_drift_and_changes_nothing(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, lora="a", seed=1)
    register(wl, tmp_path, lora="b", seed=2)
    promote(wl, "a", "1.0.0")
    promote(wl, "b", "1.0.0")
    do_sync(wl, comfy)
    root = comfy / "models/loras/wanlora"
    (root / "default/character/a.safetensors").unlink()
    b = root / "default/character/b.safetensors"
    b.chmod(0o644)
    b.write_bytes(b"tampered")
    (root / "default/character/stray.safetensors").write_bytes(b"?")
    report = do_sync(wl, comfy, check=True)
    assert report.drift
    assert report.missing == ["default/character/a.safetensors"]
    assert report.modified == ["default/character/b.safetensors"]
    assert report.unknown == ["default/character/stray.safetensors"]
    assert b.read_bytes() == b"tampered" and not (root / "default/character/a.safetensors").exists()
    fixed = do_sync(wl, comfy)
    assert sorted(fixed.copied) == ["default/character/a.safetensors", "default/character/b.safetensors"]
    assert not do_sync(wl, comfy, check=True).missing


def test_project_scope(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, project="p1", lora="x", seed=1)
    register(wl, tmp_path, project="p2", lora="y", seed=2)
    promote(wl, "x", "1.0.0", project="p1")
    promote(wl, "y", "1.0.0", project="p2")
    do_sync(wl, comfy)
    report = do_sync(wl, comfy, project="p1")
    assert report.removed == [] and report.unchanged == ["p1/character/x.safetensors"]


def test_extra_model_paths_yaml_is_honoured(tmp_path: Path, comfy: Path, wl: Wanlora) -> None:
    shared = tmp_path / "shared-models"
    (comfy / "extra_model_paths.yaml").write_text(
        f"a111:\n  base_path: /nonexistent\n  checkpoints: models/Stable-diffusion\n"
        f"comfyui:\n  base_path: {shared}\n  is_default: true\n  loras: |\n    models/loras\n    other/loras\n"
    )
    assert loras_dir(comfy) == shared / "models/loras"
    register(wl, tmp_path)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    assert (shared / "models/loras/wanlora/default/character/sarah.safetensors").is_file()
    (comfy / "extra_model_paths.yaml").write_text("a: [unclosed")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        loras_dir(comfy)


def test_base_path_variables_are_expanded_as_comfyui_does(
    tmp_path: Path, comfy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELS_ROOT", str(tmp_path / "nas"))
    (comfy / "extra_model_paths.yaml").write_text("comfyui:\n  base_path: $MODELS_ROOT/comfy\n  loras: loras\n")
    assert loras_dir(comfy) == tmp_path / "nas" / "comfy" / "loras"  # not a literal "$MODELS_ROOT" folder


def test_damaged_manifest_is_a_clear_error(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    root = comfy / "models/loras/wanlora"
    root.mkdir(parents=True)
    (root / MANIFEST).write_text("{broken")
    with pytest.raises(InvalidInput, match="damaged"):
        do_sync(wl, comfy)


def test_watch_applies_a_rollback_within_a_second(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    v1 = register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    promote(wl, "sarah", "1.0.0")
    promote(wl, "sarah", "1.1.0")
    target = comfy / "models/loras/wanlora/default/character/sarah.safetensors"

    def fetch() -> tuple[int, list]:
        with wl.registry(write=False) as reg:
            return reg.last_event_id(), reg.current_targets()

    def last() -> int:
        with wl.registry(write=False) as reg:
            return reg.last_event_id()

    stop = threading.Event()
    synced = threading.Event()
    thread = threading.Thread(
        target=watch_comfyui,
        args=(fetch, last, lambda t: sync_comfyui(t, wl.store, comfy)),
        kwargs={"interval": 0.05, "stop": stop, "on_sync": lambda r: synced.set()},
        daemon=True,
    )
    thread.start()
    try:
        assert synced.wait(5)
        with wl.registry() as reg:
            reg.rollback(project="default", name="sarah", reason="bad")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            if target.exists() and sha(target) == v1.files[0].sha256:
                break
            time.sleep(0.01)
        assert sha(target) == v1.files[0].sha256, "rollback not applied within 1 s"
    finally:
        stop.set()
        thread.join(5)


def _stored_path(wl: Wanlora, sha256: str) -> Path:
    return wl.store.path(sha256)  # type: ignore[attr-defined, no-any-return]


def test_a_corrupt_stored_file_is_caught_by_the_kernel_copy_and_nothing_lands(
    wl: Wanlora, tmp_path: Path, comfy: Path
) -> None:
    """From a local store the kernel copies the file and the copy is hashed: a stored file changed
    outside wanlora is refused, and the ComfyUI folder keeps neither it nor a temporary file."""
    register(wl, tmp_path, lora="hero", seed=1)
    promote(wl, "hero", "1.0.0")
    with wl.registry(write=False) as reg:
        (target,) = reg.current_targets()
    stored = _stored_path(wl, target.files[0].sha256)
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupt"):
        do_sync(wl, comfy)
    left = [p.name for p in (comfy / "models/loras").rglob("*") if p.is_file()]
    assert not [name for name in left if name.endswith(".safetensors") or name.startswith(".wanlora-tmp-")], left


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.ENOSYS, None])
def test_the_copy_falls_back_to_user_space_where_the_kernel_cannot(
    wl: Wanlora, tmp_path: Path, comfy: Path, monkeypatch: pytest.MonkeyPatch, refusal: int | None
) -> None:
    """copy_file_range missing (another OS) or refused (another file system on an older kernel): the
    same bytes are copied through a buffer, and verified the same way."""
    register(wl, tmp_path, lora="hero", seed=2)
    promote(wl, "hero", "1.0.0")
    if refusal is None:
        monkeypatch.delattr(os, "copy_file_range")
    else:

        def refuse(*_: object) -> int:
            raise OSError(refusal, os.strerror(refusal))

        monkeypatch.setattr(os, "copy_file_range", refuse)
    report = do_sync(wl, comfy)
    (copied,) = report.copied
    with wl.registry(write=False) as reg:
        (target,) = reg.current_targets()
    assert sha(comfy / "models/loras/wanlora" / copied) == target.files[0].sha256


def test_copy_in_kernel_passes_on_real_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk is not a reason to try another way: ENOSPC reaches the caller (OutOfSpace upstream)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x" * 1000)

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full)
    with open(src, "rb") as i, open(dst, "wb") as o, pytest.raises(OSError) as info:
        copy_in_kernel(i.fileno(), o.fileno(), 1000)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    seen: list[int] = []
    with open(src, "rb") as i, open(dst, "wb") as o:
        copy_in_kernel(i.fileno(), o.fileno(), 1000, seen.append)
    assert dst.read_bytes() == src.read_bytes() and seen[-1] == 1000


@pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024 + 7, 70 * 1024 * 1024 + 5])
def test_copy_hashed_hashes_what_landed(tmp_path: Path, size: int) -> None:
    """Steps of the kernel copy are hashed behind it: the digest is the whole copy's, at any size
    (nothing, one byte, within one step, across steps)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(size))
    with open(src, "rb") as i, open(dst, "w+b") as o:
        digest, landed = copy_hashed(i.fileno(), o.fileno(), size)
    assert (digest, landed) == (hashlib.sha256(src.read_bytes()).hexdigest(), size)
    assert dst.read_bytes() == src.read_bytes()
