"""The 360° profile: master data, consent, RFM figures, bounded history, the event entry point."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.customer import ConsentEntry, CustomerState, Interaction
from agents.core.interests import InterestRules, TagRule
from agents.core.profile import (
    CustomerRules,
    ProfileRules,
    apply_click_history,
    apply_consent,
    apply_event,
    apply_profile,
    apply_purchase,
    requests_erasure,
)
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    ContentVariant,
    ProfileUpdated,
    Purchased,
    PurchasedItem,
)
from tests.events import clicked, consent_changed
from tests.strategies import records_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HISTORY = ProfileRules(history_max=5, history_retention=timedelta(days=30))
RULES = CustomerRules(
    InterestRules((TagRule("fashion-trends", "fashion", 3, timedelta(days=14), 0.5),),
                  half_life=timedelta(days=7), max_recent=20),
    ProfileRules(history_max=200, history_retention=timedelta(days=365)),
)


def at(day: float) -> datetime:
    return T0 + timedelta(days=day)


def click(day: float, event_id: str = "", **fields: Any) -> Clicked:
    return clicked(event_id or f"c{day}", at=at(day), **fields)


def order(day: float, total: float, *topics: str, event_id: str = "") -> Purchased:
    items = [PurchasedItem(product_id=f"sku-{t}", quantity=1, unit_price=total / len(topics),
                           topics=[t]) for t in topics] or [
        PurchasedItem(product_id="sku", quantity=1, unit_price=total)]
    return Purchased(event_id=event_id or f"o{day}", customer_id="c-1", schema_version=1,
                     occurred_at=at(day), order_id=f"o{day}", items=items, total=total,
                     currency="EUR", campaign_id="camp-1")


def consent(day: float, action: str, *purposes: str, source: str = "banner") -> ConsentChanged:
    return consent_changed(f"k{day}", at=at(day), action=action, purposes=list(purposes),
                           source=source)


def profile(day: float, **fields: Any) -> ProfileUpdated:
    values = {"locale": "de-DE", "language": "de", "time_zone": "Europe/Berlin"} | fields
    return ProfileUpdated(event_id=f"p{day}", customer_id="c-1", schema_version=1,
                          occurred_at=at(day), **values)


# --- master data ----------------------------------------------------------------------


def test_a_profile_update_sets_master_data_and_the_latest_event_time() -> None:
    state = apply_profile(CustomerState("c-1"), profile(1, country="DE", birth_year=1984,
                                                         attributes={"tier": "gold"}))
    assert state.master is not None
    assert (state.master.locale, state.master.country, state.master.birth_year,
            state.master.attributes, state.master.updated_at) == (
        "de-DE", "DE", 1984, {"tier": "gold"}, at(1))
    assert state.last_event_at == at(1)


def test_a_later_update_replaces_field_by_field_and_an_older_one_is_ignored() -> None:
    state = apply_profile(CustomerState("c-1"), profile(2, country="DE", gender="female",
                                                         attributes={"tier": "gold", "a": "1"}))
    state = apply_profile(state, profile(3, locale="en-GB", language="en",
                                         time_zone="Europe/London", attributes={"tier": "silver"}))
    newer = state
    state = apply_profile(state, profile(1, country="AT", locale="de-AT"))
    assert state == newer
    assert state.master is not None
    assert (state.master.locale, state.master.country, state.master.gender,
            state.master.attributes) == ("en-GB", "DE", "female", {"tier": "silver", "a": "1"})


# --- consent --------------------------------------------------------------------------------


def test_consent_keeps_the_newest_decision_per_purpose_and_the_earlier_ones() -> None:
    state, _ = apply_consent(CustomerState("c-1"), consent(2, "granted", "email", "web", "sms"))
    state, _ = apply_consent(state, consent(3, "revoked", "email", source="unsubscribe"))
    state, erase = apply_consent(state, consent(1, "revoked", "web", "sms"))  # older
    assert not erase
    assert state.consent == {
        "email": ConsentEntry(False, at(3), "unsubscribe", "consent", ((at(2), True),)),
        "web": ConsentEntry(True, at(2), "banner", "consent", ((at(1), False),)),
        "sms": ConsentEntry(True, at(2), "banner", "consent", ((at(1), False),)),
    }
    assert state.last_event_at == at(3)


def test_an_erasure_request_changes_nothing_and_says_so() -> None:
    state, _ = apply_consent(CustomerState("c-1"), consent(1, "granted", "email"))
    request = consent(2, "erasure_requested")
    assert apply_consent(state, request) == (state, True)
    assert apply_event(state, request, RULES, None) == (state, [])
    assert requests_erasure(request)
    assert not requests_erasure(consent(3, "revoked", "email"))
    assert not requests_erasure(click(1))


# --- purchases and RFM -------------------------------------------------------------------

purchases = st.lists(st.tuples(st.integers(0, 400 * 86400),
                               st.floats(min_value=0, max_value=1e5, allow_nan=False)),
                     min_size=1, max_size=30)


@given(purchases)
def test_rfm_figures_sum_orders_and_revenue_and_span_first_to_last(
        orders: list[tuple[int, float]]) -> None:
    state = CustomerState("c-1")
    for i, (offset, total) in enumerate(orders):
        state = apply_purchase(state, order(offset / 86400, total, event_id=f"o{i}"), HISTORY)
    times = [at(offset / 86400) for offset, _ in orders]
    figures = state.purchases
    assert figures.orders == len(orders)
    assert figures.revenue == pytest.approx(sum(total for _, total in orders))
    assert (figures.first_at, figures.last_at) == (min(times), max(times))
    assert state.last_event_at == max(times)


def test_a_purchase_is_recorded_in_the_history_with_its_amount() -> None:
    state = apply_purchase(CustomerState("c-1"), order(1, 49.99, "fashion"), HISTORY)
    assert state.history == [Interaction(at(1), "o1", "purchase", None, "camp-1", 49.99)]


# --- history -------------------------------------------------------------------------------

events = st.lists(st.tuples(st.integers(0, 90 * 86400), st.integers(0, 40)), max_size=40)


@given(events, st.integers(1, 12), st.integers(1, 60))
def test_history_is_sorted_bounded_and_matches_a_brute_force_oracle(
        clicks: list[tuple[int, int]], history_max: int, retention_days: int) -> None:
    rules = ProfileRules(history_max, timedelta(days=retention_days))
    state = CustomerState("c-1")
    for offset, n in clicks:  # the same id always comes with the same time: redeliveries
        state = apply_click_history(state, click(offset / 86400, f"e{n}-{offset}"), rules)
    unique = sorted({(at(offset / 86400), f"e{n}-{offset}") for offset, n in clicks})
    if unique:
        cutoff = max(t for t, _ in unique) - rules.history_retention
        expected = [u for u in unique if u[0] >= cutoff][-history_max:]
        assert state.last_event_at == max(t for t, _ in unique)
    else:
        expected = []
    assert [(i.occurred_at, i.event_id) for i in state.history] == expected
    assert len(state.history) <= history_max


def test_history_drops_the_oldest_and_what_ages_out_of_retention() -> None:
    state = CustomerState("c-1")
    for day in (1, 2, 3, 4, 5, 6):
        state = apply_click_history(state, click(day), HISTORY)
    assert [i.occurred_at for i in state.history] == [at(d) for d in (2, 3, 4, 5, 6)]
    state = apply_click_history(state, click(35), HISTORY)  # 30 days back: day 5
    assert [i.occurred_at for i in state.history] == [at(5), at(6), at(35)]
    assert apply_click_history(state, click(4), HISTORY).history == state.history


def test_a_click_is_recorded_with_its_content_and_campaign() -> None:
    state = apply_click_history(CustomerState("c-1"), click(1, content_id="n-1",
                                                            campaign_id="camp-2"), HISTORY)
    assert state.history == [Interaction(at(1), "c1", "click", "n-1", "camp-2")]


def test_a_redelivered_click_is_recorded_once() -> None:
    once = apply_click_history(CustomerState("c-1"), click(1), HISTORY)
    assert apply_click_history(once, click(1), HISTORY).history == once.history


# --- the entry point ----------------------------------------------------------------------


def test_clicks_feed_history_and_interests_from_content_or_own_topics() -> None:
    state = CustomerState("c-1")
    for day in (1, 2):
        state, changes = apply_event(state, click(day, content_id="n-1"), RULES, ["fashion"])
        assert changes == []
    state, changes = apply_event(state, click(3, topics=["fashion"]), RULES, None)
    assert [(c.tag, c.change, c.caused_by) for c in changes] == [
        ("fashion-trends", "assigned", "c3")]
    assert [i.kind for i in state.history] == ["click"] * 3
    assert state.last_event_at == at(3)


def test_a_purchase_counts_as_one_click_on_its_items_topics() -> None:
    state = CustomerState("c-1")
    for day in (1, 2):
        state, _ = apply_event(state, order(day, 10.0, "fashion"), RULES, None)
    state, changes = apply_event(state, order(3, 30.0, "fashion", "books"), RULES, None)
    assert [(c.tag, c.change) for c in changes] == [("fashion-trends", "assigned")]
    assert state.interests["fashion"].score == pytest.approx(
        2 ** (-2 / 7) + 2 ** (-1 / 7) + 0.5)
    assert (state.purchases.orders, state.purchases.revenue) == (3, 50.0)


def test_a_profile_or_consent_event_assigns_no_tags() -> None:
    state, changes = apply_event(CustomerState("c-1"), profile(1), RULES, None)
    assert changes == []
    assert state.master is not None
    state, changes = apply_event(state, consent(2, "granted", "profiling"), RULES, None)
    assert changes == []
    assert state.consent["profiling"].granted


def test_a_catalogue_item_is_not_a_customer_event() -> None:
    item = ContentPublished(
        event_id="n1", content_id="n-1", occurred_at=T0, schema_version=1, topics=["fashion"],
        channels=["web"], slots=["web-banner"], default_language="de",
        variants=[ContentVariant(language="de", title="Neu", url="https://shop.example/n-1")])
    with pytest.raises(TypeError, match="ContentPublished is a catalogue item"):
        apply_event(CustomerState("c-1"), item, RULES, None)


customer_events = st.one_of(*(records_for(topic)
                              for topic in ("clicks", "purchases", "consents", "profiles")))


@settings(max_examples=60)
@given(st.lists(customer_events, max_size=12), customer_events,
       st.none() | st.lists(st.sampled_from(("fashion", "books")), max_size=2))
def test_apply_event_changes_no_input_and_is_deterministic(
        earlier: list[Any], record: Any, content_topics: list[str] | None) -> None:
    state = CustomerState("c-1")
    for event in earlier:
        state, _ = apply_event(state, event, RULES, content_topics)
    before, topics_before = copy.deepcopy(state), copy.deepcopy(content_topics)
    first = apply_event(state, record, RULES, content_topics)
    assert state == before
    assert content_topics == topics_before
    assert apply_event(state, record, RULES, content_topics) == first
    new, _ = first
    assert new.last_event_at is not None or requests_erasure(record)
    assert len(new.history) <= RULES.profile.history_max
    assert new.history == sorted(new.history, key=lambda i: (i.occurred_at, i.event_id))
