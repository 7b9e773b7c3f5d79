"""The README says what the code does: settings, commands, the test command."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from streams.cli.commands import main
from streams.settings import SETTINGS, markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_with_its_default() -> None:
    """The Configuration table is the declarations, row for row and in their order."""
    for setting in SETTINGS:
        row = f"| `{setting.name}` | `{setting.default}` | {setting.accepts} | {setting.help} |"
        assert row in README, (
            f"README's configuration table is out of step for {setting.name}")
    assert markdown_table() in README, (
        "README's configuration table is out of step with streams/settings.py; paste in "
        "the output of: python -c 'from streams.settings import markdown_table as t; "
        "print(t())'")


def test_every_documented_setting_exists() -> None:
    # Not _RELEVANZ_COMPLETE, click's shell-completion switch.
    documented = set(re.findall(r"(?<!_)RELEVANZ_[A-Z_]+", README))
    # Switches of the test run, not product settings: RELEVANZ_CASSANDRA_HOSTS points the
    # Cassandra tests at a cluster of yours, RELEVANZ_SCREENSHOTS collects the dashboard
    # test's pictures, RELEVANZ_SLOW_TESTS opts in to the long tests.
    known = {s.name for s in SETTINGS} | {
        "RELEVANZ_CASSANDRA_HOSTS", "RELEVANZ_SCREENSHOTS", "RELEVANZ_SLOW_TESTS"}
    assert documented <= known, f"README names unknown settings: {documented - known}"


def test_every_command_has_help_and_is_in_the_readme() -> None:
    runner = CliRunner()
    for name in main.list_commands(None):  # type: ignore[arg-type] # the group ignores ctx
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert f"`relevanz {name}" in README, f"README does not describe relevanz {name}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_layout_in_the_readme_names_files_that_exist() -> None:
    """Every folder and module the Development section draws is where it says."""
    section = README.split("## Development", 1)[1].split("```", 2)[1]
    folder, named = "", []
    for word in re.findall(r"(?<![\w/])[a-z_][\w/]*?(?:\.py|/)(?!\w)", section):
        if word.startswith(("schemas/", "agents/", "streams/")):
            named.append(word)
            folder = word if word.endswith("/") else word.rpartition("/")[0] + "/"
        else:
            named.append(folder + word)
    missing = [n for n in named if not (ROOT / n).exists()]
    assert len(named) > 30
    assert not missing, f"README's layout names missing files: {missing}"
