"""Tag rules from TOML: the shipped defaults, overrides and one-line errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agents.core.interests import InterestRules, TagRule
from streams.errors import ConfigError
from streams.settings import Settings
from streams.sim.traffic import TOPICS
from streams.tag_rules import load_engagement, load_rules, parse_rules

MINIMAL = """
half_life_days = 3.5
max_recent = 10

[defaults]
min_clicks = 3
window_days = 14
floor = 0.5

[[tags]]
tag = "fashion-trends"
topic = "fashion"
"""


def test_the_defaults_have_one_documented_tag_per_generator_topic() -> None:
    rules = load_rules(None)
    assert load_rules("") == rules
    assert [rule.topic for rule in rules.rules] == list(TOPICS)
    assert len({rule.tag for rule in rules.rules}) == len(TOPICS)
    assert rules.for_topic("fashion") == (TagRule(
        "fashion-trends", "fashion", min_clicks=3, window=timedelta(days=14), floor=0.5,
        min_share=0.25, keep_share=0.15),)
    assert (rules.half_life, rules.max_recent) == (timedelta(days=7), 20)


def test_the_default_file_explains_every_key() -> None:
    text = (Path(__file__).parents[2] / "streams" / "defaults" / "tag-rules.toml").read_text()
    lines = text.splitlines()
    for key in ("half_life_days", "max_recent", "min_clicks", "window_days", "floor",
                "min_share", "keep_share"):
        first = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[first - 1].startswith("#"), f"{key} has no comment above it"
    assert "`tag`" in text
    assert "`topic`" in text


def test_a_file_overrides_defaults_per_tag(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(MINIMAL + '\n[[tags]]\ntag = "bookworms"\ntopic = "books"\nmin_clicks = 5\n'
                    'keep_share = 0.0\nmin_share = 0.3\n')
    rules = load_rules(str(path))
    assert rules == InterestRules((
        TagRule("fashion-trends", "fashion", 3, timedelta(days=14), 0.5),
        TagRule("bookworms", "books", 5, timedelta(days=14), 0.5, min_share=0.3)),
        half_life=timedelta(days=3.5), max_recent=10)


def test_the_file_named_in_settings_is_the_one_loaded(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(MINIMAL)
    settings = Settings.from_env({"RELEVANZ_TAG_RULES": str(path)})
    assert load_rules(settings.tag_rules_path).for_tag("fashion-trends") is not None
    assert load_rules(Settings.from_env({}).tag_rules_path) == load_rules(None)


@pytest.mark.parametrize(("change", "message"), [
    (("min_clicks = 3", "min_clicks = 0"),
     "rules.toml: rule 'fashion-trends': min_clicks must be a whole number from 1 to 10 "
     "(max_recent), got 0"),
    (("min_clicks = 3", "min_clicks = 2.5"),
     "rules.toml: rule 'fashion-trends': min_clicks must be a whole number from 1 to 10 "
     "(max_recent), got 2.5"),
    (("min_clicks = 3", "min_clicks = true"),
     "rules.toml: rule 'fashion-trends': min_clicks must be a whole number from 1 to 10 "
     "(max_recent), got True"),
    (("min_clicks = 3", "min_clicks = 11"),
     "rules.toml: rule 'fashion-trends': min_clicks must be a whole number from 1 to 10 "
     "(max_recent), got 11"),
    (("window_days = 14", "window_days = 0"),
     "rules.toml: rule 'fashion-trends': window_days must be a number of days above 0 and "
     "at most 3650, got 0"),
    (("window_days = 14", "window_days = \"14d\""),
     "rules.toml: rule 'fashion-trends': window_days must be a number of days above 0 and "
     "at most 3650, got '14d'"),
    (("floor = 0.5", "floor = -1"),
     "rules.toml: rule 'fashion-trends': floor must be a number from 0 to 1e+06, got -1"),
    (("floor = 0.5", "floor = nan"),
     "rules.toml: rule 'fashion-trends': floor must be a number from 0 to 1e+06, got nan"),
    (("floor = 0.5", "floor = 0.5\nmin_share = 1.5"),
     "rules.toml: rule 'fashion-trends': min_share must be a number from 0 to 1, got 1.5"),
    (("floor = 0.5", "floor = 0.5\nmin_share = 0.2\nkeep_share = 0.3"),
     "rules.toml: rule 'fashion-trends': keep_share must be a number from 0 to 0.2 "
     "(min_share), got 0.3"),
    (("floor = 0.5", ""),
     "rules.toml: rule 'fashion-trends': floor is missing (set it here or in [defaults])"),
    (('topic = "fashion"', 'topic = "fashion"\nmin_click = 3'),
     "rules.toml: rule 'fashion-trends': unknown key 'min_click' (known: tag, topic, "
     "min_clicks, window_days, floor, min_share, keep_share)"),
    (('topic = "fashion"', ""),
     "rules.toml: rule 'fashion-trends': topic must be a non-empty string, got None"),
    (('tag = "fashion-trends"', 'tag = "Fashion Trends"'),
     "rules.toml: rule #1: tag must be 1 to 100 lower-case letters, digits, '-' or '_', "
     "got 'Fashion Trends'"),
    (("max_recent = 10", "max_recent = 0"),
     "rules.toml: max_recent must be a whole number from 1 to 10000, got 0"),
    (("half_life_days = 3.5", "half_life_days = 0"),
     "rules.toml: half_life_days must be a number of days above 0 and at most 3650, got 0"),
    (("half_life_days = 3.5", "half_life = 3.5"),
     "rules.toml: unknown key 'half_life' (known: half_life_days, max_recent, defaults, tags, "
     "engagement)"),
    (("[defaults]\n", "[defaults]\nwindow = 3\n"),
     "rules.toml: defaults: unknown key 'window' (known: min_clicks, window_days, floor, "
     "min_share, keep_share)"),
    (("[[tags]]", "[[tag]]"),
     "rules.toml: unknown key 'tag' (known: half_life_days, max_recent, defaults, tags, "
     "engagement)"),
    (('topic = "fashion"', 'topic = "fashion"\n[[tags]]\ntag = "fashion-trends"\ntopic = "x"'),
     "rules.toml: rule 'fashion-trends': tag is defined twice"),
    (("[defaults]\nmin_clicks = 3\nwindow_days = 14\nfloor = 0.5\n", "defaults = 3\n"),
     "rules.toml: defaults must be a table ([defaults])"),
])
def test_a_bad_value_is_one_line_naming_file_rule_and_key(change: tuple[str, str],
                                                          message: str) -> None:
    old, new = change
    assert old in MINIMAL
    with pytest.raises(ConfigError) as caught:
        parse_rules(MINIMAL.replace(old, new, 1), "rules.toml")
    assert str(caught.value) == message


def test_invalid_toml_names_the_file_and_the_place(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[tags]\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML \(.*line 1"):
        load_rules(str(path))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing\.toml: cannot read tag rules"):
        load_rules(str(tmp_path / "nothing.toml"))


def test_a_file_without_tags_assigns_none() -> None:
    assert parse_rules("half_life_days = 7", "empty.toml").rules == ()


@pytest.mark.parametrize("tags", ["tags = 3", "tags = [1, 2]", 'tags = "fashion"'])
def test_tags_must_be_a_list_of_tables(tags: str) -> None:
    with pytest.raises(ConfigError, match=r"^x\.toml: tags must be a list of tables"):
        parse_rules(tags, "x.toml")


def test_the_engagement_weighting_is_read_next_to_the_tag_rules(tmp_path: Path) -> None:
    shipped = load_engagement(None)
    assert (shipped.bounce_seconds, shipped.bounce_weight) == (5.0, 0.1)
    path = tmp_path / "rules.toml"
    path.write_text("[engagement]\nfull_seconds = 120\n", encoding="utf-8")
    assert load_engagement(str(path)).full_seconds == 120.0
    path.write_text("[engagement]\nfull_second = 120\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'full_second'"):
        load_engagement(str(path))
