"""Interest tag rules from TOML into :class:`agents.core.interests.InterestRules`.

The shipped defaults live in ``streams/defaults/tag-rules.toml`` (which
documents every key); ``RELEVANZ_TAG_RULES`` names a replacement file.  Any
problem raises :class:`~streams.errors.ConfigError` naming the file, the rule
and the key.

>>> rules = load_rules(None)
>>> rules.for_topic("fashion")[0].tag, rules.half_life.days
('fashion-trends', 7)
>>> parse_rules('''
... [[tags]]
... tag = "x"
... topic = "fashion"
... min_clicks = 0
... window_days = 14
... floor = 0.5
... ''', "rules.toml")
Traceback (most recent call last):
...
streams.errors.ConfigError: rules.toml: rule 'x': min_clicks must be a whole number ≥ 1, got 0
"""

from __future__ import annotations

import math
import re
import tomllib
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from agents.core.interests import InterestRules, TagRule
from agents.core.sessions import EngagementRules
from streams.errors import ConfigError

DEFAULT_FILE = "tag-rules.toml"
_RULE_KEYS = ("min_clicks", "window_days", "floor", "min_share", "keep_share")
_TOP_KEYS = ("half_life_days", "max_recent", "defaults", "tags", "engagement")
_ENGAGEMENT_KEYS = ("bounce_seconds", "bounce_weight", "full_seconds", "max_weight")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_LONGEST_DAYS = 3650  # ten years: longer windows or half-lives are a typo


def load_rules(path: str | None) -> InterestRules:
    """The rules in the TOML file at ``path``, or the shipped defaults for None or ``""``."""
    if not path:
        text = files("streams").joinpath("defaults", DEFAULT_FILE).read_text(encoding="utf-8")
        return parse_rules(text, f"{DEFAULT_FILE} (shipped default)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read tag rules ({exc})") from exc
    return parse_rules(text, path)


def load_engagement(path: str | None) -> EngagementRules:
    """How page views' time in view weights interest: the ``[engagement]`` table of
    the tag rules file at ``path`` (the shipped defaults for None or ``""``).

    >>> load_engagement(None).full_seconds
    60.0
    """
    if not path:
        text = files("streams").joinpath("defaults", DEFAULT_FILE).read_text(encoding="utf-8")
        return parse_engagement(text, f"{DEFAULT_FILE} (shipped default)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read tag rules ({exc})") from exc
    return parse_engagement(text, path)


def parse_engagement(text: str, source: str) -> EngagementRules:
    """The ``[engagement]`` table of TOML ``text`` (defaults for keys left out).

    >>> parse_engagement("[engagement]\\nbounce_weight = 2\\nmax_weight = 1", "r.toml")
    Traceback (most recent call last):
    ...
    streams.errors.ConfigError: r.toml: engagement: bounce_weight must be a number from 0 to 1 ...
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc
    table = doc.get("engagement", {})
    where = f"{source}: engagement"
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: engagement must be a table ([engagement])")
    _no_unknown(table, _ENGAGEMENT_KEYS, where)
    default = EngagementRules()
    max_weight = _number(table.get("max_weight", default.max_weight), "max_weight", where,
                         0.0, 1000.0)
    return EngagementRules(
        bounce_seconds=_number(table.get("bounce_seconds", default.bounce_seconds),
                               "bounce_seconds", where, 0.0, 3600.0),
        bounce_weight=_number(table.get("bounce_weight", default.bounce_weight),
                              "bounce_weight", where, 0.0, max_weight, " (max_weight)"),
        full_seconds=_number(table.get("full_seconds", default.full_seconds),
                             "full_seconds", where, 0.001, 21600.0),
        max_weight=max_weight)


def parse_rules(text: str, source: str) -> InterestRules:
    """The rules in TOML ``text``; ``source`` names the file in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc
    _no_unknown(doc, _TOP_KEYS, source)
    parse_engagement(text, source)  # its errors show whichever rules are loaded first
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults must be a table ([defaults])")
    _no_unknown(defaults, _RULE_KEYS, f"{source}: defaults")
    entries = doc.get("tags", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: tags must be a list of tables ([[tags]])")
    max_recent = _whole(doc.get("max_recent", 20), "max_recent", source, 1, 10_000)
    half_life = _days(doc.get("half_life_days", 7), "half_life_days", source)
    rules, seen = [], set()
    for i, entry in enumerate(entries, start=1):
        rule = _rule(entry, defaults, max_recent, i, source)
        if rule.tag in seen:
            raise ConfigError(f"{source}: rule '{rule.tag}': tag is defined twice")
        seen.add(rule.tag)
        rules.append(rule)
    return InterestRules(tuple(rules), half_life=half_life, max_recent=max_recent)


def _rule(entry: dict[str, Any], defaults: dict[str, Any], max_recent: int, number: int,
          source: str) -> TagRule:
    tag = entry.get("tag")
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ConfigError(
            f"{source}: rule #{number}: tag must be 1 to 100 lower-case letters, digits, "
            f"'-' or '_', got {tag!r}")
    where = f"{source}: rule '{tag}'"
    _no_unknown(entry, ("tag", "topic", *_RULE_KEYS), where)
    topic = entry.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigError(f"{where}: topic must be a non-empty string, got {topic!r}")
    values = {"min_share": 0.0, "keep_share": 0.0, **defaults, **entry}
    missing = [key for key in _RULE_KEYS if key not in values]
    if missing:
        raise ConfigError(f"{where}: {missing[0]} is missing (set it here or in [defaults])")
    min_share = _number(values["min_share"], "min_share", where, 0.0, 1.0)
    return TagRule(
        tag=tag,
        topic=topic,
        min_clicks=_whole(values["min_clicks"], "min_clicks", where, 1, max_recent,
                          " (max_recent)"),
        window=_days(values["window_days"], "window_days", where),
        floor=_number(values["floor"], "floor", where, 0.0, 1e6),
        min_share=min_share,
        keep_share=_number(values["keep_share"], "keep_share", where, 0.0, min_share,
                           " (min_share)"),
    )


def _no_unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(known)})")


def _whole(value: object, key: str, where: str, lo: int, hi: int, hi_name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{where}: {key} must be a whole number ≥ {lo}, got {value!r}")
    if value > hi:
        raise ConfigError(f"{where}: {key} must be at most {hi}{hi_name}, got {value!r}")
    return value


def _number(value: object, key: str, where: str, lo: float, hi: float, hi_name: str = ""
            ) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not lo <= value <= hi):
        raise ConfigError(
            f"{where}: {key} must be a number from {lo:g} to {hi:g}{hi_name}, got {value!r}")
    return float(value)


def _days(value: object, key: str, where: str) -> timedelta:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= _LONGEST_DAYS):
        raise ConfigError(
            f"{where}: {key} must be a number of days above 0 and at most {_LONGEST_DAYS}, "
            f"got {value!r}")
    return timedelta(days=value)
