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
... min_clicks = 1
... window_days = 14
... floor = -1
... ''', "rules.toml")
Traceback (most recent call last):
...
streams.errors.ConfigError: rules.toml: rule 'x': floor must be a number from 0 to 1e+06, got -1
"""

from __future__ import annotations

import math
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from agents.core import config_file as check
from agents.core.config_file import ConfigFileError
from agents.core.interests import InterestRules, TagRule
from agents.core.sessions import EngagementRules
from streams.errors import ConfigError

DEFAULT_FILE = "tag-rules.toml"
_RULE_KEYS = ("min_clicks", "window_days", "floor", "min_share", "keep_share")
_TOP_KEYS = ("half_life_days", "max_recent", "defaults", "tags", "engagement")
_ENGAGEMENT_KEYS = ("bounce_seconds", "bounce_weight", "full_seconds", "max_weight")
_LONGEST_DAYS = 3650  # ten years: longer windows or half-lives are a typo


def load_rules(path: str | None) -> InterestRules:
    """The rules in the TOML file at ``path``, or the shipped defaults for None or ``""``."""
    return parse_rules(*_read(path))


def _read(path: str | None) -> tuple[str, str]:
    """The text of the tag rules file at ``path`` (the shipped defaults for None or
    ``""``), and how error messages name it."""
    if not path:
        text = files("streams").joinpath("defaults", DEFAULT_FILE).read_text(encoding="utf-8")
        return text, f"{DEFAULT_FILE} (shipped default)"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read tag rules ({exc})") from exc


def load_engagement(path: str | None) -> EngagementRules:
    """How page views' time in view weights interest: the ``[engagement]`` table of
    the tag rules file at ``path`` (the shipped defaults for None or ``""``).

    >>> load_engagement(None).full_seconds
    60.0
    """
    return parse_engagement(*_read(path))


def parse_engagement(text: str, source: str) -> EngagementRules:
    """The ``[engagement]`` table of TOML ``text`` (defaults for keys left out).

    >>> parse_engagement("[engagement]\\nbounce_weight = 2\\nmax_weight = 1", "r.toml")
    Traceback (most recent call last):
    ...
    streams.errors.ConfigError: r.toml: engagement: bounce_weight must be a number from 0 to 1 ...
    """
    try:
        return _engagement(check.load_toml(text, source), source)
    except ConfigFileError as exc:  # the one validator's error, as this platform reports it
        raise ConfigError(str(exc)) from exc


def _engagement(doc: dict[str, Any], source: str) -> EngagementRules:
    where = f"{source}: engagement"
    table = check.table(doc.get("engagement", {}), "engagement", source)
    check.known(table, _ENGAGEMENT_KEYS, where)
    default = EngagementRules()
    max_weight = check.number(table.get("max_weight", default.max_weight), "max_weight",
                              where, 0.0, 1000.0)
    return EngagementRules(
        bounce_seconds=check.number(table.get("bounce_seconds", default.bounce_seconds),
                                    "bounce_seconds", where, 0.0, 3600.0),
        bounce_weight=check.number(table.get("bounce_weight", default.bounce_weight),
                                   "bounce_weight", where, 0.0, max_weight, " (max_weight)"),
        full_seconds=check.number(table.get("full_seconds", default.full_seconds),
                                  "full_seconds", where, 0.001, 21600.0),
        max_weight=max_weight)


def parse_rules(text: str, source: str) -> InterestRules:
    """The rules in TOML ``text``; ``source`` names the file in error messages."""
    try:
        return _parse(text, source)
    except ConfigFileError as exc:  # the one validator's error, as this platform reports it
        raise ConfigError(str(exc)) from exc


def _parse(text: str, source: str) -> InterestRules:
    doc = check.load_toml(text, source)
    check.known(doc, _TOP_KEYS, source)
    _engagement(doc, source)  # its errors show whichever rules are loaded first
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigFileError(f"{source}: defaults must be a table ([defaults])")
    check.known(defaults, _RULE_KEYS, f"{source}: defaults")
    entries = check.tables(doc.get("tags", []), "tags", source)
    max_recent = check.whole(doc.get("max_recent", 20), "max_recent", source, 1, 10_000)
    half_life = _days(doc.get("half_life_days", 7), "half_life_days", source)
    rules, seen = [], set()
    for i, entry in enumerate(entries, start=1):
        rule = _rule(entry, defaults, max_recent, i, source)
        if rule.tag in seen:
            raise ConfigFileError(f"{source}: rule '{rule.tag}': tag is defined twice")
        seen.add(rule.tag)
        rules.append(rule)
    return InterestRules(tuple(rules), half_life=half_life, max_recent=max_recent)


def _rule(entry: dict[str, Any], defaults: dict[str, Any], max_recent: int, number: int,
          source: str) -> TagRule:
    tag = check.name(entry.get("tag"), "tag", f"{source}: rule #{number}")
    where = f"{source}: rule '{tag}'"
    check.known(entry, ("tag", "topic", *_RULE_KEYS), where)
    topic = entry.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigFileError(f"{where}: topic must be a non-empty string, got {topic!r}")
    values = {"min_share": 0.0, "keep_share": 0.0, **defaults, **entry}
    missing = [key for key in _RULE_KEYS if key not in values]
    if missing:
        raise ConfigFileError(f"{where}: {missing[0]} is missing (set it here or in [defaults])")
    min_share = check.number(values["min_share"], "min_share", where, 0.0, 1.0)
    return TagRule(
        tag=tag,
        topic=topic,
        min_clicks=check.whole(values["min_clicks"], "min_clicks", where, 1, max_recent,
                               " (max_recent)"),
        window=_days(values["window_days"], "window_days", where),
        floor=check.number(values["floor"], "floor", where, 0.0, 1e6),
        min_share=min_share,
        keep_share=check.number(values["keep_share"], "keep_share", where, 0.0, min_share,
                                " (min_share)"),
    )


def _days(value: object, key: str, where: str) -> timedelta:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= _LONGEST_DAYS):
        raise ConfigFileError(
            f"{where}: {key} must be a number of days above 0 and at most {_LONGEST_DAYS}, "
            f"got {value!r}")
    return timedelta(days=value)
