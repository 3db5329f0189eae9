"""Check commands exit 0 when the check passed, 1 when it failed, 2 on bad input (issue 12), and eval
answers a missing model, a LoRA too big for --tiny and the README's `--file` form with the project's
errors, not tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cli.main import app
from registry.files.synth import synth_lora

runner = CliRunner()
pytestmark = pytest.mark.gate  # the strict default policy, with this home's policy.toml


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "policy.toml").write_text("[default.technical]\nmax_slowdown = 3.0\n")
    monkeypatch.setenv("WANLORA_HOME", str(home))
    for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return home


def run(*args: str, code: int) -> str:
    result = runner.invoke(app, list(args))
    failed = [line for line in result.output.splitlines() if '"passed": false' in line or "✗" in line]
    assert result.exit_code == code, (result.output[-2000:], failed, result.exception)
    assert "Traceback" not in result.output
    return result.output


def tiny(tmp: Path, name: str, **kw: object) -> Path:
    kw.setdefault("scale", 0.3)
    return synth_lora(tmp / f"{name}.safetensors", base_model="wan-tiny", fmt="canonical", dtype="F32", **kw)  # type: ignore[arg-type]


def register(path: Path, lora: str, version: str, base: str = "wan-tiny") -> None:
    run("register", str(path), "--lora", lora, "--category", "style", "--base-model", base, "--version", version,
        "-m", "x", "-q", code=0)  # fmt: skip


def test_eval_exits_1_when_a_phase_fails_and_0_when_it_passes(home: Path, tmp_path: Path) -> None:
    register(tiny(tmp_path, "good"), "good", "1.0.0")
    register(tiny(tmp_path, "flat", zero_b=True), "flat", "1.0.0")  # no effect at all: phase 1 fails
    out = tmp_path / "ev"
    assert json.loads(run("eval", "technical", "good@1.0.0", "--tiny", "--out", str(out), "--json", code=0))
    failed = json.loads(run("eval", "technical", "flat@1.0.0", "--tiny", "--out", str(out), "--json", code=1))
    assert failed["phases"]["technical"]["passed"] is False
    assert "not ready to promote" in run("eval", "status", "flat@1.0.0", code=1)


def test_eval_with_file_needs_no_name(home: Path, tmp_path: Path) -> None:
    """The README's form: `eval technical --file X --base-model B` checks a file that is not registered."""
    path = tiny(tmp_path, "loose")
    out = run("eval", "technical", "--file", str(path), "-b", "wan-tiny", "--tiny", "--out", str(tmp_path / "e"),
              "--json", code=0)  # fmt: skip
    assert json.loads(out)["phases"]["technical"]["passed"]
    assert "NAME@VERSION" in run("eval", "technical", code=2)


def test_eval_names_what_is_missing(home: Path, tmp_path: Path) -> None:
    register(synth_lora(tmp_path / "real.safetensors", base_model="wan2.2-ti2v-5b"), "real", "1.0.0", "wan2.2-ti2v-5b")
    out = run("eval", "technical", "real@1.0.0", "--out", str(tmp_path / "e"), code=2)
    assert "--model-path" in out and "--tiny" in out
    out = run("eval", "technical", "real@1.0.0", "--model-path", str(tmp_path), "--out", str(tmp_path / "e"), code=2)
    assert "has no loadable transformer/" in out
    out = run("eval", "technical", "real@1.0.0", "--tiny", "--out", str(tmp_path / "e"), code=2)
    assert "does not fit the loaded model" in out and "--model-path" in out


def test_db_status_exits_1_on_an_outdated_database(home: Path) -> None:
    from alembic import command

    from registry.db.engine import Database, alembic_config

    db = Database(f"sqlite:///{home / 'registry.db'}")
    with db.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0005")  # a database an older wanlora made
    db.dispose()
    assert "wanlora db upgrade" in run("db", "status", code=1)
    run("db", "upgrade", code=0)
    run("db", "status", code=0)
