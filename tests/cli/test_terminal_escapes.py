"""Text from the registry cannot drive the terminal (issue 11, item 9): escape sequences in a changelog,
a reason or a trigger word are not printed by history, show, notes or diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.render import clean
from tests.helpers import SINGLE, make

EVIL = "\x1b]0;PWNED\x07\x1b[2J\x1b[1;1H\x1bc\x9b2J\x07\x08"


def test_clean_keeps_colours_and_text_and_drops_the_rest() -> None:
    assert clean(f"a{EVIL}b\tc\n") == "ab\tc\n"
    assert clean("\x1b[1;31mred\x1b[0m") == "\x1b[1;31mred\x1b[0m"  # rich's own SGR colours
    assert clean("\x1bP1$r\x1b\\x\x1b_apc\x1b\\") == "x"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_SERVER", "WANLORA_TOKEN", "WANLORA_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def test_history_show_notes_and_diff_print_no_escape(env: Path) -> None:
    cli = CliRunner()

    def run(*args: str) -> str:
        result = cli.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    for i, version in enumerate(("1.0.0", "1.1.0")):
        run("register", str(make(env, f"v{i}", seed=i)), "--lora", "x", "--category", "style", "--base-model", SINGLE,
            "--version", version, "-m", f"changelog{EVIL}{i}", "--trigger", f"word{EVIL}", "--known-issues", EVIL, "-q")  # fmt: skip
    run("promote", "x", "1.0.0", "--reason", f"reason{EVIL}")
    for args in (("history", "x"), ("show", "x"), ("show", "x@1.0.0"), ("notes", "x"), ("diff", "x", "1.0.0", "1.1.0")):
        out = run(*args)
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, args
    assert "changelog0" in run("show", "x@1.0.0")
