"""agents/core is the functional core: no I/O, no framework, no clock, no global randomness.

Purity is transitive: a core module may import only modules that are pure themselves, so
importing a product module that imports Faust (``schemas.records``) counts as importing Faust.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_tiers import import_graph, product_modules

CORE = Path(__file__).resolve().parents[2] / "agents" / "core"
FORBIDDEN_MODULES = {
    "faust", "mode", "aiohttp", "aiokafka", "confluent_kafka", "cassandra", "sqlite3",
    "streams", "random", "time", "socket", "asyncio", "os", "subprocess", "structlog",
    "pathlib", "io", "shutil", "tempfile", "glob", "msgpack",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic",
                   "read_text", "read_bytes", "write_text", "write_bytes", "open"}
FORBIDDEN_BUILTINS = {"open", "input", "print"}
# Known impurities in the core's imports, to be removed, never added to. The records are
# `faust.Record` subclasses (the wire contract), so the core imports Faust through them;
# it uses them as plain values and never calls into Faust.
KNOWN_IMPURE = {("schemas/records.py", "faust")}


def _core_closure() -> list[Path]:
    """The core modules and every product module they import, however indirectly."""
    graph = import_graph()
    modules = product_modules()
    seen = {name for name in modules if name == "agents.core" or name.startswith("agents.core.")}
    todo = sorted(seen)
    while todo:
        for imp in graph[todo.pop()]:
            if imp.target not in seen:
                seen.add(imp.target)
                todo.append(imp.target)
    return [modules[name] for name in sorted(seen)]


def _modules() -> list[Path]:
    return _core_closure()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CORE.parents[1])))
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
            if (str(path.relative_to(CORE.parents[1])), name) in KNOWN_IMPURE:
                continue
            assert name.split(".")[0] not in FORBIDDEN_MODULES, (
                f"{path.name}:{node.lineno} imports {name}")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CORE.parents[1])))
def test_core_module_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}(); take `now` or the "
                "text as a parameter instead")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_BUILTINS, (
                f"{path.name}:{node.lineno} calls {node.func.id}(); the shell does I/O")


def test_the_purity_check_sees_the_core() -> None:
    assert len(_modules()) >= 2
    assert CORE / "campaigns.py" in _modules()
    for path, name in KNOWN_IMPURE:
        assert path in {str(p.relative_to(CORE.parents[1])) for p in _modules()}, (
            f"{path} no longer reaches the core: remove it from KNOWN_IMPURE")
        assert f"import {name}" in (CORE.parents[1] / path).read_text(), (
            f"{path} no longer imports {name}: remove it from KNOWN_IMPURE")
