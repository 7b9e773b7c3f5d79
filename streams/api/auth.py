"""Bearer tokens and the two roles of the operator API.

Tokens come from ``RELEVANZ_OPERATOR_TOKENS`` and ``RELEVANZ_VIEWER_TOKENS``.
A viewer may read everything the API shows; an operator may also change
things (pause, resume).  Only SHA-256 digests of the tokens are kept, and a
presented token is compared with *every* digest in constant time
(:func:`hmac.compare_digest`, no early exit), so neither the answer time nor
its length tell anything about the configured tokens.  Logs and control
records name a token by its :func:`fingerprint`, never by the token.

>>> tokens = Tokens.from_lists(operators=["o" * 20], viewers=["v" * 20])
>>> tokens.role_of("o" * 20), tokens.role_of("v" * 20), tokens.role_of("x" * 20)
(<Role.OPERATOR: 'operator'>, <Role.VIEWER: 'viewer'>, None)
>>> Role.OPERATOR.may(Role.VIEWER), Role.VIEWER.may(Role.OPERATOR)
(True, False)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from streams.settings import Settings


class Role(enum.Enum):
    """What a token may do."""

    VIEWER = "viewer"
    OPERATOR = "operator"

    def may(self, needed: Role) -> bool:
        """Whether this role includes ``needed`` (an operator may all a viewer may)."""
        return self is Role.OPERATOR or needed is Role.VIEWER


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def fingerprint(token: str) -> str:
    """A short, non-secret name for a token (first 8 hex digits of its SHA-256).

    >>> fingerprint("o" * 20)
    'bd268b82'
    """
    return hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, as digests with their roles."""

    entries: tuple[tuple[bytes, Role], ...]

    @classmethod
    def from_lists(cls, *, operators: Iterable[str], viewers: Iterable[str]) -> Tokens:
        """Tokens from plain lists (settings have validated them)."""
        return cls(tuple((_digest(t), Role.OPERATOR) for t in operators)
                   + tuple((_digest(t), Role.VIEWER) for t in viewers))

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        """The tokens of ``RELEVANZ_OPERATOR_TOKENS`` and ``RELEVANZ_VIEWER_TOKENS``."""
        return cls.from_lists(operators=settings.operator_tokens,
                              viewers=settings.viewer_tokens)

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or None; takes the same time whatever it is."""
        digest = _digest(presented)
        found: Role | None = None
        for known, role in self.entries:
            if hmac.compare_digest(digest, known):
                found = role
        return found

    def __bool__(self) -> bool:
        return bool(self.entries)


def generate_tokens() -> tuple[str, str]:
    """A fresh (operator, viewer) token pair for a demo with none configured."""
    return secrets.token_urlsafe(24), secrets.token_urlsafe(24)
