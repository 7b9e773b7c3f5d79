"""Field constraints beyond the Python type: allowed values, ranges, patterns.

Records declare them with the :func:`constrain` class decorator; validation
checks them and the JSON Schema export writes them out, so both stay in step.

>>> import faust
>>> @constrain(kind=Rule(choices=("a", "b")))
... class Example(faust.Record):
...     kind: str
>>> constraints_of(Example)["kind"].choices
('a', 'b')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Rule:
    """What a field's value must satisfy besides its type."""

    choices: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    #: A format name understood by validation (``iana-time-zone``).
    format: str | None = None
    description: str | None = None
    #: The rule every element of a list field must satisfy.
    items: Rule | None = None


_CONSTRAINTS: dict[type, dict[str, Rule]] = {}


def constrain(**rules: Rule) -> Callable[[T], T]:
    """Attach field rules to a record class."""

    def attach(cls: T) -> T:
        _CONSTRAINTS[cls] = dict(rules)
        return cls

    return attach


def constraints_of(cls: type) -> dict[str, Rule]:
    """The rules declared for ``cls`` (empty when none)."""
    return _CONSTRAINTS.get(cls, {})
