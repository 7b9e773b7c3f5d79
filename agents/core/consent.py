"""Consent by construction: what the engine may do for a customer, and what a revocation undoes.

Purposes (:data:`schemas.records.PURPOSES`) are ``profiling`` (use behaviour
for interests, scores and models), ``personalisation`` (choose content for
the customer) and one per channel (``email``, ``push``, ``sms``, ``web``).
A purpose the customer never decided on falls back to the deployment's
default (:class:`ConsentPolicy`); the shipped default grants nothing.

A revocation acts on the state at once:

- revoking ``profiling`` forgets the behavioural profile derived so far
  (interests, tags, purchase figures, interaction history): keeping it would
  serve no lawful purpose;
- every pending send that the revocation no longer allows is cancelled:
  those on a revoked channel, and all of them when ``profiling`` or
  ``personalisation`` is revoked (a follow-up chosen from a profile is a
  personalised decision).

>>> from datetime import UTC, datetime
>>> policy = ConsentPolicy(default_granted=frozenset())
>>> state = CustomerState("c-1")
>>> policy.allows(state, "profiling")
False
>>> state.consent["profiling"] = ConsentEntry(True, datetime(2026, 3, 1, tzinfo=UTC),
...                                           "banner", "consent")
>>> policy.allows(state, "profiling"), policy.may_send(state, "email")
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.core.customer import (
    ConsentEntry,
    CustomerState,
    PendingSend,
    PurchaseFigures,
)
from agents.core.interests import TagChange

#: The consent purpose that covers sending on each channel.  In-app cards
#: ride on the app's messaging consent.
CHANNEL_PURPOSE = {"email": "email", "push": "push", "sms": "sms", "web": "web", "app": "push"}

__all__ = ["CHANNEL_PURPOSE", "ConsentEntry", "ConsentPolicy", "Revocation",
           "cancel_pending", "due_pending", "forget_behaviour", "revocation"]


@dataclass(frozen=True)
class ConsentPolicy:
    """What counts as granted when a customer has no decision for a purpose."""

    #: Purposes assumed granted without a recorded decision (shipped: none).
    default_granted: frozenset[str] = frozenset()

    def allows(self, state: CustomerState, purpose: str) -> bool:
        """True when ``purpose`` is granted: by the latest decision, else by the default."""
        entry = state.consent.get(purpose)
        return purpose in self.default_granted if entry is None else entry.granted

    def may_profile(self, state: CustomerState) -> bool:
        """Behaviour may feed interests, scores and models."""
        return self.allows(state, "profiling")

    def may_personalise(self, state: CustomerState) -> bool:
        """Content may be chosen for this customer (a decision may be emitted)."""
        return self.allows(state, "personalisation")

    def may_send(self, state: CustomerState, channel: str) -> bool:
        """A personalised send trigger may go out on ``channel``.

        Needs ``personalisation`` and the channel's own purpose.
        """
        purpose = CHANNEL_PURPOSE.get(channel)
        return (purpose is not None and self.may_personalise(state)
                and self.allows(state, purpose))

    def granted(self, state: CustomerState) -> list[str]:
        """The purposes granted now, in :data:`CHANNEL_PURPOSE` order after the two core ones."""
        purposes = ("profiling", "personalisation", *dict.fromkeys(CHANNEL_PURPOSE.values()))
        return [p for p in purposes if self.allows(state, p)]


@dataclass(frozen=True)
class Revocation:
    """Purposes a consent change took away (allowed before, not after)."""

    purposes: frozenset[str]

    @property
    def profiling(self) -> bool:
        """The behavioural profile must be forgotten."""
        return "profiling" in self.purposes

    def cancels(self, pending: PendingSend) -> bool:
        """True when ``pending`` may no longer be sent."""
        return bool({"profiling", "personalisation"} & self.purposes) or (
            CHANNEL_PURPOSE.get(pending.channel) in self.purposes)


def revocation(policy: ConsentPolicy, before: CustomerState, after: CustomerState
               ) -> Revocation:
    """What ``after`` no longer allows that ``before`` did.

    >>> from datetime import UTC, datetime
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> before = CustomerState("c-1", consent={
    ...     "email": ConsentEntry(True, at, "banner", "consent"),
    ...     "web": ConsentEntry(True, at, "banner", "consent")})
    >>> after = CustomerState("c-1", consent={
    ...     "email": ConsentEntry(False, at, "banner", "consent"),
    ...     "web": ConsentEntry(True, at, "banner", "consent")})
    >>> sorted(revocation(ConsentPolicy(), before, after).purposes)
    ['email']
    """
    purposes = set(before.consent) | set(after.consent) | set(policy.default_granted)
    return Revocation(frozenset(p for p in purposes
                                if policy.allows(before, p) and not policy.allows(after, p)))


def forget_behaviour(state: CustomerState, at: datetime, caused_by: str
                     ) -> tuple[CustomerState, list[TagChange]]:
    """``state`` without its behavioural profile, and the removal of every tag it had.

    Interests, tags, purchase figures, history and predictions go.
    Master data, consent and pending sends stay (the caller cancels what the
    revocation no longer allows).

    >>> from datetime import UTC, datetime
    >>> from agents.core.customer import AssignedTag, TopicInterest
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> state = CustomerState("c-1", interests={"golf": TopicInterest(2.0, at)},
    ...                       tags={"golf-fans": AssignedTag("golf", at, "e1")})
    >>> forgotten, removed = forget_behaviour(state, at, "k1")
    >>> forgotten.interests, forgotten.tags, [(r.tag, r.change, r.caused_by) for r in removed]
    ({}, {}, [('golf-fans', 'removed', 'k1')])
    """
    removed = [TagChange(tag=tag, topic=assigned.topic, change="removed", at=at, score=0.0,
                         caused_by=caused_by)
               for tag, assigned in sorted(state.tags.items())]
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.interests, new.tags, new.history = {}, {}, []
    new.purchases = PurchaseFigures()
    new.predictions = None
    return new, removed


def cancel_pending(state: CustomerState, at: datetime, cancels: Revocation | None
                   ) -> tuple[CustomerState, list[PendingSend]]:
    """``state`` without the pending sends a revocation (None: erasure) cancels at ``at``.

    Sends whose time has come by ``at`` went out already and are not
    cancelled; they stay in the list, which is also the contact log that
    contact caps count (the engine drops them when no cap can count them
    any more).
    """
    keep: list[PendingSend] = []
    cancelled: list[PendingSend] = []
    for pending in state.pending:
        if pending.send_at > at and (cancels is None or cancels.cancels(pending)):
            cancelled.append(pending)
        else:
            keep.append(pending)
    if not cancelled:
        return state, []
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.pending = keep
    return new, cancelled


def due_pending(pending: Iterable[PendingSend], at: datetime) -> list[PendingSend]:
    """Those of ``pending`` still waiting at ``at`` (the rest went out)."""
    return [p for p in pending if p.send_at > at]
