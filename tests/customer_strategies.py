"""Hypothesis strategies for :class:`~agents.core.customer.CustomerState` (the store's tests).

Times carry any fixed UTC offset and microseconds, so tests also exercise
what the store does to them (UTC, milliseconds floored: ``normalise``);
:func:`ms_times` gives times the store keeps exactly.  Text is any Unicode
without surrogates (neither SQLite nor Cassandra can store those), numbers
are finite, customer ids non-empty (Cassandra refuses an empty partition key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from agents.core.customer import (
    AssignedTag,
    ConsentEntry,
    CustomerState,
    Interaction,
    MasterData,
    PendingSend,
    PurchaseFigures,
    TopicInterest,
)
from schemas.records import Clicked

# Naive on purpose: hypothesis bounds st.datetimes with naive values and adds zones itself.
EARLIEST = datetime(1990, 1, 1)  # noqa: DTZ001
LATEST = datetime(2025, 12, 31)  # noqa: DTZ001


def times() -> SearchStrategy[datetime]:
    """Aware datetimes with microseconds and offsets from -12:00 to +14:00."""
    offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
        lambda m: timezone(timedelta(minutes=m)))
    return st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=offsets)


def ms_times() -> SearchStrategy[datetime]:
    """UTC datetimes with whole milliseconds: the store returns them unchanged."""
    return st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)).map(
        lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


def _text(min_size: int = 0) -> SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=12)


def _floats() -> SearchStrategy[float]:
    return st.floats(allow_nan=False, allow_infinity=False)


def customer_states(customer_ids: SearchStrategy[str] | None = None,
                    at: SearchStrategy[datetime] | None = None
                    ) -> SearchStrategy[CustomerState]:
    """Fully or partly populated states; history keys unique and sorted like the store's."""
    when = at if at is not None else times()
    master = st.builds(
        MasterData, locale=_text(), language=_text(), time_zone=_text(), updated_at=when,
        country=st.none() | _text(), birth_year=st.none() | st.integers(1900, 2030),
        gender=st.none() | _text(),
        attributes=st.dictionaries(_text(), _text(), max_size=3))
    earlier = st.lists(st.tuples(when, st.booleans()), max_size=3).map(
        lambda decisions: tuple(sorted(decisions, key=lambda d: d[0])))
    consent = st.builds(ConsentEntry, st.booleans(), when, _text(), _text(), earlier)
    interest = st.builds(TopicInterest, _floats(), when, st.lists(when, max_size=4))
    tag = st.builds(AssignedTag, _text(), when, _text())
    purchases = st.builds(PurchaseFigures, orders=st.integers(0, 10**6), revenue=_floats(),
                          first_at=st.none() | when, last_at=st.none() | when)
    interaction = st.builds(
        Interaction, occurred_at=when, event_id=_text(1),
        kind=st.sampled_from(("click", "purchase", "decision", "trigger")),
        content_id=st.none() | _text(), campaign_id=st.none() | _text(),
        amount=st.none() | _floats())
    history = st.lists(interaction, max_size=6, unique_by=lambda i: i.event_id).map(
        lambda entries: sorted(entries, key=lambda i: (i.occurred_at, i.event_id)))
    send = st.builds(PendingSend, trigger_id=_text(1), idempotency_key=_text(1),
                     channel=st.sampled_from(("email", "push", "sms")), send_at=when,
                     campaign_id=_text(1), content_id=_text(1))
    click = st.builds(Clicked, event_id=_text(1), customer_id=_text(1),
                      schema_version=st.just(1), occurred_at=when,
                      content_id=st.none() | _text(1))
    parked = st.lists(click, max_size=2, unique_by=lambda c: c.event_id)
    pending = st.lists(send, max_size=3, unique_by=lambda p: p.trigger_id).map(
        lambda sends: sorted(sends, key=lambda p: (p.send_at, p.trigger_id)))
    return st.builds(
        CustomerState,
        customer_id=customer_ids if customer_ids is not None else _text(1),
        master=st.none() | master,
        consent=st.dictionaries(_text(), consent, max_size=3),
        interests=st.dictionaries(_text(), interest, max_size=3),
        tags=st.dictionaries(_text(), tag, max_size=3),
        purchases=purchases,
        history=history,
        last_event_at=st.none() | when,
        pending=pending,
        parked=parked,
    )
