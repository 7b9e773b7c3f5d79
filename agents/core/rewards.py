"""Rewards for decisions: which reaction belongs to which decision, and when silence counts.

Each decision stays *open* for the attribution window after it was made.
While open it is rewarded (once) by

- a click or purchase that carries its ``decision_id``, or, without one,
- a click on the decided content item, or a purchase of an item on one of
  its topics, inside the window (the latest open decision that matches).

When the window has passed without a reaction, :func:`expire` turns the
decision into a non-click label.  No one waits in the hot path: the caller
keeps the open decisions with the customer's state and calls :func:`expire`
from a timer (or with each event's time as the watermark); :func:`next_deadline`
says when the timer should fire next.  Every function returns new tuples and
changes nothing it is given, so applying the same event twice to the same
open decisions gives the same labels.

>>> from datetime import UTC, datetime, timedelta
>>> at, window = datetime(2026, 3, 1, 9, tzinfo=UTC), timedelta(hours=1)
>>> shown = OpenDecision("d-1", "n-1", ("golf",), at, at + window, {"affinity": 0.8})
>>> still_open, labels = attribute((shown,), Reaction("e-9", at + timedelta(minutes=5),
...                                                   content_id="n-1"))
>>> still_open, [(r.decision.decision_id, r.clicked, r.caused_by) for r in labels]
((), [('d-1', True, 'e-9')])
>>> expire((shown,), at + window)[1][0].clicked
False
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from schemas.records import Clicked, Purchased

#: ``caused_by`` of a non-click label: the window passed without a reaction.
EXPIRED = "attribution-window-expired"


@dataclass(frozen=True)
class OpenDecision:
    """A decision waiting for its reaction, with the features it was made on."""

    decision_id: str
    content_id: str
    topics: tuple[str, ...]
    decided_at: datetime
    #: End of the attribution window (exclusive).
    deadline: datetime
    features: Mapping[str, float] = field(default_factory=dict)
    policy: str = "exploit"


@dataclass(frozen=True)
class Reaction:
    """A click or purchase as far as attribution cares."""

    event_id: str
    at: datetime
    decision_id: str | None = None
    #: The clicked item (clicks only).
    content_id: str | None = None
    #: Topics of the purchased items (purchases only).
    topics: tuple[str, ...] = ()
    kind: str = "click"


@dataclass(frozen=True)
class Reward:
    """A label for one decision: clicked (or bought) or not."""

    decision: OpenDecision
    clicked: bool
    at: datetime
    caused_by: str


def reaction_of(event: Clicked | Purchased) -> Reaction:
    """The attribution view of a click or purchase record.

    >>> from datetime import UTC, datetime
    >>> click = Clicked(event_id="e-1", customer_id="c-1", schema_version=1,
    ...                 occurred_at=datetime(2026, 3, 1, tzinfo=UTC), content_id="n-1",
    ...                 decision_id="d-1")
    >>> r = reaction_of(click)
    >>> r.decision_id, r.content_id, r.kind
    ('d-1', 'n-1', 'click')
    """
    if isinstance(event, Clicked):
        return Reaction(event.event_id, event.occurred_at, event.decision_id, event.content_id)
    topics = tuple(dict.fromkeys(t for item in event.items for t in item.topics))
    return Reaction(event.event_id, event.occurred_at, event.decision_id, None, topics,
                    "purchase")


def open_decision(open_: tuple[OpenDecision, ...], decision: OpenDecision, limit: int = 50
                  ) -> tuple[tuple[OpenDecision, ...], list[Reward]]:
    """``open_`` with ``decision`` added (a known ``decision_id`` is not added twice).

    Beyond ``limit`` the oldest decisions are closed early as non-clicks, so
    a customer's open list stays bounded.
    """
    if any(d.decision_id == decision.decision_id for d in open_):
        return open_, []
    ordered = tuple(sorted((*open_, decision), key=lambda d: (d.decided_at, d.decision_id)))
    overflow = len(ordered) - limit
    if overflow <= 0:
        return ordered, []
    return ordered[overflow:], [Reward(d, False, decision.decided_at, EXPIRED)
                                for d in ordered[:overflow]]


def attribute(open_: tuple[OpenDecision, ...], reaction: Reaction
              ) -> tuple[tuple[OpenDecision, ...], list[Reward]]:
    """The open decisions left after ``reaction``, and the reward it earned (if any)."""
    match = _match(open_, reaction)
    if match is None:
        return open_, []
    rest = tuple(d for d in open_ if d is not match)
    return rest, [Reward(match, True, reaction.at, reaction.event_id)]


def expire(open_: Iterable[OpenDecision], now: datetime
           ) -> tuple[tuple[OpenDecision, ...], list[Reward]]:
    """Close every decision whose window ended by ``now`` as a non-click.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 3, 1, tzinfo=UTC)
    >>> d = OpenDecision("d-1", "n-1", (), t, t + timedelta(hours=1))
    >>> expire((d,), t + timedelta(minutes=59)) == ((d,), [])
    True
    """
    keep, labels = [], []
    for decision in open_:
        if decision.deadline <= now:
            labels.append(Reward(decision, False, decision.deadline, EXPIRED))
        else:
            keep.append(decision)
    return tuple(keep), labels


def next_deadline(open_: Iterable[OpenDecision]) -> datetime | None:
    """When the next open decision expires (when the timer should fire), or None."""
    return min((d.deadline for d in open_), default=None)


def _match(open_: tuple[OpenDecision, ...], reaction: Reaction) -> OpenDecision | None:
    if reaction.decision_id is not None:
        # An explicit id wins, even late: the channel says which decision it answers.
        return next((d for d in open_ if d.decision_id == reaction.decision_id), None)
    window = [d for d in open_ if d.decided_at <= reaction.at < d.deadline]
    if reaction.content_id is not None:
        window = [d for d in window if d.content_id == reaction.content_id]
    elif reaction.topics:
        window = [d for d in window if set(d.topics).intersection(reaction.topics)]
    else:
        return None
    return max(window, key=lambda d: (d.decided_at, d.decision_id), default=None)
