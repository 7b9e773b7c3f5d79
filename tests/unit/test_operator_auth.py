"""Operator tokens: how settings read them and how a presented token gets its role."""

from __future__ import annotations

import pytest

from streams.api.auth import Role, Tokens, fingerprint
from streams.errors import ConfigError
from streams.settings import Settings

OPERATOR = "operator-0123456789abcdef"
VIEWER = "viewer-0123456789abcdefgh"


def test_tokens_come_from_comma_separated_lists() -> None:
    settings = Settings.from_env({"RELEVANZ_OPERATOR_TOKENS": f" {OPERATOR} ,",
                                  "RELEVANZ_VIEWER_TOKENS": f"{VIEWER},{VIEWER[::-1]}"})
    assert settings.operator_tokens == (OPERATOR,)
    assert settings.viewer_tokens == (VIEWER, VIEWER[::-1])
    tokens = Tokens.from_settings(settings)
    assert tokens.role_of(OPERATOR) is Role.OPERATOR
    assert tokens.role_of(VIEWER[::-1]) is Role.VIEWER
    assert tokens.role_of(OPERATOR + "x") is None
    assert tokens.role_of("") is None


def test_no_tokens_by_default_refuses_everyone() -> None:
    tokens = Tokens.from_settings(Settings.from_env({}))
    assert not tokens
    assert tokens.role_of(OPERATOR) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELEVANZ_OPERATOR_TOKENS": "short"},
         "RELEVANZ_OPERATOR_TOKENS: token 1 must be at least 16 characters of letters, "
         "digits and -._~+/= (the value is not shown)"),
        ({"RELEVANZ_VIEWER_TOKENS": f"{VIEWER},with space in it 0123"},
         "RELEVANZ_VIEWER_TOKENS: token 2 must be at least 16 characters of letters, "
         "digits and -._~+/= (the value is not shown)"),
        ({"RELEVANZ_OPERATOR_TOKENS": OPERATOR, "RELEVANZ_VIEWER_TOKENS": OPERATOR},
         "RELEVANZ_VIEWER_TOKENS: a token is also in RELEVANZ_OPERATOR_TOKENS; give each "
         "token one role"),
    ],
)
def test_bad_tokens_are_refused_without_showing_them(env: dict[str, str], message: str
                                                     ) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


def test_tokens_never_appear_in_the_settings_repr() -> None:
    settings = Settings.from_env({"RELEVANZ_OPERATOR_TOKENS": OPERATOR,
                                  "RELEVANZ_VIEWER_TOKENS": VIEWER,
                                  "RELEVANZ_API_TOKEN": VIEWER})
    assert OPERATOR not in repr(settings)
    assert VIEWER not in repr(settings)


def test_a_fingerprint_names_a_token_without_revealing_it() -> None:
    assert len(fingerprint(OPERATOR)) == 8
    assert fingerprint(OPERATOR) != fingerprint(VIEWER)
    assert fingerprint(OPERATOR) not in OPERATOR
