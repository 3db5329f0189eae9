"""A lying registry or a tampered manifest cannot make sync touch anything outside the ComfyUI
folder (issue 11, item 1): names from a server are held to the registration rules, and every path in
the manifest must stay inside wanlora's folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.backends.local import Wanlora
from registry.domain.errors import IntegrityError, InvalidInput
from registry.sync.comfyui import MANIFEST, sync_comfyui
from tests.helpers import register
from tests.registry.test_sync import do_sync, promote


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "models" / "loras").mkdir(parents=True)
    return root


def _targets(wl: Wanlora) -> list:  # type: ignore[type-arg]
    with wl.registry(write=False) as reg:
        return reg.current_targets()


@pytest.mark.parametrize(
    "field, value",
    [
        ("lora", "../../../pwned"),
        ("lora", "a/b"),
        ("project", ".."),
        ("project", "/etc"),
        ("lora", "x\x00y"),
        ("version", "1.0.0/../../../x"),
        ("version", "not-a-version"),
    ],
)
def test_names_from_a_lying_registry_are_refused_before_anything_is_written(
    wl: Wanlora, tmp_path: Path, comfy: Path, field: str, value: str
) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    (good,) = _targets(wl)
    lie = good.model_copy(update={field: value})
    with pytest.raises(IntegrityError, match="not a valid LoRA"):
        sync_comfyui([good, lie], wl.store, comfy, pin=True)
    written = [p for p in tmp_path.rglob("*.safetensors") if "artifacts" not in p.parts and p.parent != tmp_path]
    assert written == []  # not even the good target: the answer as a whole is not trusted


def test_a_digest_that_is_not_a_digest_is_refused(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    (good,) = _targets(wl)
    bad_file = good.files[0].model_copy(update={"sha256": "../../../../etc/passwd"})
    with pytest.raises(IntegrityError):
        sync_comfyui([good.model_copy(update={"files": [bad_file]})], wl.store, comfy)


@pytest.mark.parametrize("rel", ["../../victim.safetensors", "/tmp/victim.safetensors", "a/../../victim", "a//b"])
def test_a_tampered_manifest_removes_nothing_outside(wl: Wanlora, tmp_path: Path, comfy: Path, rel: str) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    victim = comfy / "models" / "victim.safetensors"
    victim.write_bytes(b"someone's file")
    manifest = comfy / "models/loras/wanlora" / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["files"][rel] = {"sha256": "0" * 64, "size": 14, "mtime_ns": 0, "project": "default", "lora": "x",
                         "version": "1.0.0", "role": "single"}  # fmt: skip
    manifest.write_text(json.dumps(doc))
    with wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.0.0")  # sync would now remove what it manages
    with pytest.raises(InvalidInput, match="tampered with, and nothing was changed"):
        do_sync(wl, comfy)
    assert victim.read_bytes() == b"someone's file"
    assert (comfy / "models/loras/wanlora/default/character/sarah.safetensors").exists()


def test_a_folder_link_out_of_the_managed_folder_is_refused(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.safetensors").write_bytes(b"someone's file")
    (comfy / "models/loras/wanlora/evil").symlink_to(outside, target_is_directory=True)
    manifest = comfy / "models/loras/wanlora" / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["files"]["evil/victim.safetensors"] = {**doc["files"]["default/character/sarah.safetensors"], "lora": "x"}
    manifest.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="outside"):
        do_sync(wl, comfy)
    assert (outside / "victim.safetensors").read_bytes() == b"someone's file"
