"""A sync with nothing to do is answered from the manifest's recorded state (registry.sync.quick) —
and only then: every change that could make a sync do something sends it down the full path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.settings import Settings
from registry.sync import quick
from tests.cli.test_remote import server  # noqa: F401 (the live server fixture)
from tests.helpers import SINGLE, make

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for name in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_PROJECT", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def sync(comfy: Path, *args: str, code: int = 0) -> dict:
    return json.loads(run("sync", "--comfyui", str(comfy), "--create", "--json", *args, code=code))


def lora(env: Path, name: str, version: str, seed: int, *, project: str = "p") -> None:
    f = make(env, f"{name}-{seed}", seed=seed)
    run("register", str(f), "--lora", name, "-p", project, "--category", "style", "--base-model", SINGLE,
        "--version", version, "-m", "x", "-q")  # fmt: skip
    run("promote", name, version, "-p", project)


def test_nothing_to_do_is_fast_and_every_change_is_seen(env: Path) -> None:
    lora(env, "a", "1.0.0", 1)
    lora(env, "b", "1.0.0", 2)
    comfy = env / "ComfyUI"
    first = sync(comfy)
    assert len(first["copied"]) == 2 and not first["fast"]
    again = sync(comfy)
    assert again["fast"] and again["unchanged"] == sorted(first["copied"]) and not again["copied"]
    root = comfy / "models/loras/wanlora"

    lora(env, "a", "1.1.0", 3)  # an event: the registry moved
    moved = sync(comfy)
    assert not moved["fast"] and moved["copied"] == ["p/style/a.safetensors"]
    assert sync(comfy)["fast"]

    os.utime(root / "p/style/b.safetensors", ns=(1, 1))  # a managed file touched: look at it again
    touched = sync(comfy)
    assert not touched["fast"] and "p/style/b.safetensors" in touched["unchanged"]
    assert sync(comfy)["fast"]

    (root / "p/style/a.safetensors").unlink()  # one gone: copied again
    assert sync(comfy)["copied"] == ["p/style/a.safetensors"]

    (root / "p/style/stray.safetensors").write_bytes(b"not ours")  # an unknown file: reported, every time
    for _ in range(2):
        seen = sync(comfy)
        assert not seen["fast"] and seen["unknown"] == ["p/style/stray.safetensors"]
    (root / "p/style/stray.safetensors").unlink()
    assert not sync(comfy)["fast"]  # the last full sync was not clean, so it recorded no state
    assert sync(comfy)["fast"]

    assert not sync(comfy, "--pin")["fast"]  # other options shape another folder
    assert sync(comfy)["fast"] and sync(comfy)["pinned"]  # --pin is remembered
    assert not sync(comfy, "--project", "p")["fast"]
    assert not sync(comfy, "--client-id", "host-1")["fast"]
    assert not sync(comfy, "--verify")["fast"]  # --verify always hashes

    other = env / "other-home"  # another registry with the same event count and schema
    os.environ["WANLORA_HOME"] = str(other)
    try:
        lora(env, "z", "1.0.0", 9, project="q")
        assert not sync(comfy)["fast"]
    finally:
        os.environ["WANLORA_HOME"] = str(env / "home")


def test_check_uses_the_fast_path_and_a_damaged_manifest_does_not(env: Path) -> None:
    lora(env, "a", "1.0.0", 1)
    comfy = env / "ComfyUI"
    sync(comfy)
    sync(comfy)
    checked = sync(comfy, "--check")
    assert checked["fast"] and checked["checked"] and not checked["drift"]
    manifest = comfy / "models/loras/wanlora/.wanlora-manifest.json"
    doc = json.loads(manifest.read_text())
    doc["files"]["../../outside.safetensors"] = doc["files"].pop("p/style/a.safetensors")
    manifest.write_text(json.dumps(doc))
    out = run("sync", "--comfyui", str(comfy), "--json", code=2)  # the full path refuses the tampered name
    assert "outside" in out


def test_the_fast_path_reads_the_settings_as_pydantic_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in (
        {},
        {"WANLORA_HOME": str(tmp_path / "h")},
        {"wanlora_home": str(tmp_path / "lower")},
        {"WANLORA_HOME": str(tmp_path / "h"), "WANLORA_DATABASE_URL": "postgresql://u@127.0.0.1/db"},
    ):
        for name in ("WANLORA_HOME", "WANLORA_DATABASE_URL", "wanlora_home"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert quick.embedded_database_url(os.environ) == Settings().resolved_database_url


def test_over_the_server_a_304_answers_and_a_promotion_does_not(server: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    url, _ = server
    f = make(tmp_path, "a", seed=1)
    run("register", str(f), "--lora", "a", "-p", "p", "--category", "style", "--base-model", SINGLE,
        "--version", "1.0.0", "-m", "x", "-q")  # fmt: skip
    run("promote", "a", "1.0.0", "-p", "p")
    comfy = tmp_path / "ComfyUI"
    assert not sync(comfy)["fast"]
    assert sync(comfy)["fast"]
    assert not quick.remote_unchanged(url, "wl_not-a-token", project=None, client=None, etag="x")
    run("rollback", "a", "-p", "p", code=1)  # no earlier version: refused, and nothing moved
    assert sync(comfy)["fast"]
    f2 = make(tmp_path, "a2", seed=2)
    run("register", str(f2), "--lora", "a", "-p", "p", "--version", "1.1.0", "-m", "y", "-q")
    assert not sync(comfy)["fast"]  # an event, even one that changes no target, looks again
    run("promote", "a", "1.1.0", "-p", "p")
    moved = sync(comfy)
    assert not moved["fast"] and moved["copied"] == ["p/style/a.safetensors"]
    assert sync(comfy)["fast"]
