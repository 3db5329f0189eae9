"""The CLI end to end on the embedded default: SQLite and a local folder under $WANLORA_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import PAIR, SINGLE, make

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANLORA_USER", "alice")
    monkeypatch.delenv("WANLORA_DATABASE_URL", raising=False)
    monkeypatch.delenv("WANLORA_STORAGE_URL", raising=False)
    monkeypatch.delenv("WANLORA_PROJECT", raising=False)
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_full_flow_with_json(env: Path) -> None:
    f1, f2 = make(env, "a", seed=1), make(env, "b", seed=2)
    base = ["--lora", "sarah", "-p", "brandx", "--category", "character", "--base-model", SINGLE, "-q"]
    out = run("register", str(f1), *base, "--version", "1.0.0", "-m", "first", "--json")
    assert json.loads(out)["status"] == "testing"
    run("register", str(f2), *base, "--bump", "minor", "-m", "more data", "--score", "consistency=9.1")
    run("promote", "sarah", "1.0.0", "-p", "brandx", "--reason", "approved")
    run("promote", "sarah", "1.1.0", "-p", "brandx")
    rows = json.loads(run("list", "--json"))
    assert rows[0]["current_version"] == "1.1.0" and rows[0]["version_count"] == 2
    assert json.loads(run("list", "--status", "current", "--category", "style", "--json")) == []
    shown = json.loads(run("show", "sarah@1.1.0", "-p", "brandx", "--json"))
    assert shown["scores"] == {"consistency": 9.1} and shown["parent_version"] == "1.0.0"
    assert json.loads(run("show", "sarah", "-p", "brandx", "--json"))["current_version"] == "1.1.0"
    table = run("show", "sarah", "-p", "brandx")
    assert "1.1.0" in table and "current" in table and "testing" not in table
    diff = json.loads(run("diff", "sarah", "1.0.0", "1.1.0", "-p", "brandx", "--json"))
    assert diff["scores"]["consistency"]["new"] == 9.1
    out = json.loads(run("rollback", "sarah", "-p", "brandx", "--reason", "regression", "--json"))
    assert out["version"] == "1.0.0"
    events = json.loads(run("history", "sarah", "-p", "brandx", "--json"))
    assert events[0]["kind"] == "restored" and events[0]["actor"] == "alice" and events[0]["reason"] == "regression"
    assert "rolled_back" in run("history", "sarah", "-p", "brandx")
    notes = env / "training_notes.md"
    run("notes", "sarah", "-p", "brandx", "-o", str(notes))
    assert "## v1.0.0" in notes.read_text() and "(CURRENT PRODUCTION)" in notes.read_text()


def test_sync_check_and_exit_codes(env: Path) -> None:
    comfy = env / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    f = make(env, "a", seed=1)
    run(
        "register",
        str(f),
        "--lora",
        "x",
        "--category",
        "style",
        "--base-model",
        SINGLE,
        "--version",
        "1.0.0",
        "-m",
        "a",
        "-q",
    )
    run("promote", "x", "1.0.0")
    run("sync", "--comfyui", str(comfy), "--check", code=1)
    report = json.loads(run("sync", "--comfyui", str(comfy), "--json"))
    assert report["copied"] == ["default/style/x.safetensors"]
    assert json.loads(run("sync", "--comfyui", str(comfy), "--check", "--json"))["drift"] is False


def test_errors_are_clear_and_exit_non_zero(env: Path) -> None:
    bad = env / "model.ckpt"
    bad.write_bytes(b"\x80\x04x")
    out = run(
        "register",
        str(bad),
        "--lora",
        "x",
        "--category",
        "style",
        "--base-model",
        SINGLE,
        "--version",
        "1.0.0",
        "-m",
        "x",
        code=2,
    )
    assert "InvalidFile" in out and "pickled" in out and "fix:" in out
    out = run("promote", "nobody", "1.0.0", code=1)
    assert "NotFound" in out and "does not exist" in out
    out = run("register", str(make(env, "p", base_model=PAIR)), "--lora", "pair", "--category", "style",
              "--base-model", PAIR, "--version", "1.0.0", "-m", "x", code=2)  # fmt: skip
    assert "--low-noise" in out


def test_inspect_and_lora_create(env: Path) -> None:
    f = make(env, "a", seed=1, fmt="diffusers")
    data = json.loads(run("inspect", str(f), "--base-model", SINGLE, "--json"))
    assert data["source_format"] == "diffusers" and data["rank"] == 4
    run("lora", "create", "wc", "-c", "style", "-b", SINGLE, "-t", "wcstyle", "-p", "studio")
    assert json.loads(run("show", "wc", "-p", "studio", "--json"))["trigger_words"] == ["wcstyle"]


def test_db_commands(env: Path) -> None:
    from registry.db.engine import Database

    head = Database("sqlite://").head_revision()
    assert f"upgraded: empty → {head}" in run("db", "upgrade")
    status = json.loads(run("db", "status", "--json"))
    assert status["up_to_date"] is True
    assert "already at revision" in run("db", "upgrade")


def test_help_is_there() -> None:
    out = run("--help")
    for command in ("register", "promote", "rollback", "deprecate", "history", "list", "show", "diff", "notes", "sync"):
        assert command in out
    assert "--low-noise" in run("register", "--help")


def test_demo_runs_end_to_end(env: Path) -> None:
    out = run("demo", "--keep", str(env / "demo"))
    assert "rolled back" in out and "sarah_high_noise.safetensors" in out
    assert "GateRefused" in out and "(override)" in out  # promotion is gated; the override is recorded
    # with the train extra (installed for the tests): trained, three phases passed, promoted without override
    assert "ready to promote" in out and "watercolor@0.1.0-step.24 is now current" in out
    assert (env / "demo/ComfyUI/models/loras/wanlora/brandx/character/sarah_low_noise.safetensors").is_file()


def test_sync_watch_command_follows_a_rollback(env: Path) -> None:
    import hashlib
    import os
    import subprocess
    import sys
    import time

    comfy = env / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    for i, v in enumerate(("1.0.0", "1.1.0")):
        run("register", str(make(env, f"w{i}", seed=i)), "--lora", "hero", "--category", "style",
            "--base-model", SINGLE, "--version", v, "-m", v, "-q")  # fmt: skip
        run("promote", "hero", v)
    first = json.loads(run("show", "hero@1.0.0", "--json"))["files"][0]["sha256"]
    target = comfy / "models/loras/wanlora/default/style/hero.safetensors"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "sync", "--comfyui", str(comfy), "--watch", "--interval", "0.05", "--json"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["copied"] == ["default/style/hero.safetensors"]
        run("rollback", "hero", "--reason", "regression")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == first:
                break
            time.sleep(0.02)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == first
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_users_tokens_and_acting_with_a_token(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("register", str(make(env, "a", seed=1)), "--lora", "x", "-p", "p1", "--category", "style",
        "--base-model", SINGLE, "--version", "1.0.0", "-m", "a", "-q")  # fmt: skip
    run("user", "add", "tina")
    assert [u["name"] for u in json.loads(run("user", "list", "--json"))] == ["tina"]
    created = json.loads(
        run("token", "create", "-u", "tina", "-p", "p1", "-r", "trainer", "--expires", "30d", "--json")
    )
    assert created["token"].startswith("wlt_") and created["role"] == "trainer"
    listed = json.loads(run("token", "list", "--json"))
    assert "token" not in listed[0] and listed[0]["prefix"] == created["token"][:12]
    monkeypatch.setenv("WANLORA_TOKEN", created["token"])
    assert json.loads(run("show", "x@1.0.0", "-p", "p1", "--json"))["status"] == "testing"
    out = run("promote", "x", "1.0.0", "-p", "p1", code=1)
    assert "PermissionDenied" in out and "tina (trainer in project p1)" in out
    monkeypatch.delenv("WANLORA_TOKEN")
    run("token", "revoke", str(created["id"]))
    monkeypatch.setenv("WANLORA_TOKEN", created["token"])
    assert "Unauthenticated" in run("list", code=1)


def test_error_text_is_printed_verbatim(env: Path) -> None:
    bad = env / "x.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00[bold]{}")  # header '[bold]{}' is not JSON
    out = run("inspect", str(bad), code=2)
    assert "not a JSON object" in out
    out = run("lora", "create", "x", "-c", "style", "-b", "sdxl[fancy]", code=2)
    assert "sdxl[fancy]" in out
