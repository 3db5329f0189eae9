"""A full disk (issue 11, item 11): register, sync and promote stop with a clear error and exit 1, and
leave nothing half-written. The disk is a real tmpfs of a few megabytes, mounted for the test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import SINGLE, make

runner = CliRunner()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def _full_disk_message(out: str) -> None:
    assert "OutOfSpace" in out and "the disk is full" in out and "free space" in out
    assert "Traceback" not in out


def test_register_into_a_full_store(tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANLORA_STORAGE_URL", f"file://{small_disk / 'store'}")
    big = make(tmp_path, "big", blocks=30, rank=16)  # larger than the 3 MB disk
    assert big.stat().st_size > 3 * 2**20
    out = run(
        "register",
        str(big),
        "--lora",
        "big",
        "--version",
        "1.0.0",
        "-m",
        "x",
        "--category",
        "style",
        "--base-model",
        SINGLE,
        code=1,
    )
    _full_disk_message(out)
    assert [p for p in (small_disk / "store" / "tmp").iterdir()] == []  # the partial copy is gone
    assert json.loads(run("list", "--json")) == []


def test_sync_into_a_full_comfyui_folder(tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    base = ["--version", "1.0.0", "-m", "x", "--category", "style", "--base-model", SINGLE, "-q"]
    run("register", str(make(tmp_path, "big", blocks=30, rank=16)), "--lora", "big", *base)
    run("promote", "big", "1.0.0", "--override", "--reason", "test")
    comfyui = small_disk / "ComfyUI"
    (comfyui / "models" / "loras").mkdir(parents=True)
    _full_disk_message(run("sync", "--comfyui", str(comfyui), code=1))
    folder = comfyui / "models" / "loras" / "wanlora"
    left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert left == []  # no partial file, no manifest naming a file that is not there


def test_promote_on_a_full_database_disk(tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANLORA_DATABASE_URL", f"sqlite:///{small_disk / 'registry.db'}")
    base = ["--lora", "s", "-m", "x", "--category", "style", "--base-model", SINGLE, "-q"]
    run("register", str(make(tmp_path, "a", seed=1)), "--version", "1.0.0", *base)
    filler = _fill(small_disk)
    _full_disk_message(run("promote", "s", "1.0.0", "--override", "--reason", "full", code=1))
    filler.unlink()
    [lora] = json.loads(run("list", "--json"))
    assert lora["current_version"] is None  # the refused promote left nothing behind
    run("promote", "s", "1.0.0", "--override", "--reason", "space again")
    assert json.loads(run("list", "--json"))[0]["current_version"] == "1.0.0"
