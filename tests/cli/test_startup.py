"""`wanlora --help` (and any command's --help) starts without the heavy libraries (issue 14, item 1):
the import set is guarded here; the time it takes is measured by benchmarks/bench_cli.py, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "sqlalchemy", "sqlmodel", "alembic", "casbin", "torch", "pydantic_settings", "registry.backends")
PROBE = """
import json, sys
from cli.main import main
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


@pytest.mark.parametrize("args", [["--help"], ["register", "--help"], ["sync", "--help"], ["token", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    loaded = _modules(args)
    heavy = sorted({m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")})
    assert heavy == [], f"`wanlora {' '.join(args)}` imported {heavy[:8]}"
    assert "cli.loras" in loaded  # every command group was registered, lazily or not


def test_the_probe_sees_what_a_database_command_loads(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path))
    assert "sqlalchemy" in _modules(["list"])  # the guard above would notice a heavy import
