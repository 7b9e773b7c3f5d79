"""Consent by construction: what the engine may do for a customer, and what a revocation undoes.

Purposes (:data:`schemas.records.PURPOSES`) are ``profiling`` (use behaviour
for interests, scores and models), ``personalisation`` (choose content for
the customer) and one per channel (``email``, ``push``, ``sms``, ``web``).
A purpose the customer never decided on falls back to the deployment's
default (:class:`ConsentPolicy`); the shipped default grants nothing.

Consent is decided as of each event's own time, never by the order in which
topics were read.  Each purpose keeps its latest decision and the ones before
it (at most :data:`CONSENT_LOG_MAX`; past that the two oldest merge into one
that grants only where both did, so an event in their span counts as not
consented, never the other way).  :meth:`ConsentPolicy.allows_since` is the
gate: a purpose is granted at the event's time and not revoked at any later
time known, because a later revocation would have forgotten the behaviour
(profiling) or cancelled the send (a channel) had the event been read first.

A click or purchase that profiling does not allow at its time is skipped
but parked (:func:`park`): at most :data:`PARKED_MAX` per customer and none
older than :data:`PARK_FOR` (or the history retention, if shorter) before the
customer's latest event.  When a consent decision arrives, the parked events it allows as of
their own time are released (:func:`release`) and applied then, in event-time
order; those a later revocation rules out for good are dropped.  Past the
bound the oldest parked event is dropped and stays skipped, as it would be
without parking.

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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from agents.core.customer import (
    ConsentEntry,
    CustomerState,
    PendingSend,
    PurchaseFigures,
)
from agents.core.interests import TagChange
from schemas.records import Clicked, Purchased

#: The consent purpose that covers sending on each channel.  In-app cards
#: ride on the app's messaging consent.
CHANNEL_PURPOSE = {"email": "email", "push": "push", "sms": "sms", "web": "web", "app": "push"}

#: Decisions kept per purpose (the latest included).
CONSENT_LOG_MAX = 16
#: Clicks and purchases kept per customer while consent does not allow them.
PARKED_MAX = 200
#: How long (event time, before the customer's latest event) they are kept.
PARK_FOR = timedelta(days=7)

__all__ = ["CHANNEL_PURPOSE", "CONSENT_LOG_MAX", "PARKED_MAX", "PARK_FOR", "ConsentEntry",
           "ConsentPolicy",
           "Revocation", "cancel_pending", "decided", "due_pending", "forget_behaviour", "park",
           "release", "revocation"]


@dataclass(frozen=True)
class ConsentPolicy:
    """What counts as granted when a customer has no decision for a purpose."""

    #: Purposes assumed granted without a recorded decision (shipped: none).
    default_granted: frozenset[str] = frozenset()

    def allows(self, state: CustomerState, purpose: str) -> bool:
        """True when ``purpose`` is granted: by the latest decision, else by the default."""
        entry = state.consent.get(purpose)
        return purpose in self.default_granted if entry is None else entry.granted

    def allows_at(self, state: CustomerState, purpose: str, at: datetime) -> bool:
        """True when ``purpose`` was granted at event time ``at`` (by the decision then in force).

        >>> from datetime import UTC, datetime
        >>> day = lambda d: datetime(2026, 3, d, tzinfo=UTC)
        >>> state = CustomerState("c-1", consent={"email": ConsentEntry(
        ...     False, day(5), "banner", "consent", earlier=((day(2), True),))})
        >>> [ConsentPolicy().allows_at(state, "email", day(d)) for d in (1, 2, 4, 5)]
        [False, True, True, False]
        """
        entry = state.consent.get(purpose)
        if entry is None:
            return purpose in self.default_granted
        granted = purpose in self.default_granted
        for decided_at, was_granted in _decisions(entry):
            if decided_at > at:
                break
            granted = was_granted
        return granted

    def allows_since(self, state: CustomerState, purpose: str, at: datetime) -> bool:
        """Granted at ``at`` and not revoked by any later decision known.

        The gate for an event dated ``at``: read in event-time order, the event
        would have been used and whatever it caused undone by the revocation.

        >>> from datetime import UTC, datetime
        >>> day = lambda d: datetime(2026, 3, d, tzinfo=UTC)
        >>> state = CustomerState("c-1", consent={"email": ConsentEntry(
        ...     True, day(5), "banner", "consent", earlier=((day(2), True), (day(3), False)))})
        >>> [ConsentPolicy().allows_since(state, "email", day(d)) for d in (1, 2, 4, 5)]
        [False, False, False, True]
        """
        if not self.allows_at(state, purpose, at):
            return False
        entry = state.consent.get(purpose)
        return entry is None or all(granted for decided_at, granted in _decisions(entry)
                                    if decided_at > at)

    def may_profile(self, state: CustomerState, at: datetime | None = None) -> bool:
        """Behaviour (dated ``at``; None: now) may feed interests, scores and models."""
        if at is None:
            return self.allows(state, "profiling")
        return self.allows_since(state, "profiling", at)

    def may_personalise(self, state: CustomerState, at: datetime | None = None) -> bool:
        """Content may be chosen for this customer (a decision may be emitted)."""
        if at is None:
            return self.allows(state, "personalisation")
        return self.allows_since(state, "personalisation", at)

    def may_send(self, state: CustomerState, channel: str, at: datetime | None = None) -> bool:
        """A personalised send trigger caused at ``at`` (None: now) may go out on ``channel``.

        Needs ``personalisation`` and the channel's own purpose.
        """
        purpose = CHANNEL_PURPOSE.get(channel)
        if purpose is None or not self.may_personalise(state, at):
            return False
        return self.allows(state, purpose) if at is None else self.allows_since(
            state, purpose, at)

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


def decided(entry: ConsentEntry | None, granted: bool, at: datetime, source: str,
            legal_basis: str) -> ConsentEntry:
    """``entry`` (None: no decision yet) with one more decision, in event-time order.

    A decision dated after the latest becomes the latest; an older one goes
    into ``earlier``; one at the same time as the latest replaces it (the one
    applied last wins).  At most :data:`CONSENT_LOG_MAX` are kept.

    >>> from datetime import UTC, datetime
    >>> day = lambda d: datetime(2026, 3, d, tzinfo=UTC)
    >>> entry = decided(None, True, day(5), "banner", "consent")
    >>> entry = decided(entry, False, day(2), "banner", "consent")
    >>> entry.granted, entry.at.day, [(at.day, g) for at, g in entry.earlier]
    (True, 5, [(2, False)])
    """
    if entry is None:
        return ConsentEntry(granted, at, source, legal_basis)
    if at >= entry.at:
        earlier = entry.earlier if at == entry.at else (*entry.earlier, (entry.at, entry.granted))
        return ConsentEntry(granted, at, source, legal_basis, _bounded(earlier))
    kept = [d for d in entry.earlier if d[0] != at]
    kept.append((at, granted))
    kept.sort(key=lambda d: d[0])
    return replace(entry, earlier=_bounded(tuple(kept)))


def _bounded(earlier: tuple[tuple[datetime, bool], ...]) -> tuple[tuple[datetime, bool], ...]:
    """``earlier`` within the bound: the two oldest merge, granting only where both did."""
    while len(earlier) >= CONSENT_LOG_MAX:
        (first_at, first), (_, second) = earlier[0], earlier[1]
        earlier = ((first_at, first and second), *earlier[2:])
    return earlier


def _decisions(entry: ConsentEntry) -> Iterable[tuple[datetime, bool]]:
    """Every decision of ``entry``, oldest first."""
    yield from entry.earlier
    yield entry.at, entry.granted


def revocation(policy: ConsentPolicy, before: CustomerState, after: CustomerState,
               at: datetime | None = None) -> Revocation:
    """What ``after`` no longer allows that ``before`` did (at event time ``at``; None: now).

    A revocation read after a later-dated grant still counts at its own time.

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
    if at is None:
        return Revocation(frozenset(p for p in purposes
                                    if policy.allows(before, p) and not policy.allows(after, p)))
    return Revocation(frozenset(p for p in purposes if policy.allows_at(before, p, at)
                                and not policy.allows_at(after, p, at)))


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


