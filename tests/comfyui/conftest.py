"""One real ComfyUI server per test session (from the copy in ../shared/vendor), headless on the CPU,
with wanlora's node pack installed through the CLI, a probe node of the tests' own, and a tiny WAN DiT
that ComfyUI's model detection recognises."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parents[2] / "shared" / "vendor" / "comfyui-a125cd84.tar.gz"
TINY_WAN = "tiny_wan.safetensors"
RUNTIME = ("aiohttp", "comfyui_frontend_package", "torchsde", "einops", "sentencepiece", "scipy", "torch")


@dataclass
class Comfy:
    root: Path
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def loras(self) -> Path:
        return self.root / "models" / "loras"

    def run(self, graph: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Queue an API-format prompt and wait for its history entry (its outputs and status)."""
        answer = httpx.post(f"{self.url}/prompt", json={"prompt": graph, "client_id": "wanlora-tests"}, timeout=30)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = httpx.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
                return dict(entry, prompt_id=prompt_id)
            time.sleep(0.05)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log.read_text()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable() -> str | None:
    if not VENDOR.exists():
        return f"no ComfyUI copy at {VENDOR}"
    missing = [m for m in RUNTIME if importlib.util.find_spec(m) is None]
    return f"ComfyUI's requirements are not installed: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Comfy]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI=true but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("comfyui") / "ComfyUI"
    root.mkdir()
    with tarfile.open(VENDOR) as archive:
        archive.extractall(root, filter="data")
    launch = [sys.executable, str(HERE / "launch.py"), str(root)]
    subprocess.run([*launch, "--make-tiny-wan", str(root / "models" / "diffusion_models" / TINY_WAN)], check=True)
    installed = CliRunner().invoke(app, ["comfyui", "install", "--comfyui", str(root)])
    assert installed.exit_code == 0, installed.output
    (root / "custom_nodes" / "wanlora_probe").mkdir()
    shutil.copy(HERE / "probe_node.py", root / "custom_nodes" / "wanlora_probe" / "__init__.py")
    port = _free_port()
    log = root / "comfyui.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "WANLORA_SETTLE_SECONDS": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*launch, "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/object_info/WanloraLoraLoader", timeout=2).json():
                    break
            except (httpx.HTTPError, json.JSONDecodeError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ComfyUI did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Comfy(root=root, url=url, process=process, log=log)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def unique(prefix: str) -> str:
    """A LoRA name of its own per test: the server and its caches live for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
