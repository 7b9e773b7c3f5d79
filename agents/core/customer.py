"""The customer aggregate: everything Relevanz knows about one customer.

A :class:`CustomerState` is a projection of that customer's events and is
rebuilt exactly by replaying them.  It is plain data: the store persists it
(one partition per customer), :mod:`agents.core.profile` and
:mod:`agents.core.interests` compute new states from events.  Times are
timezone-aware event times, never the wall clock.

>>> from datetime import datetime, timezone
>>> state = CustomerState("c-1")
>>> state.is_empty
True
>>> state.consent["email"] = ConsentEntry(True, datetime(2026, 1, 1, tzinfo=timezone.utc),
...                                       "web form", "consent")
>>> state.is_empty
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.records import Clicked, Purchased


@dataclass
class MasterData:
    """CRM master data from the latest profile event."""

    locale: str
    language: str
    time_zone: str
    updated_at: datetime
    country: str | None = None
    birth_year: int | None = None
    gender: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ConsentEntry:
    """The customer's latest decision about one purpose, and the decisions before it.

    ``earlier`` lets the consent gate answer "was this allowed at ``t``" for
    an event read after a later-dated decision (see :mod:`agents.core.consent`).
    """

    granted: bool
    at: datetime
    source: str
    legal_basis: str
    #: Earlier decisions as ``(event time, granted)``, oldest first; bounded
    #: (:data:`agents.core.consent.CONSENT_LOG_MAX`).
    earlier: tuple[tuple[datetime, bool], ...] = ()


@dataclass
class TopicInterest:
    """Interest in one topic: a decayed click score and recent click times.

    ``score`` is valid at ``scored_at``: the sum over clicks of
    ``2 ** -((scored_at - clicked_at) / half_life)``, so it does not depend on
    the order clicks arrive in.  ``recent`` holds the latest click times
    (bounded, newest last) for windowed counts.
    """

    score: float
    scored_at: datetime
    recent: list[datetime] = field(default_factory=list)


@dataclass
class AssignedTag:
    """An interest tag currently assigned to the customer."""

    topic: str
    assigned_at: datetime
    caused_by: str


@dataclass
class PurchaseFigures:
    """Recency, frequency and monetary figures from purchases."""

    orders: int = 0
    revenue: float = 0.0
    first_at: datetime | None = None
    last_at: datetime | None = None


@dataclass
class Interaction:
    """One entry of the interaction history (bounded by retention)."""

    occurred_at: datetime
    event_id: str
    kind: str  # click, purchase, decision, trigger
    content_id: str | None = None
    campaign_id: str | None = None
    amount: float | None = None


@dataclass
class PendingSend:
    """A send trigger (or proposal) already emitted: an entry of the contact log.

    Kept until its send time so that a revocation can cancel it (downstream
    channels honour the cancellation by ``trigger_id`` or
    ``idempotency_key``), and after it while contact caps count it.
    """

    trigger_id: str
    idempotency_key: str
    channel: str
    send_at: datetime
    campaign_id: str
    content_id: str


@dataclass
class CustomerPredictions:
    """The customer's latest predictions and the engagement profile behind the send hour.

    Written by the worker after each consented event (see
    :mod:`agents.core.predictions`).  Not a projection of the customer's own
    events alone: the probabilities come from models shared by all customers.
    """

    #: Chance of an order within the purchase horizon.
    purchase: float
    #: Chance of no event at all within the churn horizon.
    churn: float
    #: Local hour of day (0-23) with the most engagement; None before any.
    best_hour: int | None
    #: Event time of the prediction.
    at: datetime
    #: Decayed engagement per hour of the week in UTC (0 = Monday 00:00 UTC), so
    #: that it does not depend on when a time-zone change arrived.
    hours: dict[int, float] = field(default_factory=dict)
    #: When the ``hours`` scores are valid.
    hours_at: datetime | None = None
    #: Items bought over all orders (quantities), a feature of the outcome models.
    units: int = 0


@dataclass
class CustomerState:
    """Everything known about one customer."""

    customer_id: str
    master: MasterData | None = None
    consent: dict[str, ConsentEntry] = field(default_factory=dict)
    interests: dict[str, TopicInterest] = field(default_factory=dict)
    tags: dict[str, AssignedTag] = field(default_factory=dict)
    purchases: PurchaseFigures = field(default_factory=PurchaseFigures)
    #: Oldest first; bounded by count and age (see the profile rules).
    history: list[Interaction] = field(default_factory=list)
    #: Latest event time seen for this customer.
    last_event_at: datetime | None = None
    #: The contact log, by send time (soonest first): sends (and proposals) not yet due,
    #: which a revocation cancels, and past sends kept while a contact cap counts them.
    pending: list[PendingSend] = field(default_factory=list)
    #: Latest predictions (None before any, or without consent to profiling).
    predictions: CustomerPredictions | None = None
    #: Clicks and purchases consent did not allow at their event time, oldest first,
    #: kept (bounded) in case a consent decision dated before them arrives late.
    parked: list[Clicked | Purchased] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when nothing is known (as for a customer never seen)."""
        return self == CustomerState(self.customer_id)
