"""`wanlora --help` (and any command's --help) and a sync with nothing to do start without the heavy
libraries (issue 14, item 1): the import set is guarded here; the time it takes is measured by
benchmarks/bench_cli.py, not asserted."""

from __future__ import annotations

import importlib
import json
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


def test_the_probe_sees_what_a_database_command_loads(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path))
    assert "sqlalchemy" in _modules(["list"])  # the guard above would notice a heavy import


def test_a_sync_with_nothing_to_do_loads_neither_the_database_layer_nor_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for name in ("WANLORA_DATABASE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    args = ["sync", "--comfyui", str(tmp_path / "ComfyUI"), "--create", "--json"]
    first = _modules(args)
    assert "sqlalchemy" in first  # the first sync looks at the registry
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
