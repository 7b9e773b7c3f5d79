"""The worker's per-customer predictions: written into the state, labelled late, bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agents.core.customer import (
    CustomerState,
    Interaction,
    MasterData,
    PurchaseFigures,
)
from agents.core.predictions import PredictionRules
from agents.pipeline.customer_stage import _drift_messages
from agents.pipeline.forecasts import Forecaster
from schemas.codec import decode, encode
from schemas.topics import TOPICS
from schemas.validation import build

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
BERLIN = MasterData("de-DE", "de", "Europe/Berlin", MONDAY)


def _clicked(state: CustomerState, at: datetime) -> CustomerState:
    return replace(state, history=[*state.history, Interaction(at, f"e-{at:%s}", "click")],
                   last_event_at=max(state.last_event_at or at, at))


def test_predictions_land_in_the_state_with_a_local_best_hour() -> None:
    forecaster = Forecaster()
    state = CustomerState("c-1", master=BERLIN)
    for day in range(4):  # 18:00 UTC is 19:00 in Berlin in March
        at = MONDAY + timedelta(days=day, hours=18)
        state, _ = forecaster.observe(_clicked(state, at), "click", at)
    p = state.predictions
    assert p is not None
    assert p.best_hour == 19
    assert 0.0 < p.purchase < 1.0
    assert 0.0 < p.churn < 1.0
    assert p.at == MONDAY + timedelta(days=3, hours=18)
    # Kept in UTC hours of the week: Monday..Thursday 18:00 UTC.
    assert sorted(p.hours) == [18, 42, 66, 90]


def test_the_hour_profile_does_not_depend_on_when_the_time_zone_arrived() -> None:
    clicks = [MONDAY + timedelta(hours=h) for h in (7, 8, 31, 55)]
    early, late = Forecaster(), Forecaster()
    a = CustomerState("c-1", master=BERLIN)
    b = CustomerState("c-1")
    for at in clicks:
        a, _ = early.observe(_clicked(a, at), "click", at)
    for at in reversed(clicks):  # other order, and the profile event comes last
        b, _ = late.observe(_clicked(b, at), "click", at)
    b, _ = late.observe(replace(b, master=BERLIN), "other", MONDAY)
    assert a.predictions is not None
    assert b.predictions is not None
    assert a.predictions.hours == pytest.approx(b.predictions.hours, rel=1e-12)
    assert a.predictions.at == b.predictions.at == clicks[-1]
    assert a.predictions.best_hour == b.predictions.best_hour == 8  # 07:00 UTC, 08:00 Berlin


def _bought(cid: str, at: datetime, orders: int = 1) -> CustomerState:
    return CustomerState(cid, last_event_at=at,
                         purchases=PurchaseFigures(orders, 10.0 * orders, MONDAY, at))


def test_open_examples_are_opened_and_labelled_on_the_watermark() -> None:
    rules = PredictionRules(purchase_horizon=timedelta(days=1), churn_horizon=timedelta(days=2),
                            example_interval=timedelta(days=1))
    forecaster = Forecaster(rules)
    forecaster.observe(_bought("c-1", MONDAY), "purchase", MONDAY, units=2)
    assert forecaster.open_examples == 0
    forecaster.expire(MONDAY + timedelta(days=1))  # one point of the schedule has passed
    assert forecaster.open_examples == 2
    assert forecaster.predictors.purchase.examples == 0
    forecaster.expire(MONDAY + timedelta(days=5))
    # Points at days ~1, 2, 3, 4 (and 5 when its phase allows) opened; the horizons of the
    # first ones ended without an event: no purchase, churned.
    assert forecaster.predictors.purchase.examples >= 3
    assert forecaster.predictors.churn.examples >= 2


def test_served_predictions_are_answered_as_of_the_time_asked() -> None:
    forecaster = Forecaster(PredictionRules(learning_rate=0.05))
    state, _ = forecaster.observe(_bought("c-1", MONDAY), "purchase", MONDAY, units=1)
    # Teach the model that the quiet do not buy, through its own schedule.
    for i in range(200):
        cid = f"q-{i}"
        forecaster.observe(_bought(cid, MONDAY), "purchase", MONDAY, units=1)
    forecaster.expire(MONDAY + timedelta(days=200))
    assert state.predictions is not None
    assert state.predictions.units == 1
    now = forecaster.predict_at(state, MONDAY + timedelta(days=1))
    later = forecaster.predict_at(state, MONDAY + timedelta(days=180))
    assert now is not None
    assert later is not None
    assert later[0] < now[0]  # less likely to buy the longer they are quiet
    assert later[1] > now[1]  # and more likely gone
    assert forecaster.predict_at(CustomerState("c-2"), MONDAY) is None


def test_open_examples_stay_bounded_and_forget_drops_them() -> None:
    forecaster = Forecaster(PredictionRules(example_interval=timedelta(hours=1)), max_open=10)
    for i in range(25):
        forecaster.observe(_bought(f"c-{i}", MONDAY), "purchase", MONDAY)
    forecaster.expire(MONDAY + timedelta(hours=1))
    assert forecaster.open_examples == 20  # two outcomes for each of the newest ten
    assert forecaster.dropped == 15
    forecaster.forget("c-24")
    assert forecaster.open_examples == 18


def test_a_drift_is_reported_and_becomes_a_valid_model_drift_event() -> None:
    forecaster = Forecaster(PredictionRules(purchase_horizon=timedelta(hours=1),
                                            churn_horizon=timedelta(days=400),
                                            example_interval=timedelta(hours=1)))
    forecaster.predictors.purchase.warmup = 50
    drifts = []
    for i in range(3000):
        at = MONDAY + timedelta(minutes=i)
        cid = f"c-{i % 300}"
        _state, _ = forecaster.observe(_bought(cid, at), "other", at)
        if i >= 1500:  # from here on everybody buys: the labels flip
            drifts += forecaster.observe(_bought(cid, at), "purchase",
                                         at + timedelta(seconds=1))[1]
        drifts += forecaster.expire(at)
    assert drifts, "a flip of every label must be found"
    assert forecaster.drifts[-1] == drifts[-1]
    for topic, key, record in _drift_messages(drifts):
        assert topic == "model-drift"
        assert key == record.model_id.encode()
        assert build(TOPICS[topic].versions[1], decode(encode(record))) == record


def test_the_deadline_heap_stays_bounded_by_the_customers() -> None:
    forecaster = Forecaster()
    state = _bought("c-1", MONDAY)
    for i in range(20_000):  # every event moves nothing on the schedule but is seen
        at = MONDAY + timedelta(minutes=i)
        state, _ = forecaster.observe(replace(state, last_event_at=at), "other", at)
        forecaster.expire(at)
    assert len(forecaster._deadlines) <= 2 * 1 + 1024 + 1
