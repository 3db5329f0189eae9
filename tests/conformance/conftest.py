"""ComfyUI's loader as a worker process for the conformance matrix (one per test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.comfyui.conftest import VENDOR, _unavailable

PROBE = Path(__file__).resolve().parents[1] / "comfyui" / "lora_probe.py"


@pytest.fixture(scope="session")
def comfyui_probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., dict[str, Any]]]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI=true but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("comfyui-loader")
    with tarfile.open(VENDOR) as archive:
        archive.extractall(root, filter="data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    worker = subprocess.Popen(
        [sys.executable, str(PROBE), str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert worker.stdin is not None and worker.stdout is not None

    def ask(**request: Any) -> dict[str, Any]:
        worker.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        worker.stdin.flush()  # type: ignore[union-attr]
        line = worker.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the ComfyUI loader worker died (exit {worker.poll()})"
        return json.loads(line)  # type: ignore[no-any-return]

    try:
        yield ask
    finally:
        worker.stdin.close()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
