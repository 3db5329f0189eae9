"""The node pack's reading of what sync wrote, without a server: names, pins, pairs, the waiting out of a
sync in progress, and refusals of files sync did not verify or that a manifest points outside."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from comfyui_wanlora.managed import Manifests, WanloraError
from registry.backends.local import Wanlora
from registry.sync.comfyui import sync_comfyui
from tests.helpers import PAIR, make, register


@pytest.fixture
def synced(wl: Wanlora, tmp_path: Path) -> Path:
    register(wl, tmp_path, lora="solo", version="1.0.0", seed=1, scores={"best_strength": 0.7}, trigger_words=["solo"])
    register(wl, tmp_path, lora="duo", version="2.0.0", file=make(tmp_path, "h", seed=2, base_model=PAIR),
             low_noise=make(tmp_path, "l", seed=3, base_model=PAIR), base_model=PAIR)  # fmt: skip
    with wl.registry() as reg:
        reg.promote(project="default", name="solo", version="1.0.0")
        reg.promote(project="default", name="duo", version="2.0.0")
        targets = reg.current_targets()
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    sync_comfyui(targets, wl.store, comfy, pin=True)
    return comfy / "models" / "loras"


def test_names_pins_pairs_and_the_sidecar(synced: Path) -> None:
    m = Manifests([str(synced)])
    assert m.names() == ["default/character/duo", "default/character/solo"]  # pinned files are not names
    solo = m.resolve("default/character/solo")
    assert solo.version == "1.0.0" and not solo.pair and solo.info["recommended_strength"] == 0.7
    assert solo.info["trigger_words"] == ["solo"]
    assert m.resolve("default/character/solo", "1.0.0").files[0].path.name == "solo@1.0.0.safetensors"
    duo = m.resolve("default/character/duo")
    assert duo.pair and [f.role for f in duo.files] == ["high_noise", "low_noise"]
    assert duo.fingerprint != m.resolve("default/character/duo", "2.0.0").fingerprint  # other files on disk
    with pytest.raises(WanloraError, match=r"solo@9\.9\.9 is not on this host"):
        m.resolve("default/character/solo", "9.9.9")
    with pytest.raises(WanloraError, match="not on this host"):
        m.resolve("default/character/nobody")
    with pytest.raises(WanloraError, match="not a managed LoRA name"):
        m.resolve("../../etc/passwd")


def test_a_file_sync_did_not_verify_is_refused(synced: Path) -> None:
    m = Manifests([str(synced)])
    solo = m.resolve("default/character/solo").files[0]
    assert solo.verified() == solo.path
    os.utime(solo.path, ns=(1, 1))  # touched, same bytes: still the file sync verified
    assert solo.verified() == solo.path
    solo.path.write_bytes(b"not the weights")
    with pytest.raises(WanloraError, match="does not match the sha256"):
        solo.verified()
    solo.path.unlink()
    with pytest.raises(WanloraError, match="is missing"):
        solo.verified()


def test_a_tampered_or_damaged_manifest_is_refused(synced: Path, tmp_path: Path) -> None:
    manifest = synced / "wanlora" / ".wanlora-manifest.json"
    doc = json.loads(manifest.read_text())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.safetensors").write_bytes(b"someone else's file")
    (synced / "wanlora" / "evil").symlink_to(outside, target_is_directory=True)  # a folder that leads out
    doc["files"]["evil/character/x.safetensors"] = {**doc["files"]["default/character/solo.safetensors"]}
    (outside / "character").mkdir()
    (outside / "character" / "x.safetensors").write_bytes(b"someone else's file")
    manifest.write_text(json.dumps(doc))
    with pytest.raises(WanloraError, match="outside"):
        Manifests([str(synced)]).resolve("evil/character/x")
    with pytest.raises(WanloraError, match="not a managed LoRA name"):
        Manifests([str(synced)]).resolve("default/character/../../victim")
    manifest.write_text("{not json")
    with pytest.raises(WanloraError, match="damaged"):
        Manifests([str(synced)]).resolve("default/character/solo")


def test_a_sync_in_progress_is_waited_out(synced: Path) -> None:
    """Sync renames the new file in, then writes the manifest: in between, the node waits for the entry."""
    manifest = synced / "wanlora" / ".wanlora-manifest.json"
    doc = json.loads(manifest.read_text())
    solo = synced / "wanlora" / "default/character/solo.safetensors"
    old_entry = doc["files"]["default/character/solo.safetensors"]
    data = solo.read_bytes()
    solo.write_bytes(data)  # a new file now, the manifest not yet updated
    st = solo.stat()

    def finish_sync() -> None:
        time.sleep(0.2)
        doc["files"]["default/character/solo.safetensors"] = {
            **old_entry,
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
        }
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, manifest)  # as sync writes it: a reader never sees half a manifest

    threading.Thread(target=finish_sync).start()
    started = time.monotonic()
    managed = Manifests([str(synced)]).settled("default/character/solo", timeout=5)
    assert 0.15 < time.monotonic() - started < 5 and managed.files[0].as_synced()