def _revoked_after(state: CustomerState, purpose: str, at: datetime) -> bool:
    """True when a decision dated after ``at`` revokes ``purpose``."""
    entry = state.consent.get(purpose)
    return entry is not None and any(not granted for decided_at, granted in _decisions(entry)
                                     if decided_at > at)


def _event_key(event: Clicked | Purchased) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id


def park(state: CustomerState, event: Clicked | Purchased, keep_for: timedelta,
         watermark: datetime | None = None) -> CustomerState:
    """``state`` with ``event`` (skipped for lack of consent to profiling) parked.

    Nothing is parked when a later revocation of profiling is known (no
    decision can allow the event any more).  Parked events stay in event-time
    order, at most :data:`PARKED_MAX`, none older than ``keep_for`` before the
    latest event time known, or before the ``watermark`` when that is earlier
    (the low watermark over the input partitions: while the consents are read
    behind the clicks and purchases, an event waits until every topic has been
    read ``keep_for`` past it); the oldest go first.

    >>> from datetime import UTC, datetime, timedelta
    >>> click = lambda d: Clicked(event_id=f"e{d}", customer_id="c-1", schema_version=1,
    ...                           occurred_at=datetime(2026, 3, d, tzinfo=UTC))
    >>> state = CustomerState("c-1")
    >>> for d in (5, 1, 9):
    ...     state = park(state, click(d), timedelta(days=7))
    >>> [e.event_id for e in state.parked]
    ['e5', 'e9']
    """
    if _revoked_after(state, "profiling", event.occurred_at):
        return state
    if any(p.event_id == event.event_id for p in state.parked):
        return state
    parked = sorted([*state.parked, event], key=_event_key)
    latest = parked[-1].occurred_at
    if state.last_event_at is not None and state.last_event_at > latest:
        latest = state.last_event_at
    if watermark is not None and watermark < latest:
        latest = watermark
    parked = [p for p in parked if p.occurred_at >= latest - keep_for][-PARKED_MAX:]
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.parked = parked
    return new


def release(policy: ConsentPolicy, state: CustomerState
            ) -> tuple[CustomerState, list[Clicked | Purchased]]:
    """The parked events consent now allows as of their time (oldest first), and the state
    without them and without those a later revocation of profiling rules out for good."""
    if not state.parked:
        return state, []
    allowed = [p for p in state.parked if policy.may_profile(state, p.occurred_at)]
    kept = [p for p in state.parked if p not in allowed
            and not _revoked_after(state, "profiling", p.occurred_at)]
    if len(kept) == len(state.parked):
        return state, []
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.parked = kept
    return new, allowed
