"""The product code is layered in tiers, and every import points down.

Tiers, bottom to top::

    0  schemas/                 the contracts: records, topics, codec, validation
    1  agents/core/             pure decisions: no I/O, no framework, no clock
    2  the platform             streams/: settings, logs, errors, broker, topics,
                                publish, catalogue and controls readers, privacy,
                                servers/, store/
    3  the hot path's shell     agents/: the ingest agent and the stages it calls
    4  the composition root     streams/app.py: wiring only
    5  the surfaces             streams/api/, streams/cli/, streams/bench/, streams/sim/

A module may import from its own tier or any tier below it, never above.
The import graph counts every import: at the top of a module, inside a
function and under ``TYPE_CHECKING`` alike, since each one ties the two
modules together for a reader even when Python resolves it late. The graph
must have no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "agents", "streams")

TIER_NAMES = ("schemas", "core", "platform", "shell", "composition root", "surfaces")

# The most specific prefix wins. Modules of `streams` not named here are platform.
TIERS: dict[str, int] = {
    "schemas": 0,
    "agents.core": 1,
    "streams": 2,
    "agents": 3,
    "streams.app": 4,
    "streams.api": 5,
    "streams.cli": 5,
    "streams.bench": 5,
    "streams.sim": 5,
}

@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules(root: Path = ROOT) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            if "exported" in path.parts:
                continue
            modules[module_name(path, root)] = path
    return modules


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: Iterable[str]) -> Iterator[Import]:
    """Every product module that `module` imports, wherever in the file the import is."""
    known = set(known)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(module, alias.name, node.lineno, known)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            yield from _known(module, target, node.lineno, known)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    yield Import(module, sub, node.lineno)


def _known(module: str, target: str, line: int, known: set[str]) -> Iterator[Import]:
    # `import a.b.c` binds the module a.b.c; the nearest product module it names counts.
    while target and target not in known:
        target = target.rpartition(".")[0]
    if target and target != module:
        yield Import(module, target, line)


def import_graph(root: Path = ROOT) -> dict[str, list[Import]]:
    modules = product_modules(root)
    return {name: list(imports_of(name, path, modules)) for name, path in modules.items()}


def tier(module: str) -> int:
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in TIERS:
            return TIERS[prefix]
    raise AssertionError(f"{module} belongs to no tier; add it to TIERS")


def upward_imports(graph: dict[str, list[Import]]) -> list[Import]:
    return [imp for imports in graph.values() for imp in imports
            if tier(imp.target) > tier(imp.source)]


def cycles(graph: dict[str, list[Import]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    edges = {name: sorted({imp.target for imp in imports}) for name, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _describe(imp: Import) -> str:
    return (f"{imp.source}:{imp.line} imports {imp.target} "
            f"({TIER_NAMES[tier(imp.source)]} -> {TIER_NAMES[tier(imp.target)]})")


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph()


def test_every_product_module_has_a_tier(graph: dict[str, list[Import]]) -> None:
    for module in graph:
        tier(module)


def test_imports_point_down_the_tiers(graph: dict[str, list[Import]]) -> None:
    upward = [_describe(imp) for imp in upward_imports(graph)]
    assert not upward, "imports that point up a tier:\n  " + "\n  ".join(upward)


def test_the_import_graph_has_no_cycle(graph: dict[str, list[Import]]) -> None:
    found = [sorted(c) for c in cycles(graph)]
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


_IMPORT_EACH = """
import importlib, sys
failed = []
for module in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("schemas", "agents", "streams")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failed.append(f"{module}: {exc}")
print("\\n".join(failed))
"""


def test_every_module_imports_first_on_its_own() -> None:
    """Importing a module first works whatever it is: no cycle through a package's __init__."""
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *product_modules()],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not done.stdout.strip(), f"cannot be imported first:\n{done.stdout}"


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The two checks fail on a planted upward import and a planted cycle."""
    for package, source in {
        "schemas/__init__.py": "",
        "schemas/records.py": "from streams.app import Worker\n",
        "streams/__init__.py": "",
        "streams/app.py": "",
        "streams/api/__init__.py": "",
        "streams/api/web.py": "def f():\n    from streams.api import status\n",
        "streams/api/status.py": "if TYPE_CHECKING:\n    import streams.api.web\n",
        "agents/__init__.py": "",
    }.items():
        (tmp_path / package).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / package).write_text(source)
    planted = import_graph(tmp_path)
    assert [(i.source, i.target) for i in upward_imports(planted)] == [
        ("schemas.records", "streams.app")]
    assert cycles(planted) == [frozenset({"streams.api.status", "streams.api.web"})]
