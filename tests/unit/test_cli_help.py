"""``--help`` reads as written, and shell completion works as the README shows it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from streams.cli.commands import main
from streams.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
RELEVANZ = shutil.which("relevanz", path=str(Path(sys.executable).parent)) or "relevanz"


def test_worker_help_lists_one_variable_a_line_with_its_default_and_bound() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for setting in SETTINGS:
        (line,) = [line for line in lines if line.split()[:1] == [setting.name]]
        assert line.split(None, 2) == [setting.name, setting.default or "(empty)",
                                       f"({setting.accepts})"], line


def test_shell_completion_is_documented_and_works() -> None:
    for shell in ("bash", "zsh", "fish"):
        assert f"_RELEVANZ_COMPLETE={shell}_source relevanz" in README
    script = subprocess.run([RELEVANZ], env={**os.environ, "_RELEVANZ_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "_relevanz_completion" in script
    words = subprocess.run(
        [RELEVANZ], env={**os.environ, "_RELEVANZ_COMPLETE": "bash_complete",
                         "COMP_WORDS": "relevanz wo", "COMP_CWORD": "1"},
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert "plain,worker" in words.splitlines()
