"""agents/core is the functional core: no I/O, no framework, no clock, no global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "agents" / "core"
FORBIDDEN_MODULES = {
    "faust", "mode", "aiohttp", "aiokafka", "confluent_kafka", "cassandra", "sqlite3",
    "streams", "random", "time", "socket", "asyncio", "os", "subprocess", "structlog",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic"}


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, (
                f"{path.name}:{node.lineno} imports {name}")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}(); take `now` instead")


def test_the_purity_check_sees_the_core() -> None:
    assert len(_modules()) >= 2
