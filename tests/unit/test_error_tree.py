"""The platform's errors are declared in one module, which draws them all."""

from __future__ import annotations

import ast
import inspect

from streams import errors
from tests.unit.test_tiers import product_modules


def test_every_relevanz_error_is_declared_in_the_error_module() -> None:
    tree_names = {name for name, value in vars(errors).items()
                  if inspect.isclass(value) and issubclass(value, errors.RelevanzError)}
    elsewhere = []
    for module, path in product_modules().items():
        if module == "streams.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and base.id in tree_names for base in node.bases):
                elsewhere.append(f"{module}.{node.name}")
    assert not elsewhere, f"declare these in streams/errors.py: {elsewhere}"


def test_the_module_docstring_draws_every_error() -> None:
    drawn = errors.__doc__ or ""
    for name, value in vars(errors).items():
        if inspect.isclass(value) and issubclass(value, errors.RelevanzError):
            assert f" {name} " in drawn, f"{name} is missing from the tree in the docstring"
