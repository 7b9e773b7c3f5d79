"""Trigger rules: which events give a campaign a reason to contact a customer.

Each rule turns the customer's state after an event (and what the event
changed) into :class:`SendCandidate` values, one per campaign of the
:class:`~agents.core.campaigns.CampaignBook` that the rule starts.  Whether a
candidate is sent, and when, is :mod:`agents.core.arbitration`'s question.

- ``tag_assigned``: an interest tag was newly assigned; the send follows up on
  its topic after the campaign's ``delay`` (default: the engine's follow-up
  delay).  Key: the tag and the time it was assigned.
- ``browse_abandonment``: a click makes at least ``browse_clicks`` clicks on
  one of its topics within ``browse_window`` and the customer ordered nothing
  in that window; the send comes ``browse_wait`` after the click, and an
  order before then withdraws it (the engine cancels it).  Key: the topic and
  the day, so one streak gives one send a day at most.
- ``cross_sell``: an order contains a product that other customers often
  bought together with one not in this order (:class:`~agents.core.cobuy.CoPurchases`,
  at least ``cross_sell_support`` orders); the send is about that product's
  topic.  Key: the order.
- ``win_back``: the customer has gone quiet and their churn risk as of then
  (the predictions passed in) is at least ``win_back_churn``; the send is
  about their strongest interest.  It fires on event time passing, not on
  an event of the customer: the worker hands a :class:`WentQuiet` for each
  check of :func:`quiet_checks` that its event-time watermark passes
  (:mod:`agents.pipeline.lapses`).  A customer's own event never starts a
  win-back (they are back).  The campaign's own cap (shipped: one per 30
  days) keeps it from repeating while the risk stays high.  Key: the day of
  the check.

Keys are built from event data only, so a replay gives the same keys and so
the same idempotency keys.

>>> from datetime import UTC, datetime, timedelta
>>> from agents.core.campaigns import DEFAULT_BOOK
>>> from agents.core.interests import TagChange
>>> at = datetime(2026, 3, 2, 18, tzinfo=UTC)
>>> change = TagChange("golf-fans", "golf", "assigned", 2.0, at, "e7")
>>> (found,) = send_candidates(CustomerState("c-1"), None, [], [change], DEFAULT_BOOK,
...                            follow_up_delay=timedelta(hours=1))
>>> found.campaign.campaign_id, found.key, found.topic, found.earliest - found.at
('interest-follow-up', 'tag:golf-fans:2026-03-02T18:00:00+00:00', 'golf',
 datetime.timedelta(seconds=3600))
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from agents.core.campaigns import Campaign, CampaignBook, format_duration
from agents.core.cobuy import CoPurchases
from agents.core.customer import CustomerState, Interaction
from agents.core.interests import TagChange
from schemas.records import Clicked, Purchased, Record


class Outlook(Protocol):
    """What the trigger rules read of a customer's predictions.

    :class:`agents.core.predictions.Predictions` and the stored
    ``CustomerPredictions`` both fit.
    """

    @property
    def churn(self) -> float:
        """Chance of no event within the churn horizon."""

    @property
    def best_hour(self) -> int | None:
        """Local hour of day (0-23) the customer engages most; None before any."""


@dataclass(frozen=True)
class SendCandidate:
    """A campaign's reason to contact the customer, before arbitration."""

    campaign: Campaign
    #: Stable per rule and occasion; part of the idempotency key.
    key: str
    #: Content topic of the send (None: any item, for a customer without interests).
    topic: str | None
    #: When the occasion arose (event time).
    at: datetime
    #: The earliest send time.
    earliest: datetime
    #: Multiplies the content's score into the expected value (0 to 1).
    strength: float
    #: The event that led to it.
    caused_by: str
    reasons: tuple[str, ...]


#: A quiet customer is checked for win-back this long after their latest event, then as
#: often again, until :data:`QUIET_CHECK_UNTIL` after it (13 weeks: 13 checks at most;
#: each asks the churn model, so a log of many lapsed customers is not checked for ever).
QUIET_CHECK_EVERY = timedelta(days=7)
QUIET_CHECK_UNTIL = timedelta(days=91)


@dataclass(frozen=True)
class WentQuiet:
    """Event time passed ``occurred_at`` with no event of the customer since ``last_event_at``.

    Not a message on a topic: the worker makes it when its event-time
    watermark passes a check of :func:`quiet_checks`.  The id is built from
    the customer and the two times only, so a replay makes the same one.
    """

    customer_id: str
    occurred_at: datetime
    last_event_at: datetime

    @property
    def event_id(self) -> str:
        """Stable id: the customer, the check's time and the event it counts from."""
        return (f"{self.customer_id}:quiet:{self.last_event_at.isoformat()}:"
                f"{self.occurred_at.isoformat()}")


