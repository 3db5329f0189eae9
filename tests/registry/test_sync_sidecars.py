"""What a ComfyUI host gets besides the LoRA files: sidecars in the forms Lora-Manager and A1111/Forge
read, a remembered --pin, trial candidates for LoRAs with no current version, and a running ComfyUI
told to drop its caches after a change."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from registry.backends.local import Wanlora
from registry.domain.digests import canary
from registry.sync.comfyui import MANIFEST, sync_comfyui
from registry.sync.notify import free_comfyui
from registry.sync.sidecars import STACKING
from tests.helpers import register
from tests.registry.test_sync import do_sync, promote

FOLDER = "models/loras/wanlora/default/character"


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "models" / "loras").mkdir(parents=True)
    return root


def _read(comfy: Path, name: str) -> Any:
    return json.loads((comfy / FOLDER / name).read_text())


def test_sidecars_carry_what_lora_manager_and_a1111_read(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    v1 = register(wl, tmp_path, version="1.0.0", seed=1, trigger_words=["sarah", "sarah smiling"], scores={"best_strength": 0.8, "consistency": 9.1})  # fmt: skip
    promote(wl, "sarah", "1.0.0")
    report = do_sync(wl, comfy)
    assert report.copied == ["default/character/sarah.safetensors"]
    assert sorted(report.sidecars_written) == [
        "default/character/sarah.json",
        "default/character/sarah.metadata.json",
        "default/character/sarah.wanlora.json",
    ]
    lora_file = comfy / FOLDER / "sarah.safetensors"
    meta = _read(comfy, "sarah.metadata.json")
    # The fields Lora-Manager's LoraMetadata reads, with its conventions: trigger words in
    # civitai.trainedWords, the recommended strength in the usage_tips JSON string.
    for key in ("file_name", "model_name", "file_path", "size", "modified", "sha256", "base_model", "preview_url",
                "notes", "from_civitai", "civitai", "tags", "modelDescription", "favorite", "exclude", "usage_tips"):  # fmt: skip
        assert key in meta, key
    assert meta["file_name"] == "sarah" and meta["file_path"] == lora_file.as_posix()
    assert meta["sha256"] == v1.files[0].sha256 and meta["size"] == lora_file.stat().st_size
    assert meta["civitai"]["trainedWords"] == ["sarah", "sarah smiling"]
    assert json.loads(meta["usage_tips"]) == {"strength": 0.8}
    assert meta["base_model"] == "Wan Video 2.2 TI2V-5B" and meta["from_civitai"] is False
    a1111 = _read(comfy, "sarah.json")
    assert a1111["activation text"] == "sarah, sarah smiling" and a1111["preferred weight"] == 0.8
    assert "1.0.0" in a1111["notes"] and a1111["description"]
    own = _read(comfy, "sarah.wanlora.json")
    assert own["version"] == "1.0.0" and own["status"] == "current" and own["recommended_strength"] == 0.8
    assert own["stacking"] == STACKING == {"1": [0.9, 1.0], "2": [0.7, 0.9], "3+": [0.6, 0.8]}
    assert own["scores"]["consistency"] == 9.1 and own["changelog"] == "seed 1"
    manifest = json.loads((comfy / "models/loras/wanlora" / MANIFEST).read_text())["files"]
    assert manifest["default/character/sarah.wanlora.json"]["role"] == "sidecar"
    assert do_sync(wl, comfy).sidecars_written == []  # nothing changed: nothing written
    assert not do_sync(wl, comfy, check=True).drift


def test_sidecars_follow_the_version_keep_a_tools_edit_and_go_with_their_lora(
    wl: Wanlora, tmp_path: Path, comfy: Path
) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    promote(wl, "sarah", "1.0.0")
    do_sync(wl, comfy)
    meta = comfy / FOLDER / "sarah.metadata.json"
    edited = {**json.loads(meta.read_text()), "favorite": True}  # Lora-Manager keeps favourites here
    meta.write_text(json.dumps(edited))
    assert do_sync(wl, comfy).sidecars_written == [] and json.loads(meta.read_text())["favorite"] is True
    promote(wl, "sarah", "1.1.0")
    report = do_sync(wl, comfy)
    assert "default/character/sarah.metadata.json" in report.sidecars_written
    assert _read(comfy, "sarah.wanlora.json")["version"] == "1.1.0"
    (comfy / FOLDER / "sarah.json").unlink()
    assert do_sync(wl, comfy, check=True).sidecars_missing == ["default/character/sarah.json"]
    assert do_sync(wl, comfy).sidecars_written == ["default/character/sarah.json"]
    with wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.1.0", reason="recall")
    report = do_sync(wl, comfy)
    assert report.removed == ["default/character/sarah.safetensors"] and len(report.sidecars_removed) == 3
    assert not (comfy / "models/loras/wanlora/default").exists()  # nothing left behind


def test_a_sidecar_path_taken_by_someone_elses_file_is_left_alone(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    theirs = comfy / FOLDER / "sarah.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text('{"activation text": "mine"}')
    report = do_sync(wl, comfy)
    assert report.conflicts == ["default/character/sarah.json"] and theirs.read_text() == '{"activation text": "mine"}'


def test_pin_is_remembered_until_turned_off(wl: Wanlora, tmp_path: Path, comfy: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    promote(wl, "sarah", "1.0.0")
    assert "default/character/sarah@1.0.0.safetensors" in do_sync(wl, comfy, pin=True).copied
    again = do_sync(wl, comfy)  # a plain sync keeps the pinned files
    assert again.pinned and "default/character/sarah@1.0.0.safetensors" in again.unchanged
    assert (comfy / FOLDER / "sarah@1.0.0.wanlora.json").exists()
    off = do_sync(wl, comfy, pin=False)
    assert off.removed == ["default/character/sarah@1.0.0.safetensors"] and not do_sync(wl, comfy).pinned


def test_a_trial_candidate_reaches_its_hosts_when_the_lora_has_no_current_version(
    wl: Wanlora, tmp_path: Path, comfy: Path
) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    with wl.evaluation() as ev:
        trial = ev.start_trial(project="default", name="sarah", version="1.0.0", share=50)
    inside = next(f"host-{i}" for i in range(1000) if canary(trial.id, f"host-{i}", 50))
    outside = next(f"host-{i}" for i in range(1000) if not canary(trial.id, f"host-{i}", 50))
    with wl.registry(write=False) as reg:
        assert reg.current_targets(client=outside) == []
        (target,) = reg.current_targets(client=inside)
    assert target.version == "1.0.0" and target.trial and target.status.value == "testing"
    report = sync_comfyui([target], wl.store, comfy)
    assert report.copied == ["default/character/sarah.safetensors"]
    assert _read(comfy, "sarah.wanlora.json")["trial"] is True


class _ComfyFree(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"path": self.path, "body": body})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_running_comfyui_is_told_to_drop_its_caches_and_a_silent_one_is_reported(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ComfyFree)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert free_comfyui(f"http://127.0.0.1:{server.server_port}") is None
        assert _ComfyFree.calls == [{"path": "/free", "body": {"unload_models": True, "free_memory": True}}]
    finally:
        server.shutdown()
        server.server_close()
    error = free_comfyui(f"http://127.0.0.1:{server.server_port}", timeout=1)
    assert error is not None and "did not answer" in error


def tiny_png(seed: int = 0) -> bytes:
    """A valid 2×2 RGB PNG, made by hand."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([seed, 40, 80] * 2) for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _record_preview(wl: Wanlora, version: str, png: bytes, phase: str = "quality") -> None:
    import base64

    from registry.domain.eval_schemas import EvaluationIn

    with wl.evaluation() as ev:
        digest = ev.digest(project="default", name="sarah", version=version)
        ev.record(
            project="default", name="sarah", version=version,
            result=EvaluationIn(phase=phase, digest=digest, passed=True, preview_png=base64.b64encode(png).decode()),  # type: ignore[arg-type]
        )  # fmt: skip


