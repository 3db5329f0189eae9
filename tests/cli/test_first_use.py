"""What a new user trips over (issue 12, first use), each fixed with a test."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_PROJECT", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_sync_refuses_a_folder_that_is_not_comfyui(env: Path) -> None:
    missing = env / "typo" / "ComfyUI"
    out = run("sync", "--comfyui", str(missing), code=2)
    assert "does not exist" in out and "--create" in out and not missing.exists()
    plain = env / "Documents"
    plain.mkdir()
    assert "is not a ComfyUI folder" in run("sync", "--comfyui", str(plain), code=2)
    comfy = env / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    out = run("sync", "--comfyui", str(comfy / "models" / "loras"), code=2)
    assert "inside ComfyUI's LoRA folder" in out and f"--comfyui {comfy}" in out.replace("\n", "")
    assert not (comfy / "models" / "loras" / "models").exists()  # no models/loras/models/loras
    run("sync", "--comfyui", str(comfy))
    run("sync", "--comfyui", str(missing), "--create")
    assert (missing / "models" / "loras" / "wanlora").is_dir()


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("nonsense", 2, "is not a database URL"),
        ("mysql://a@b/c", 2, "does not support mysql"),
        ("postgresql://u:secret@127.0.0.1:1/x", 1, "cannot open the database"),
        ("postgres://u:secret@127.0.0.1:1/x", 1, "cannot open the database"),
    ],
)
def test_a_bad_database_url_is_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, url: str, code: int, message: str
) -> None:
    monkeypatch.setenv("WANLORA_DATABASE_URL", url)
    out = run("list", code=code)
    assert message in out and "Traceback" not in out and "secret" not in out and "WANLORA_DATABASE_URL" in out


def test_postgres_urls_mean_psycopg() -> None:
    from registry.db.engine import normalise_url

    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_global_options_work_anywhere_on_the_line(env: Path) -> None:
    from cli.app import hoist_global_options

    for line in (["list", "--server", "http://127.0.0.1:9"], ["--server", "http://127.0.0.1:9", "list"],
                 ["trial", "status", "x", "--server=http://127.0.0.1:9", "--token", "wlt_t"]):  # fmt: skip
        assert "cannot reach http://127.0.0.1:9" in run(*line, code=1)
    assert hoist_global_options(["register", "f", "-m", "x", "--token", "t", "--", "--server", "s"]) == [
        "--token", "t", "register", "f", "-m", "x", "--", "--server", "s",
    ]  # fmt: skip


def test_typos_get_a_did_you_mean(env: Path, tmp_path: Path) -> None:
    from tests.helpers import SINGLE, make

    run("register", str(make(tmp_path, "s")), "--lora", "sarah", "--category", "character", "--base-model", SINGLE,
        "--version", "1.0.0", "-m", "x", "-q")  # fmt: skip
    assert "did you mean 'sarah'?" in run("show", "sarha", code=1)
    out = run("list", "-p", "defualt", code=1)
    assert "project 'defualt' does not exist (did you mean 'default'?)" in out  # not "no LoRAs yet"
    assert "Did you mean 'promote'?" in run("promot", "sarah", "1.0.0", code=2)


@pytest.mark.gate  # the strict default policy: promoting without evidence is an override
def test_records_say_what_happened(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tests.helpers import SINGLE, make

    monkeypatch.setenv("COLUMNS", "80")
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps({"learning_rate": 1e-4, "loss_curve": [0.5 - i / 1000 for i in range(300)]}))
    run("register", str(make(tmp_path, "s")), "--lora", "sarah", "--category", "character", "--base-model", SINGLE,
        "--version", "1.0.0", "-m", "x", "-q", "--hyperparams", str(hp))  # fmt: skip
    run("promote", "sarah", "1.0.0", "--override", "--reason", "client deadline")
    history = json.loads(run("history", "sarah", "--json"))
    assert [e["override"] for e in history if e["kind"] == "promoted"] == [True]
    assert "override" in run("history", "sarah")
    notes = run("notes", "sarah")
    assert "Production approved" not in notes and "override" in notes and "client deadline" in notes
    shown = run("show", "sarah@1.0.0")
    assert "[300 values: 0.5 … 0.201]" in shown and "0.499" not in shown  # not the whole loss curve
    sha = json.loads(run("show", "sarah@1.0.0", "--json"))["files"][0]["sha256"]
    assert f"sha256 {sha}" in shown  # on one line, whole, at 80 columns
    assert json.loads(run("show", "sarah@1.0.0", "--json"))["promoted_on_override"] == "client deadline"


def test_the_readme_tiny_recipe_is_the_one_the_demo_proves() -> None:
    """The demo trains with the README's tiny recipe and takes the result through all three phases and a
    promotion without override (test_demo_runs_end_to_end); the recipe adds no --lr: --tiny trains at the
    tiny models' own rate."""
    import shlex

    from cli.demo import TINY_RECIPE

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [line] = [ln for ln in readme.splitlines() if ln.startswith("wanlora train --dataset ./dataset --lora demo")]
    args = shlex.split(line)
    assert tuple(args[args.index("demo") + 1 :]) == TINY_RECIPE
