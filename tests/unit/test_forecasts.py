"""The worker's per-customer predictions: written into the state, labelled late, bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agents.core.customer import (
    CustomerPredictions,
    CustomerState,
    Interaction,
    MasterData,
    PurchaseFigures,
)
from agents.core.predictions import PredictionRules
from agents.profiles import LocalOutlook, _drift_messages
from schemas.codec import decode, encode
from schemas.topics import TOPICS
from schemas.validation import build
from streams.forecasts import Forecaster

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


def test_open_examples_are_labelled_when_their_horizon_ends() -> None:
    rules = PredictionRules(purchase_horizon=timedelta(days=1), churn_horizon=timedelta(days=2))
    forecaster = Forecaster(rules)
    _state, _ = forecaster.observe(CustomerState("c-1", last_event_at=MONDAY), "other", MONDAY)
    assert forecaster.open_examples == 2
    forecaster.expire(MONDAY + timedelta(hours=23))
    assert forecaster.open_examples == 2
    forecaster.expire(MONDAY + timedelta(days=1))
    assert forecaster.open_examples == 1  # no purchase within a day: labelled
    assert forecaster.predictors.purchase.examples == 1
    forecaster.expire(MONDAY + timedelta(days=2))
    assert forecaster.open_examples == 0
    assert forecaster.predictors.churn.examples == 1


def test_a_later_event_resolves_an_open_example_without_the_timer() -> None:
    forecaster = Forecaster()
    state, _ = forecaster.observe(CustomerState("c-1", last_event_at=MONDAY), "other", MONDAY)
    bought = replace(state, purchases=PurchaseFigures(1, 10.0, MONDAY, MONDAY))
    forecaster.observe(bought, "purchase", MONDAY + timedelta(hours=1))
    assert forecaster.predictors.purchase.examples == 1
    assert forecaster.predictors.churn.examples == 1


def test_open_examples_stay_bounded_and_forget_drops_them() -> None:
    forecaster = Forecaster(max_open=10)
    for i in range(25):
        forecaster.observe(CustomerState(f"c-{i}", last_event_at=MONDAY), "other", MONDAY)
    assert forecaster.open_examples == 20  # two outcomes for each of the newest ten
    assert forecaster.dropped == 15
    forecaster.forget("c-24")
    assert forecaster.open_examples == 18


def test_a_drift_is_reported_and_becomes_a_valid_model_drift_event() -> None:
    forecaster = Forecaster(PredictionRules(purchase_horizon=timedelta(hours=1),
                                            churn_horizon=timedelta(days=400)))
    forecaster.predictors.purchase.warmup = 50
    drifts = []
    at = MONDAY
    for i in range(3000):
        at = MONDAY + timedelta(minutes=i)
        state = CustomerState(f"c-{i}", last_event_at=at)
        state, _ = forecaster.observe(state, "other", at)
        if i >= 1500:  # from here on everybody buys: the labels flip
            bought = replace(state, purchases=PurchaseFigures(1, 1.0, at, at))
            drifts += forecaster.observe(bought, "purchase", at + timedelta(seconds=1))[1]
        drifts += forecaster.expire(at)
    assert drifts, "a flip of every label must be found"
    assert forecaster.drifts[-1] == drifts[-1]
    for topic, key, record in _drift_messages(drifts):
        assert topic == "model-drift"
        assert key == record.model_id.encode()
        assert build(TOPICS[topic].versions[1], decode(encode(record))) == record


def test_the_deadline_heap_stays_bounded_by_the_open_examples() -> None:
    forecaster = Forecaster()
    state = CustomerState("c-1", last_event_at=MONDAY)
    for i in range(20_000):  # every event resolves the churn example and opens the next
        at = MONDAY + timedelta(minutes=i)
        state, _ = forecaster.observe(replace(state, last_event_at=at), "other", at)
    assert forecaster.open_examples == 2
    assert len(forecaster._deadlines) <= 2 * 2 + 1024 + 1


def test_sends_are_planned_with_the_best_hour_in_the_customers_zone_now() -> None:
    # Engagement peaks at 07:00 UTC (hour of the week 7: Monday 07:00 UTC). The stored
    # best hour was made local before the customer's time zone was known (7); a
    # profile has since put them in Berlin, so their best hour is 08:00 local in winter.
    winter, summer = datetime(2026, 11, 23, 12, tzinfo=UTC), datetime(2026, 7, 6, 12, tzinfo=UTC)
    stored = CustomerPredictions(purchase=0.1, churn=0.3, best_hour=7, at=winter,
                                 hours={7: 2.0, 7 + 24: 1.0, 15: 0.5}, hours_at=winter)
    berlin = MasterData(locale="de-DE", language="de", time_zone="Europe/Berlin",
                        updated_at=winter)
    state = CustomerState("c-1", master=berlin, predictions=stored)
    outlook = LocalOutlook.of(state, winter)
    assert outlook is not None
    assert (outlook.best_hour, outlook.churn) == (8, 0.3)
    summer_outlook = LocalOutlook.of(state, summer)
    assert summer_outlook is not None
    assert summer_outlook.best_hour == 9
    no_zone = LocalOutlook.of(replace(state, master=None), winter)
    assert no_zone is not None
    assert no_zone.best_hour == 7
    assert LocalOutlook.of(replace(state, predictions=None), winter) is None
