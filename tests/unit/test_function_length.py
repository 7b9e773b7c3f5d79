"""No product function is longer than a screen, except those named below with the reason.

A function of more than :data:`MAX_LINES` lines (from its ``def`` to its
last line, docstring included) is hard to read in one sitting; split it into
named steps.  The allow-list is explicit so that a new long function is a
decision a reviewer sees, not a drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "agents", "streams")
MAX_LINES = 60

#: ``module:qualified name`` -> why it stays long.
ALLOWED: dict[str, str] = {
    # One straight pass from the records to the AsyncAPI document: a table of
    # literals (channels, messages) that reads top to bottom.
    "schemas/export.py:asyncapi": "a literal document built top to bottom",
    # Faust's passive-drain mechanics in one closure-sharing generator; the
    # state (buffer, events, the handling future) is shared by the processor
    # and the loop, and splitting it would scatter that state.
    "agents/faust_batches.py:batches": "one generator whose closure shares its state",
    # The engine's one entry: consent gate first, then each kind of record in
    # turn; each branch calls a named function of the core.
    "agents/core/engine.py:handle": "the consent gate and a dispatch by record kind",
    # The store's prepared CQL statements: a table of literals, one per line.
    "streams/store/cql.py:_statements": "a table of CQL statements, one per line",
    # The composition root: wiring one component per line.
    "streams/app.py:build_worker": "wiring, one component per line",
    # One HTTP route: parse, validate, decide, answer; each step a few lines.
    "streams/api/web.py:OperatorApi.decide": "one route's parse, decide and answer",
    # The demo's bounded run: start, feed, wait with a deadline, report.
    "streams/sim/demo.py:_bounded": "the demo's run from start to report",
}


def long_functions(root: Path = ROOT) -> dict[str, int]:
    """``path:qualified name`` -> lines, for every product function over the limit."""
    found: dict[str, int] = {}
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            relative = path.relative_to(root).as_posix()
            for name, node in _functions(tree, ""):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    found[f"{relative}:{name}"] = lines
    return found


def _functions(node: ast.AST, prefix: str
               ) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            out.append((name, child))
            out += _functions(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            out += _functions(child, f"{prefix}{child.name}.")
    return out


def test_no_product_function_is_longer_than_a_screen_unless_allowed() -> None:
    unexpected = {name: lines for name, lines in long_functions().items()
                  if name not in ALLOWED}
    assert not unexpected, (
        f"functions over {MAX_LINES} lines: {unexpected}; split them into named steps "
        "or add them to ALLOWED with the reason")


def test_the_allow_list_names_only_long_functions() -> None:
    stale = sorted(set(ALLOWED) - set(long_functions()))
    assert not stale, f"no longer long (remove from ALLOWED): {stale}"


def test_it_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "m.py").write_text(f"class C:\n    def f(self):\n{body}\n")
    for package in ("schemas", "streams"):
        (tmp_path / package).mkdir()
    assert long_functions(tmp_path) == {"agents/m.py:C.f": MAX_LINES + 1}
