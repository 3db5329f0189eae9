"""`wanlora comfyui install/uninstall`, and `sync --comfyui-url` when ComfyUI does not answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import SINGLE, make

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


@pytest.fixture
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "models" / "loras").mkdir(parents=True)
    (root / "main.py").write_text("# ComfyUI\n")
    (root / "nodes.py").write_text("# ComfyUI\n")
    return root


def test_install_update_and_uninstall_touch_only_the_pack(comfy: Path, tmp_path: Path) -> None:
    assert "restart ComfyUI" in run("comfyui", "install", "--comfyui", str(comfy))
    pack = comfy / "custom_nodes" / "wanlora"
    assert {"__init__.py", "managed.py", "nodes.py", ".wanlora-node-pack"} <= {p.name for p in pack.iterdir()}
    (pack / "stale.py").write_text("# from an older wanlora")
    run("comfyui", "install", "--comfyui", str(comfy))  # an update replaces the pack whole
    assert not (pack / "stale.py").exists() and not list((comfy / "custom_nodes").glob(".wanlora-pack-*"))
    run("comfyui", "uninstall", "--comfyui", str(comfy))
    assert not pack.exists()
    assert "nothing to remove" in run("comfyui", "uninstall", "--comfyui", str(comfy))
    pack.mkdir()
    (pack / "__init__.py").write_text("# someone else's nodes")
    assert "is not wanlora's node pack" in run("comfyui", "install", "--comfyui", str(comfy), code=1)
    assert "is not wanlora's node pack" in run("comfyui", "uninstall", "--comfyui", str(comfy), code=1)
    assert (pack / "__init__.py").read_text() == "# someone else's nodes"
    assert "is not a ComfyUI folder" in run("comfyui", "install", "--comfyui", str(tmp_path / "nowhere"), code=2)


def test_sync_completes_and_says_so_when_comfyui_does_not_answer(comfy: Path, tmp_path: Path) -> None:
    run("register", str(make(tmp_path, "a", seed=1)), "--lora", "x", "--category", "style",
        "--base-model", SINGLE, "--version", "1.0.0", "-m", "a", "-q")  # fmt: skip
    run("promote", "x", "1.0.0")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run("sync", "--comfyui", str(comfy), "--comfyui-url", f"http://127.0.0.1:{port}")
    assert "did not answer" in out and (comfy / "models/loras/wanlora/default/style/x.safetensors").exists()
    assert "invalid ComfyUI URL" in run("sync", "--comfyui", str(comfy), "--comfyui-url", "ftp://x", code=2)
