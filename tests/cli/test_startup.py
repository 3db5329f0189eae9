"""`wanlora --help` (and any command's --help) and a sync with nothing to do start without the heavy
libraries (issue 14, item 1): the import set is guarded here; the time it takes is measured by
benchmarks/bench_cli.py, not asserted."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command_name

from cli import launch
from cli.app import app

HEAVY = ("numpy", "sqlalchemy", "sqlmodel", "alembic", "casbin", "torch", "pydantic_settings", "registry.backends")
PROBE = """
import json, sys
from cli.launch import main
sys.argv = ["wanlora", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules(args: list[str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=60)
    return json.loads(done.stderr.strip().splitlines()[-1])


def _heavy(loaded: list[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted({m for m in loaded for h in names if m == h or m.startswith(h + ".")})


@pytest.mark.parametrize("args", [["--help"], ["register", "--help"], ["sync", "--help"], ["token", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    loaded = _modules(args)
    assert _heavy(loaded) == [], f"`wanlora {' '.join(args)}` imported {_heavy(loaded)[:8]}"
    if args == ["--help"]:
        assert {f"cli.{m}" for m in launch.MODULES} <= set(loaded)  # the listing shows every command
    else:
        assert "cli.loras" not in loaded or args[0] == "register"  # one command's module, not all


def test_help_renders_without_markdown_or_pretty_tracebacks() -> None:
    """typer's help renderer imports markdown-it and pygments for features wanlora turns off;
    cli.launch imports it with stand-ins for them, and the help is the same."""
    loaded = _modules(["--help"])
    assert "typer.rich_utils" in loaded
    assert _heavy(loaded, ("rich.markdown", "markdown_it", "rich.traceback", "pygments")) == []
    run = "import sys, {0}; from cli.launch import main; sys.argv[0] = 'wanlora'; main()"
    light, full = (
        subprocess.run(
            [sys.executable, "-c", run.format(first), "sync", "--help"], capture_output=True, text=True, timeout=60
        )
        for first in ("os", "typer.rich_utils")  # typer's own import of it, with the real modules
    )
    assert light.returncode == full.returncode == 0
    assert light.stdout == full.stdout
    assert "--comfyui" in light.stdout and "╭─ Options" in light.stdout


@pytest.mark.parametrize("args", [["--help"], [], ["--server", "http://127.0.0.1:9", "--help"]])
def test_the_root_help_lists_every_command_and_group_as_the_whole_app_does(args: list[str]) -> None:
    """The entry point builds only what a command line needs; for the root's help that is every
    command and group, and it prints what the whole app (``cli.main``) prints."""
    run = "import sys; from cli.{0} import {1}; sys.argv[0] = 'wanlora'; {1}()"
    light, full = (
        subprocess.run(
            [sys.executable, "-c", run.format(module, fn), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "100"},
        )
        for module, fn in (("launch", "main"), ("main", "app"))
    )
    assert light.stdout == full.stdout and light.returncode == full.returncode
    assert all(f" {group.name} " in light.stdout for group in app.registered_groups if group.name)
    assert " register " in light.stdout and " sync " in light.stdout


def test_the_help_renderers_stand_ins_are_the_real_classes_when_used() -> None:
    probe = """
import sys
from cli.launch import import_help_renderer
import_help_renderer()
assert "rich.markdown" not in sys.modules and "rich.traceback" not in sys.modules
from typer import rich_utils
md = rich_utils._make_rich_text(text="*hi*", markup_mode="markdown")
from rich.markdown import Markdown
assert type(md) is Markdown and isinstance(md, rich_utils.Markdown)
try:
    raise ValueError("x")
except ValueError as exc:
    from rich.traceback import Traceback
    assert type(rich_utils.Traceback.from_exception(type(exc), exc, exc.__traceback__)) is Traceback
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_inspect_reads_a_header_without_numpy_or_the_database(tmp_path: Path) -> None:
    from registry.files.synth import synth_lora

    lora = synth_lora(tmp_path / "small.safetensors", base_model="wan2.2-ti2v-5b", rank=4, blocks=1, seed=1)
    loaded = _modules(["inspect", str(lora), "--json"])
    assert "registry.files.ingest" in loaded  # it did read the file
    assert _heavy(loaded) == []


def test_the_probe_sees_what_a_database_command_loads(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path))
    assert "sqlalchemy" in _modules(["list"])  # the guard above would notice a heavy import


def test_a_database_command_loads_only_what_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No migration scripts (alembic) on a current database, no webhook sender (httpx) when nothing is
    queued, no tensor maths (numpy), no PostgreSQL dialect on SQLite and no services the command does
    not run."""
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path))
    for name in ("WANLORA_DATABASE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert "alembic" in _modules(["list"])  # the first command creates the database
    for args in (["list"], ["history", "nobody"], ["promote", "nobody", "1.0.0"]):
        loaded = _modules(args)
        assert "registry.services.registry" in loaded, args
        unneeded = (
            "alembic",
            "httpx",
            "numpy",
            "pygments",
            "sqlalchemy.dialects.postgresql",
            "psycopg",
            "registry.services.evaluation",
            "registry.services.accounts",
        )
        assert _heavy(loaded, unneeded) == [], args


def test_a_sync_with_nothing_to_do_loads_neither_the_database_layer_nor_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for name in ("WANLORA_DATABASE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    args = ["sync", "--comfyui", str(tmp_path / "ComfyUI"), "--create", "--json"]
    first = _modules(args)
    assert "sqlalchemy" in first  # the first sync looks at the registry
    assert _heavy(first, ("httpx", "numpy")) == []  # a local sync telling no ComfyUI: no HTTP client
    again = _modules(args)
    assert _heavy(again, (*HEAVY, "pydantic", "httpx", "typer._adapters")) == []


def test_the_launch_table_names_what_each_module_registers() -> None:
    """cli.launch imports one module for a command by its table: the table must match the modules."""
    from cli import main  # noqa: F401 (every module, registered)

    for command in app.registered_commands:
        name = command.name or get_command_name(command.callback.__name__)  # type: ignore[union-attr]
        assert launch.COMMANDS[name] == command.callback.__module__.removeprefix("cli."), name  # type: ignore[union-attr]
    for group in app.registered_groups:
        module = importlib.import_module(f"cli.{launch.COMMANDS[str(group.name)]}")
        assert any(value is group.typer_instance for value in vars(module).values()), group.name
    named = {c.name or get_command_name(c.callback.__name__) for c in app.registered_commands}  # type: ignore[union-attr]
    assert set(launch.COMMANDS) == named | {g.name for g in app.registered_groups}
    assert set(launch.COMMANDS.values()) == set(launch.MODULES)


@pytest.mark.parametrize("command", ["demo", "sync"])
def test_a_command_that_runs_others_gets_them_all(command: str) -> None:
    probe = (
        "import sys; from cli.launch import load; from cli.app import app; load(sys.argv[1]); "
        "print(len(app.registered_commands) + len(app.registered_groups))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=60, check=True
    )
    expected = len(launch.COMMANDS) if command in launch.RUNS_OTHERS else 1
    assert int(done.stdout.strip()) == expected


def test_opening_the_backend_leaves_the_cycle_collector_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector pauses while the backend's modules load (the first time in a process) and is on
    again afterwards, whatever the command did."""
    import gc

    probe = (
        "import gc, sys; from cli import app as a; from cli.launch import load; "
        "load('list'); sys.argv = ['wanlora', 'list', '--json']\n"
        "try:\n    a.app()\nexcept SystemExit:\n    pass\n"
        "print(gc.isenabled(), 'registry.backends.local' in sys.modules, "
        "gc.get_freeze_count() > 0)"
    )
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[-3:] == ["True", "True", "True"], done.stderr  # after the listing
    assert gc.isenabled()