def quiet_checks(last_event_at: datetime, after: datetime | None = None) -> datetime | None:
    """The first win-back check of a customer last seen at ``last_event_at`` later than
    ``after`` (default: the first check); None past the last one.

    >>> from datetime import UTC
    >>> seen = datetime(2026, 1, 1, tzinfo=UTC)
    >>> quiet_checks(seen).isoformat(), quiet_checks(seen, seen + timedelta(days=7)).day
    ('2026-01-08T00:00:00+00:00', 15)
    >>> quiet_checks(seen, seen + QUIET_CHECK_UNTIL) is None
    True
    """
    step = QUIET_CHECK_EVERY
    if after is None or after < last_event_at + step:
        return last_event_at + step
    due = last_event_at + ((after - last_event_at) // step + 1) * step
    return due if due <= last_event_at + QUIET_CHECK_UNTIL else None


def send_candidates(state: CustomerState, record: Record | WentQuiet | None, topics: Sequence[str],
                    tag_changes: Sequence[TagChange], book: CampaignBook, *,
                    follow_up_delay: timedelta, predictions: Outlook | None = None,
                    cobuy: CoPurchases | None = None,
                    history: Sequence[Interaction] | None = None) -> list[SendCandidate]:
    """Every campaign's candidate after ``record`` (None: no event, only tag changes).

    ``state`` is the state after the event, ``topics`` the topics of a click,
    ``tag_changes`` what the event did to tags.  ``history`` is the
    interaction history to look for orders in (default: ``state.history``).
    """
    found: list[SendCandidate] = []
    for change in tag_changes:
        if change.change == "assigned":
            found += _tag_assigned(change, book, follow_up_delay)
    if isinstance(record, Clicked) and topics:
        found += _browse_abandonment(state, record, topics, book,
                                     state.history if history is None else history)
    if isinstance(record, Purchased) and cobuy is not None:
        found += _cross_sell(record, book, cobuy)
    if predictions is not None and isinstance(record, WentQuiet):
        found += _win_back(state, record, predictions, book)
    return found


def _tag_assigned(change: TagChange, book: CampaignBook, delay: timedelta
                  ) -> list[SendCandidate]:
    reason = f"tag {change.tag} assigned (score {change.score:.2f}) by {change.caused_by}"
    return [SendCandidate(c, f"tag:{change.tag}:{change.at.isoformat()}", change.topic,
                          change.at, change.at + (delay if c.delay is None else c.delay), 1.0,
                          change.caused_by, (reason,))
            for c in book.with_trigger("tag_assigned") if _takes(c, change.topic)]


def _browse_abandonment(state: CustomerState, click: Clicked, topics: Sequence[str],
                        book: CampaignBook, history: Sequence[Interaction]
                        ) -> list[SendCandidate]:
    campaigns = book.with_trigger("browse_abandonment")
    if not campaigns:
        return []
    p, at = book.triggers, click.occurred_at
    since = at - p.browse_window
    last_order = state.purchases.last_at
    found: list[SendCandidate] = []
    for topic in dict.fromkeys(topics):
        interest = state.interests.get(topic)
        recent = interest.recent if interest is not None else []
        clicks = bisect_right(recent, at) - bisect_right(recent, since)
        if clicks < p.browse_clicks:
            continue
        if last_order is not None and last_order > since and ordered_between(
                history, since, at):
            return []
        reason = (f"browse abandonment: {clicks} clicks on {topic} within "
                  f"{format_duration(p.browse_window)}, no order")
        found += [SendCandidate(c, f"browse:{topic}:{at.date().isoformat()}", topic, at,
                                at + (p.browse_wait if c.delay is None else c.delay), 1.0,
                                click.event_id, (reason,))
                  for c in campaigns if _takes(c, topic)]
    return found


def _cross_sell(order: Purchased, book: CampaignBook, cobuy: CoPurchases
                ) -> list[SendCandidate]:
    campaigns = book.with_trigger("cross_sell")
    if not campaigns:
        return []
    p = book.triggers
    bought = {item.product_id for item in order.items}
    best: tuple[int, str, str] | None = None
    for product in sorted(bought):
        for other, support in cobuy.also_bought(product, 5):
            if other in bought or support < p.cross_sell_support:
                continue
            if best is None or (support, best[1]) > (best[0], other):
                best = (support, other, product)
    if best is None:
        return []
    support, other, product = best
    topics = cobuy.topics_of(other)
    if not topics:
        return []
    confidence = min(1.0, support / max(cobuy.orders_with(product), 1))
    reason = (f"cross-sell: bought {product}; {support} orders with it also had {other} "
              f"(confidence {confidence:.2f})")
    at = order.occurred_at
    return [SendCandidate(c, f"cross-sell:{order.order_id}", topics[0], at,
                          at + (p.cross_sell_delay if c.delay is None else c.delay),
                          confidence, order.event_id, (reason,))
            for c in campaigns if _takes(c, topics[0])]


def _win_back(state: CustomerState, record: WentQuiet, predictions: Outlook,
              book: CampaignBook) -> list[SendCandidate]:
    campaigns = book.with_trigger("win_back")
    if not campaigns:
        return []  # the churn risk may be computed when read: only when a campaign asks
    threshold = book.triggers.win_back_churn
    churn = predictions.churn
    at = record.occurred_at
    if churn < threshold:
        return []
    interests = state.interests
    topic = max(sorted(interests), key=lambda t: interests[t].score) if interests else None
    quiet = (at - record.last_event_at).days
    reason = (f"win-back: quiet for {quiet} days, churn risk {churn:.2f} at or above "
              f"{threshold:.2f}")
    return [SendCandidate(c, f"win-back:{at.date().isoformat()}", topic, at,
                          at + (c.delay or timedelta(0)), churn, record.event_id, (reason,))
            for c in campaigns if topic is None or _takes(c, topic)]


def record_id(record: Record) -> str:
    """The event id of a customer event."""
    return str(getattr(record, "event_id", ""))


def _takes(campaign: Campaign, topic: str) -> bool:
    return not campaign.topics or topic in campaign.topics


def ordered_between(history: Sequence[Interaction], since: datetime, until: datetime) -> bool:
    """True when the history (oldest first) holds an order in ``(since, until]``."""
    start = bisect_right(history, since, key=_occurred_at)
    for entry in history[start:]:
        if entry.occurred_at > until:
            return False
        if entry.kind == "purchase":
            return True
    return False


def _occurred_at(entry: Interaction) -> datetime:
    return entry.occurred_at
