"""`pull` / `download`, `which` and `user remove` from the command line (issue 12, missing commands)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from registry.files.synth import synth_lora
from tests.cli.test_first_use import env, run  # noqa: F401  (the fixture)

BASE = "wan2.2-ti2v-5b"


def _register(home: Path, name: str, seed: int, version: str = "1.0.0", **kw: object) -> Path:
    src = synth_lora(home / f"{name}-{seed}.safetensors", base_model=BASE, fmt="kohya", seed=seed, **kw)  # type: ignore[arg-type]
    run(
        "register",
        str(src),
        "--lora",
        name,
        "--category",
        "style",
        "--base-model",
        BASE,
        "-m",
        "x",
        "--version",
        version,
    )
    return src


def test_pull_writes_a_verified_copy_once(env: Path) -> None:  # noqa: F811
    _register(env, "sarah", 1)
    out = json.loads(run("pull", "sarah", "--to", str(env / "got"), "--json"))
    [f] = out["files"]
    assert (out["version"], out["status"], f["skipped"]) == ("1.0.0", "testing", False)
    path = Path(f["path"])
    assert path.name == "sarah-1.0.0.safetensors" and hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    assert json.loads(run("download", "sarah@1.0.0", "--to", str(env / "got"), "--json"))["files"][0]["skipped"]
    path.write_bytes(b"someone else's file")
    assert "exists and is another file" in run("pull", "sarah@1.0.0", "--to", str(env / "got"), code=2)
    run("pull", "sarah@1.0.0", "--to", str(env / "got"), "--force")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    assert not list((env / "got").glob(".*part"))
    assert "9.9.9" in run("pull", "sarah@9.9.9", code=1)


def test_pull_of_a_pair_writes_both_experts(env: Path) -> None:  # noqa: F811
    pair = "wan2.2-t2v-a14b"
    high = synth_lora(env / "h.safetensors", base_model=pair, seed=1)
    low = synth_lora(env / "l.safetensors", base_model=pair, seed=2)
    run("register", str(high), "--low-noise", str(low), "--lora", "hero", "--category", "style", "--base-model", pair,
        "-m", "x", "--version", "2.0.0")  # fmt: skip
    out = json.loads(run("pull", "hero", "--to", str(env / "pair"), "--json"))
    assert sorted(Path(f["path"]).name for f in out["files"]) == [
        "hero-2.0.0-high_noise.safetensors", "hero-2.0.0-low_noise.safetensors"]  # fmt: skip


def test_which_knows_a_file_whatever_its_format_or_metadata(env: Path) -> None:  # noqa: F811
    src = _register(env, "sarah", 1)
    _register(env, "other", 2)
    same_weights = synth_lora(env / "renamed.safetensors", base_model=BASE, fmt="diffusers", seed=1,
                              metadata={"note": "re-saved by someone"})  # fmt: skip
    for path, by in ((src, ["source", "payload", "autov3"]), (same_weights, ["payload"])):
        out = json.loads(run("which", str(path), "--json"))
        assert [(m["lora"], m["version"], m["by"]) for m in out["matches"]] == [("sarah", "1.0.0", by)]
        assert out["autov2"] == out["sha256"][:10].upper() and len(out["autov3"]) == 12
    pulled = json.loads(run("pull", "sarah", "--to", str(env / "got"), "--json"))["files"][0]["path"]
    assert json.loads(run("which", pulled, "--json"))["matches"][0]["by"] == ["sha256", "payload"]
    stranger = synth_lora(env / "stranger.safetensors", base_model=BASE, seed=99)
    assert "no registered version" in run("which", str(stranger), code=1)
    not_a_lora = env / "notes.txt"
    not_a_lora.write_text("hello")
    out = json.loads(run("which", str(not_a_lora), "--json", code=1))
    assert out["matches"] == [] and out["payload_sha256"] is None and out["not_a_lora"]
    assert "does not exist" in run("which", str(env / "missing.safetensors"), code=2)
    show = run("show", "sarah@1.0.0")
    assert f"AutoV2 {hashlib.sha256(src.read_bytes()).hexdigest()[:10].upper()}" in show


def test_user_remove(env: Path) -> None:  # noqa: F811
    run("user", "add", "tina")
    run("token", "create", "--user", "tina", "--project", "default", "--role", "trainer")
    out = json.loads(run("user", "remove", "tina", "--json"))
    assert out["name"] == "tina" and out["revoked_tokens"] == 1
    assert "tina" not in run("user", "list")
    assert "removed" in run("user", "list", "--removed")
    assert "was removed" in run("user", "remove", "tina", code=1)


@pytest.mark.parametrize("command", [["pull", "--help"], ["which", "--help"], ["user", "remove", "--help"]])
def test_help(command: list[str]) -> None:
    assert "--json" in run(*command)
