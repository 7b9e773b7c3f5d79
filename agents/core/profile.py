"""The 360° profile: master data, consent, purchase figures and interaction history.

Each applier takes a :class:`~agents.core.customer.CustomerState` and one
input record and returns a new state; the input state is never changed.
Event time decides, never arrival order: an older profile update or consent
decision than the one already known is ignored, purchase figures and the
history are kept in event-time order, and ``last_event_at`` is the latest
event time seen.  :func:`apply_event` is the one entry point the agent calls.

>>> from datetime import UTC, datetime, timedelta
>>> from agents.core.interests import InterestRules
>>> rules = CustomerRules(InterestRules((), timedelta(days=7), 20),
...                       ProfileRules(history_max=200, history_retention=timedelta(days=365)))
>>> click = Clicked(event_id="e1", customer_id="c-1", schema_version=1,
...                 occurred_at=datetime(2026, 3, 1, tzinfo=UTC), content_id="n-1")
>>> state, changes = apply_event(CustomerState("c-1"), click, rules, ["fashion"])
>>> [(i.kind, i.content_id) for i in state.history], round(state.interests["fashion"].score, 3)
([('click', 'n-1')], 1.0)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from agents.core.consent import decided
from agents.core.customer import (
    CustomerState,
    Interaction,
    MasterData,
    PurchaseFigures,
)
from agents.core.interests import InterestRules, TagChange, apply_click, click_topics
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    ProfileUpdated,
    Purchased,
    Record,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ProfileRules:
    """How much interaction history is kept per customer."""

    #: Most entries kept; the oldest go first.
    history_max: int
    #: Entries older than this before the customer's latest event are dropped.
    history_retention: timedelta


@dataclass(frozen=True)
class CustomerRules:
    """Every rule the customer projection follows."""

    interests: InterestRules
    profile: ProfileRules


def apply_profile(state: CustomerState, update: ProfileUpdated) -> CustomerState:
    """The state with CRM master data from ``update``, unless newer data is already known.

    Fields the update leaves out (``None``) keep their earlier value and
    ``attributes`` are merged key by key, as the profile contract says
    ("replaced field by field").  On equal event times the update applied
    last wins.

    >>> from datetime import UTC, datetime
    >>> def update(day: int, **fields: object) -> ProfileUpdated:
    ...     return ProfileUpdated(event_id=f"p{day}", customer_id="c-1", schema_version=1,
    ...                           occurred_at=datetime(2026, 3, day, tzinfo=UTC),
    ...                           locale="de-DE", language="de", time_zone="Europe/Berlin",
    ...                           **fields)
    >>> state = apply_profile(CustomerState("c-1"), update(2, country="DE"))
    >>> state = apply_profile(state, update(1, country="AT"))  # older: ignored
    >>> state = apply_profile(state, update(3, gender="female"))
    >>> state.master.country, state.master.gender, state.master.updated_at.day
    ('DE', 'female', 3)
    """
    new = _touched(state, update.occurred_at)
    old = state.master
    if old is not None and update.occurred_at < old.updated_at:
        return new
    new.master = MasterData(
        locale=update.locale,
        language=update.language,
        time_zone=update.time_zone,
        updated_at=update.occurred_at,
        country=_newer(update.country, old.country if old else None),
        birth_year=_newer(update.birth_year, old.birth_year if old else None),
        gender=_newer(update.gender, old.gender if old else None),
        attributes={**(old.attributes if old else {}), **update.attributes},
    )
    return new


def apply_consent(state: CustomerState, change: ConsentChanged) -> tuple[CustomerState, bool]:
    """The state with ``change``'s consent decisions, and whether erasure was requested.

    For each purpose the decision with the latest event time is in force; the
    earlier ones are kept too (bounded), so that consent can be asked as of
    an event's own time (:func:`agents.core.consent.decided`).  An erasure
    request returns the state unchanged together with ``True``: the caller
    erases the customer everywhere, the core does not pretend to.

    >>> from datetime import UTC, datetime
    >>> def consent(day: int, action: str, *purposes: str) -> ConsentChanged:
    ...     return ConsentChanged(event_id=f"k{day}", customer_id="c-1", schema_version=1,
    ...                           occurred_at=datetime(2026, 3, day, tzinfo=UTC),
    ...                           action=action, purposes=list(purposes), source="banner")
    >>> state, _ = apply_consent(CustomerState("c-1"), consent(2, "granted", "email", "web"))
    >>> state, _ = apply_consent(state, consent(1, "revoked", "email"))  # older: ignored
    >>> state, erase = apply_consent(state, consent(3, "revoked", "web"))
    >>> {p: e.granted for p, e in state.consent.items()}, erase
    ({'email': True, 'web': False}, False)
    >>> apply_consent(state, consent(4, "erasure_requested")) == (state, True)
    True
    """
    if change.action == "erasure_requested":
        return state, True
    new = _touched(state, change.occurred_at)
    granted, consent = change.action == "granted", dict(state.consent)
    for purpose in change.purposes:
        consent[purpose] = decided(consent.get(purpose), granted, change.occurred_at,
                                   change.source, change.legal_basis)
    new.consent = consent
    return new, False


def apply_purchase(state: CustomerState, purchase: Purchased, rules: ProfileRules
                   ) -> CustomerState:
    """The state with ``purchase`` counted in the RFM figures and recorded in the history.

    ``revenue`` adds order totals as they are; each customer buys in the
    currency of their market, so no conversion happens here.

    >>> from datetime import UTC, datetime, timedelta
    >>> from schemas.records import PurchasedItem
    >>> def order(day: int, total: float) -> Purchased:
    ...     return Purchased(event_id=f"o{day}", customer_id="c-1", schema_version=1,
    ...                      occurred_at=datetime(2026, 3, day, tzinfo=UTC), order_id=f"o{day}",
    ...                      items=[PurchasedItem(product_id="sku-1", quantity=1,
    ...                                           unit_price=total)],
    ...                      total=total, currency="EUR")
    >>> rules = ProfileRules(history_max=200, history_retention=timedelta(days=365))
    >>> state = apply_purchase(CustomerState("c-1"), order(5, 20.0), rules)
    >>> state = apply_purchase(state, order(2, 10.5), rules)
    >>> f = state.purchases
    >>> f.orders, f.revenue, f.first_at.day, f.last_at.day, [i.amount for i in state.history]
    (2, 30.5, 2, 5, [10.5, 20.0])
    """
    at, figures = purchase.occurred_at, state.purchases
    new = _touched(state, at)
    new.purchases = PurchaseFigures(
        orders=figures.orders + 1,
        revenue=figures.revenue + purchase.total,
        first_at=at if figures.first_at is None else min(figures.first_at, at),
        last_at=at if figures.last_at is None else max(figures.last_at, at),
    )
    entry = Interaction(at, purchase.event_id, "purchase", campaign_id=purchase.campaign_id,
                        amount=purchase.total)
    new.history = _with_entry(state.history, entry, new.last_event_at or at, rules)
    return new


def apply_click_history(state: CustomerState, click: Clicked, rules: ProfileRules
                        ) -> CustomerState:
    """The state with ``click`` recorded in the interaction history.

    The history stays sorted by event time (oldest first), holds at most
    ``history_max`` entries and none older than ``history_retention`` before
    the customer's latest event.  An entry already there is not added twice.

    >>> from datetime import UTC, datetime, timedelta
    >>> rules = ProfileRules(history_max=2, history_retention=timedelta(days=30))
    >>> state = CustomerState("c-1")
    >>> for day in (1, 9, 5, 7):
    ...     state = apply_click_history(state, Clicked(
    ...         event_id=f"e{day}", customer_id="c-1", schema_version=1,
    ...         occurred_at=datetime(2026, 3, day, tzinfo=UTC)), rules)
    >>> [i.event_id for i in state.history], state.last_event_at.day
    (['e7', 'e9'], 9)
    """
    new = _touched(state, click.occurred_at)
    entry = Interaction(click.occurred_at, click.event_id, "click",
                        content_id=click.content_id, campaign_id=click.campaign_id)
    new.history = _with_entry(state.history, entry, new.last_event_at or click.occurred_at,
                              rules)
    return new


def apply_event(state: CustomerState, record: Record, rules: CustomerRules,
                content_topics: list[str] | None) -> tuple[CustomerState, list[TagChange]]:
    """The state after one customer event, and the interest tags it assigned or removed.

    ``content_topics`` are the catalogue topics of a click's ``content_id``
    (None when unknown).  A click updates history and interests; a purchase
    updates RFM figures and history and counts as one click on all its
    items' topics (buying is at least as strong a signal as clicking); a
    profile update sets master data; a consent change sets consent (an
    erasure request changes nothing here: see :func:`requests_erasure`).
    A consent gate can wrap this function without changing it.

    Raises :class:`TypeError` for records that are not customer events
    (such as ``ContentPublished``).
    """
    if isinstance(record, Clicked):
        state = apply_click_history(state, record, rules.profile)
        topics = click_topics(record.topics, content_topics)
        return apply_click(state, topics, record.occurred_at, record.event_id, rules.interests)
    if isinstance(record, Purchased):
        state = apply_purchase(state, record, rules.profile)
        topics = [topic for item in record.items for topic in item.topics]
        return apply_click(state, topics, record.occurred_at, record.event_id, rules.interests)
    if isinstance(record, ProfileUpdated):
        return apply_profile(state, record), []
    if isinstance(record, ConsentChanged):
        return apply_consent(state, record)[0], []
    kind = "a catalogue item" if isinstance(record, ContentPublished) else "not an input event"
    raise TypeError(f"{type(record).__name__} is {kind}, not a customer event")


def record_interaction(state: CustomerState, entry: Interaction, rules: ProfileRules
                       ) -> CustomerState:
    """The state with ``entry`` (a send, a holdout exposure) in its history, bounded as ever.

    ``last_event_at`` does not move: an entry dated at a future send time is
    no event of the customer's.
    """
    new = _shallow_copy(state)
    latest = state.last_event_at or entry.occurred_at
    new.history = _with_entry(state.history, entry, latest, rules)
    return new


def requests_erasure(record: Record) -> bool:
    """True for a consent event asking that the customer be erased.

    >>> from datetime import UTC, datetime
    >>> requests_erasure(ConsentChanged(
    ...     event_id="k1", customer_id="c-1", schema_version=1, purposes=[],
    ...     occurred_at=datetime(2026, 3, 1, tzinfo=UTC), action="erasure_requested",
    ...     source="privacy-request"))
    True
    """
    return isinstance(record, ConsentChanged) and record.action == "erasure_requested"


def _touched(state: CustomerState, at: datetime) -> CustomerState:
    """A shallow copy of ``state`` with ``last_event_at`` moved up to ``at``."""
    new = _shallow_copy(state)
    if new.last_event_at is None or at > new.last_event_at:
        new.last_event_at = at
    return new


def _newer(value: T | None, old: T | None) -> T | None:
    return old if value is None else value


def _sort_key(entry: Interaction) -> tuple[datetime, str]:
    return entry.occurred_at, entry.event_id


def _occurred_at(entry: Interaction) -> datetime:
    return entry.occurred_at


def _with_entry(history: list[Interaction], entry: Interaction, latest: datetime,
                rules: ProfileRules) -> list[Interaction]:
    """A new history list with ``entry`` in event-time order, pruned by age and count."""
    cutoff = latest - rules.history_retention
    if not history or (history[-1].occurred_at < entry.occurred_at
                       and history[0].occurred_at >= cutoff):
        # Live traffic: the newest entry and nothing aged out.
        updated = [*history, entry]
        if len(updated) > rules.history_max:
            del updated[: len(updated) - rules.history_max]
        return updated
    key = _sort_key(entry)
    at = bisect_right(history, key, key=_sort_key)
    if at and _sort_key(history[at - 1]) == key:
        return history  # already recorded: a redelivery changes nothing
    start = bisect_left(history, cutoff, key=_occurred_at)
    if entry.occurred_at < cutoff:
        return history[start:] if start else history
    updated = [*history[start:at], entry, *history[at:]]
    if len(updated) > rules.history_max:
        del updated[: len(updated) - rules.history_max]
    return updated


def _shallow_copy(state: CustomerState) -> CustomerState:
    """A new state sharing every part with ``state``; callers replace what they change.

    Several times faster than :func:`copy.copy`, and it keeps fields added later.
    """
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    return new
