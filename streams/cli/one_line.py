"""Every command ends an error with one line: ``relevanz: error: ...`` and its exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from streams.errors import RelevanzError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """``fn`` with a :class:`~streams.errors.RelevanzError` or ^C reported in one line."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RelevanzError as exc:
            click.echo(f"relevanz: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("relevanz: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value] # wraps keeps the signature