def test_the_phase_2_preview_reaches_the_host_as_lora_managers_preview(
    wl: Wanlora, tmp_path: Path, comfy: Path
) -> None:
    from registry.domain.access import Principal
    from registry.domain.errors import InvalidInput, NotFound

    register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    _record_preview(wl, "1.0.0", tiny_png(1))
    _record_preview(wl, "1.1.0", tiny_png(2))
    promote(wl, "sarah", "1.0.0")
    with wl.registry(write=False) as reg:
        targets = reg.current_targets()

    def fetch(t: Any) -> bytes | None:
        with wl.registry(write=False) as reg:
            return reg.preview(project=t.project, name=t.lora, version=t.version)

    report = sync_comfyui(targets, wl.store, comfy, preview=fetch)
    png = comfy / FOLDER / "sarah.preview.png"
    assert "default/character/sarah.preview.png" in report.sidecars_written and png.read_bytes() == tiny_png(1)
    assert _read(comfy, "sarah.metadata.json")["preview_url"] == png.as_posix()
    assert sync_comfyui(targets, wl.store, comfy, preview=fetch).sidecars_written == []
    host = wl.as_principal(Principal(user="host", subject="token:7", role="production", project="default"))
    with host.registry(write=False) as reg:
        assert reg.preview(project="default", name="sarah", version="1.0.0") == tiny_png(1)
        with pytest.raises(NotFound):  # a testing version does not exist for production
            reg.preview(project="default", name="sarah", version="1.1.0")
    with pytest.raises(InvalidInput, match="must be a PNG"):
        _record_preview(wl, "1.1.0", b"GIF89a not a png")
    with pytest.raises(InvalidInput, match="only a phase 2"):
        _record_preview(wl, "1.1.0", tiny_png(3), phase="technical")
