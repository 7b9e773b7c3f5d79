"""Each setting is declared once; its default, bound, README row and --help line follow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli.commands import main
from streams.errors import ConfigError
from streams.settings import (
    SETTINGS,
    Setting,
    Settings,
    _choice,
    _int,
    declare,
    declared,
    read_declared,
)


@dataclass(frozen=True)
class Widget:
    """A settings class as a new module would declare it."""

    size: int = declare("RELEVANZ_WIDGET_SIZE", "5", _int(1, 10), "How big a widget is.")
    mode: str = declare("RELEVANZ_WIDGET_MODE", "fast", _choice("fast", "slow"), "Its mode.")


def test_a_new_declaration_gives_its_default_and_rejects_a_value_past_its_bound() -> None:
    assert Widget() == Widget(**read_declared(Widget, {})) == Widget(size=5, mode="fast")
    assert read_declared(Widget, {"RELEVANZ_WIDGET_SIZE": "10"})["size"] == 10
    assert [s.name for s in declared(Widget)] == ["RELEVANZ_WIDGET_SIZE", "RELEVANZ_WIDGET_MODE"]
    with pytest.raises(ConfigError) as caught:
        read_declared(Widget, {"RELEVANZ_WIDGET_SIZE": "11"})
    assert str(caught.value) == (
        "RELEVANZ_WIDGET_SIZE: expected a whole number from 1 to 10, got '11'")
    with pytest.raises(ConfigError) as caught:
        read_declared(Widget, {"RELEVANZ_WIDGET_MODE": "Sideways"})
    assert str(caught.value) == (
        "RELEVANZ_WIDGET_MODE: expected one of fast, slow, got 'Sideways'")


def test_every_field_but_extra_is_a_declared_variable() -> None:
    undeclared = [f.name for f in dataclasses.fields(Settings) if "setting" not in f.metadata]
    assert undeclared == ["extra"]
    assert len({s.name for s in SETTINGS}) == len(SETTINGS) == 43


def test_the_class_defaults_are_the_declared_defaults_read() -> None:
    assert Settings() == Settings.from_env({})
    assert Settings.from_env({"RELEVANZ_PARTITIONS": "8"}) == Settings(partitions=8)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name != "RELEVANZ_API_TOKEN"],
                         ids=lambda s: s.name)
def test_each_bound_rejects_garbage_in_one_line_naming_its_variable(
        setting: Setting[Any]) -> None:
    messages = []
    for raw in ("\n", "not a value!", "-1e99", "99999999999"):
        try:
            setting.parse(setting.name, raw)
        except ConfigError as exc:
            messages.append(str(exc))
    assert messages, f"{setting.name} accepts anything"
    for message in messages:
        assert message.startswith(f"{setting.name}: "), message
        assert "\n" not in message, message


def test_the_worker_stops_on_a_value_past_a_bound_with_one_line() -> None:
    # The heartbeat is too long for the session too: were the partitions' bound lost,
    # that check would stop the worker instead, with another line.
    env = {"RELEVANZ_PARTITIONS": "1025", "RELEVANZ_HEARTBEAT_S": "60"}
    result = CliRunner().invoke(main, ["worker"], env=env)
    assert result.exit_code == 2
    assert result.stderr == (
        "relevanz: error: RELEVANZ_PARTITIONS: expected a whole number from 1 to 1024, "
        "got '1025'\n")


def test_the_bound_a_declaration_validates_is_the_one_help_and_readme_name() -> None:
    size, mode = declared(Widget)
    assert (size.accepts, mode.accepts) == ("a whole number from 1 to 10", "one of fast, slow")
    for setting, bad in ((size, "0"), (mode, "medium")):
        with pytest.raises(ConfigError) as caught:
            setting.read({setting.name: bad})
        assert f"expected {setting.accepts}, got {bad!r}" in str(caught.value)
    bounded = [s for s in SETTINGS if s.accepts != "any text"]
    assert len(bounded) >= len(SETTINGS) - 4, [s.name for s in SETTINGS if s not in bounded]
