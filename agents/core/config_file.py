"""One validator for the TOML configuration files: the tag rules and the campaign book.

Both files are parsed from their text (the platform reads the file: the core
touches none) and checked key by key.  Any problem raises
:class:`ConfigFileError` with one line that names the file, where in it (the
line and column of a TOML syntax error; else the entry and the key) and what
the key accepts.  :mod:`streams.tag_rules` and :mod:`agents.core.campaigns`
both check with these functions, so the two files answer alike.

>>> doc = load_toml('max = 0\\n[caps]\\nper = "7d"\\n', "c.toml")
>>> whole(doc["max"], "max", "c.toml", 1, 10)
Traceback (most recent call last):
...
agents.core.config_file.ConfigFileError: c.toml: max must be a whole number from 1 to 10, got 0
>>> known(doc["caps"], ("channel", "max"), "c.toml: caps")
Traceback (most recent call last):
...
agents.core.config_file.ConfigFileError: c.toml: caps: unknown key 'per' (known: channel, max)
>>> load_toml("[caps\\n", "c.toml")
Traceback (most recent call last):
...
agents.core.config_file.ConfigFileError: c.toml: not valid TOML (...(at line 1, column 6))
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


class ConfigFileError(ValueError):
    """A configuration file is not usable.

    The message is one line: the file, the entry and key (or the line), the reason.
    """


def load_toml(text: str, source: str) -> dict[str, Any]:
    """The TOML document in ``text``; ``source`` names the file in error messages."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{source}: not valid TOML ({exc})") from exc


def known(table: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Refuse a key of ``table`` that is not one of ``keys`` (a typo, most often)."""
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigFileError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(keys)})")


def name(value: object, key: str, where: str) -> str:
    """``value``, a name of 1 to 100 lower-case letters, digits, '-' or '_' (an id, a tag)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigFileError(f"{where}: {key} must be 1 to 100 lower-case letters, digits, "
                              f"'-' or '_', got {value!r}")
    return value


def table(value: object, key: str, where: str) -> dict[str, Any]:
    """``value``, which must be a table."""
    if not isinstance(value, dict):
        raise ConfigFileError(f"{where}: {key} must be a table, got {value!r}")
    return value


def tables(value: object, key: str, where: str) -> list[dict[str, Any]]:
    """``value``, which must be a list of tables (``[[key]]``)."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigFileError(f"{where}: {key} must be a list of tables ([[{key}]])")
    return value


def whole(value: object, key: str, where: str, lo: int, hi: int, hi_name: str = "") -> int:
    """``value``, a whole number from ``lo`` to ``hi`` (``hi_name``: where ``hi`` comes from)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigFileError(
            f"{where}: {key} must be a whole number from {lo} to {hi}{hi_name}, got {value!r}")
    return value


def number(value: object, key: str, where: str, lo: float, hi: float, hi_name: str = "",
           *, above: bool = False) -> float:
    """``value``, a finite number from ``lo`` (``above``: excluded) to ``hi``."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value > hi
            or (value <= lo if above else value < lo)):
        span = f"above {lo:g} and at most {hi:g}" if above else f"from {lo:g} to {hi:g}"
        raise ConfigFileError(f"{where}: {key} must be a number {span}{hi_name}, got {value!r}")
    return float(value)


def strings(value: object, key: str, where: str, choices: tuple[str, ...] = ()) -> list[str]:
    """``value``, a list of distinct non-empty strings (each one of ``choices``, if given)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigFileError(f"{where}: {key} must be a list of strings, got {value!r}")
    for item in value:
        if choices and item not in choices:
            raise ConfigFileError(f"{where}: {key}: {item!r} is not one of {', '.join(choices)}")
    if len(set(value)) != len(value):
        raise ConfigFileError(f"{where}: {key} names an entry twice")
    return list(value)
