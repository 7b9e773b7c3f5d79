"""Per-customer predictions, progressive validation, drift, and the snapshot envelope."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.core.customer import CustomerState, Interaction, MasterData, PurchaseFigures
from agents.core.predictions import (
    HourProfile,
    OutcomeModel,
    PredictionRules,
    PredictionState,
    Predictors,
    Summary,
    customer_features,
    features,
)
from agents.core.snapshots import MAGIC, SnapshotInvalid, checksum_of, decode, encode

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
HALF_LIFE = timedelta(days=28)


# --- best send hour ----------------------------------------------------------------------------


def test_best_hour_is_local_to_the_customer() -> None:
    profile = HourProfile()
    for day in range(5):  # 18:00 UTC is 19:00 in Berlin and 13:00 in New York
        profile = profile.engaged(MONDAY + timedelta(days=day, hours=18), "Europe/Berlin",
                                  HALF_LIFE)
    assert profile.best_hour() == 19
    other = HourProfile().engaged(MONDAY + timedelta(hours=18), "America/New_York", HALF_LIFE)
    assert other.best_hour() == 13
    assert HourProfile().best_hour() is None
    assert HourProfile().best_send_time(MONDAY, "Europe/Berlin") is None


def test_recent_engagement_outweighs_old() -> None:
    profile = HourProfile()
    for week in range(3):  # old habit: 08:00
        profile = profile.engaged(MONDAY + timedelta(weeks=week, hours=8), None, HALF_LIFE)
    for week in range(20, 22):  # new habit: 20:00
        profile = profile.engaged(MONDAY + timedelta(weeks=week, hours=20), None, HALF_LIFE)
    assert profile.best_hour() == 20


@given(st.permutations(list(range(12))))
def test_hour_profiles_do_not_depend_on_arrival_order(order: list[int]) -> None:
    times = [MONDAY + timedelta(days=i * 3, hours=(i * 7) % 24) for i in range(12)]
    in_order, shuffled = HourProfile(), HourProfile()
    for t in times:
        in_order = in_order.engaged(t, "Europe/Paris", HALF_LIFE)
    for i in order:
        shuffled = shuffled.engaged(times[i], "Europe/Paris", HALF_LIFE)
    assert in_order.scored_at == shuffled.scored_at
    assert in_order.scores.keys() == shuffled.scores.keys()
    for slot, score in in_order.scores.items():
        assert shuffled.scores[slot] == pytest.approx(score)


def test_best_send_time_prefers_the_hour_of_the_week() -> None:
    profile = HourProfile()
    # Tuesdays 07:00 Berlin (twice) and Mondays 21:00 Berlin (three times).
    for week in range(2):
        profile = profile.engaged(MONDAY + timedelta(weeks=week, days=1, hours=6),
                                  "Europe/Berlin", HALF_LIFE)
    for week in range(3):
        profile = profile.engaged(MONDAY + timedelta(weeks=week, hours=20), "Europe/Berlin",
                                  HALF_LIFE)
    after = MONDAY + timedelta(weeks=3, hours=22)  # Monday 23:00 Berlin: Monday 21:00 is past
    assert profile.best_hour() == 21
    sent = profile.best_send_time(after, "Europe/Berlin")
    assert sent == MONDAY + timedelta(weeks=3, days=1, hours=6)  # Tuesday 07:00 Berlin


# --- outcome models ------------------------------------------------------------------------------


def customer(orders: int = 0, clicks: int = 0, at: datetime = MONDAY) -> CustomerState:
    history = [Interaction(at - timedelta(hours=i + 1), f"e{i}", "click") for i in range(clicks)]
    return CustomerState(
        "c-1", master=MasterData("de-DE", "de", "Europe/Berlin", at),
        purchases=PurchaseFigures(orders, 30.0 * orders, at - timedelta(days=40) if orders else
                                  None, at - timedelta(days=2) if orders else None),
        history=history, last_event_at=at)


@given(orders=st.integers(0, 10_000), clicks=st.integers(0, 50),
       days=st.floats(0, 5000))
def test_customer_features_are_finite(orders: int, clicks: int, days: float) -> None:
    x = customer_features(customer(orders, clicks), MONDAY + timedelta(days=days))
    assert all(math.isfinite(v) for v in x.values())


def test_examples_open_on_a_schedule_so_recency_varies() -> None:
    rules = PredictionRules(example_interval=timedelta(days=7))
    models = Predictors(rules)
    pstate, first, _ = models.observe_event(PredictionState(), customer(1), "purchase", MONDAY)
    assert pstate.open == ()  # an event opens no example: the schedule does
    assert first.best_hour == 1  # 00:00 UTC is 01:00 in Berlin
    assert pstate.next_at is not None
    assert MONDAY < pstate.next_at <= MONDAY + timedelta(days=7)
    pstate, _ = models.due(pstate, MONDAY + timedelta(days=29), "c-1")
    opened = sorted({e.opened_at for e in pstate.open})
    assert len(opened) == 4
    assert {b - a for a, b in itertools.pairwise(opened)} == {timedelta(days=7)}
    recency = sorted({e.features["recency"] for e in pstate.open})
    assert len(recency) == 4
    assert recency[0] < recency[-1]


def test_a_label_is_learnt_when_its_horizon_ends_positive_or_negative() -> None:
    rules = PredictionRules(purchase_horizon=timedelta(days=30), example_interval=timedelta(days=7))
    models = Predictors(rules)
    pstate, _, _ = models.observe_event(PredictionState(), customer(1), "purchase", MONDAY)
    pstate, _ = models.due(pstate, MONDAY + timedelta(days=7), "c-1")
    (example,) = [e for e in pstate.open if e.outcome == "purchase"]
    later = example.opened_at + timedelta(days=3)
    pstate, _, _ = models.observe_event(pstate, customer(2, at=later), "purchase", later)
    # The order answers the example, but it is not learnt before its horizon ends.
    assert [e.hit for e in pstate.open if e.opened_at == example.opened_at] == [True, True]
    assert models.purchase.examples == models.churn.examples == 0
    pstate, _drifts = models.expire(pstate, example.deadline, "c-1")
    assert models.purchase.examples == 1
    assert models.purchase.log_loss.get() < math.log(2) + 1e-9  # predicted 0.5, label yes
    assert models.churn.examples == 0  # the churn horizon (60 days) has not ended


def test_a_customer_who_goes_quiet_is_learnt_as_no_purchase_and_churned() -> None:
    rules = PredictionRules(example_interval=timedelta(days=7), active_span=timedelta(days=20))
    models = Predictors(rules)
    pstate, _, _ = models.observe_event(PredictionState(), customer(), "profile", MONDAY)
    assert pstate.hours.best_hour() is None  # a profile update is not engagement
    assert pstate.next_at is not None
    same, _ = models.expire(pstate, pstate.next_at - timedelta(seconds=1), "c-1")
    assert same is pstate
    pstate, _ = models.expire(pstate, MONDAY + timedelta(days=400), "c-1")
    assert pstate.open == ()
    assert pstate.next_at is None
    # Examples on the schedule for the 20 days after the last event: three each.
    assert models.purchase.examples == models.churn.examples == 3
    assert models.purchase.log_loss.get() < math.log(2) + 1e-9  # predicted 0.5: no
    assert models.churn.log_loss.get() < math.log(2) + 1e-9  # predicted 0.5: churned


def test_predictions_are_answered_as_of_a_time() -> None:
    models = Predictors()
    summary = Summary.of(customer(3), 6)
    # A model that has learnt that quiet customers do not buy.
    for _ in range(300):
        for days, bought in ((1, True), (200, False)):
            models.purchase.learn_one(features(summary, MONDAY + timedelta(days=days)), bought)
    soon, _ = models.predict(summary, MONDAY + timedelta(days=1))
    late, _ = models.predict(summary, MONDAY + timedelta(days=200))
    assert soon > 0.6 > 0.4 > late


def test_progressive_validation_learns_a_learnable_outcome() -> None:
    model, rng = OutcomeModel("purchase-30d"), random.Random(3)
    for _ in range(3000):
        active = rng.random() < 0.5
        x = {"bias": 1.0, "clicks_7d": 2.0 if active else 0.0}
        y = rng.random() < (0.6 if active else 0.1)
        model.observe(x, y, model.predict_proba_one(x)[True], MONDAY)
    quality = model.quality()
    assert quality["examples"] == 3000
    assert 0.7 < float(quality["roc_auc"]) <= 0.8  # the best possible AUC here is about 0.76
    assert float(quality["log_loss"]) < math.log(2)


def test_drift_is_detected_when_the_world_changes() -> None:
    model, rng = OutcomeModel("churn-60d"), random.Random(5)
    x = {"bias": 1.0}
    drifts = []
    for i in range(4000):
        y = rng.random() < (0.05 if i < 2000 else 0.9)  # everyone starts leaving
        found = model.observe(x, y, model.predict_proba_one(x)[True], MONDAY + timedelta(
            minutes=i))
        if found is not None:
            drifts.append(found)
    change = MONDAY + timedelta(minutes=2000)
    after = [d for d in drifts if d.at >= change]
    assert after, "ADWIN saw no change"
    assert after[0].model_id == "churn-60d"
    assert after[0].at <= change + timedelta(minutes=300)  # found within 300 examples
    assert model.quality()["drifts"] == len(drifts)


# --- the snapshot envelope ---------------------------------------------------------------------


@given(model=st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(),
                          lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)),
       version=st.integers(1, 2**40))
def test_snapshot_round_trip(model: object, version: int) -> None:
    blob, checksum = encode("m", version, "test", model, MONDAY)
    assert checksum == checksum_of(blob)
    decoded = decode(blob, checksum, "test")
    assert (decoded.model, decoded.version, decoded.created_at) == (model, version, MONDAY)


def _with_header(blob: bytes, **changes: object) -> bytes:
    start = len(MAGIC) + 5
    length = int.from_bytes(blob[len(MAGIC) + 1: start], "big")
    header = json.loads(blob[start: start + length]) | changes
    raw = json.dumps(header).encode()
    return blob[: len(MAGIC) + 1] + len(raw).to_bytes(4, "big") + raw + blob[start + length:]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b"XXXXXXX" + b[7:], "magic"),
    (lambda b: b[:7] + bytes([9]) + b[8:], "format 9"),
    (lambda b: _with_header(b, river="0.1.0"), "River 0.1.0"),
    (lambda b: _with_header(b, payload_sha256="0" * 64), "header checksum"),
    (lambda b: _with_header(b, kind="other"), "holds a other"),
])
def test_a_snapshot_that_cannot_be_trusted_is_refused(damage: object, message: str) -> None:
    blob, _ = encode("m", 1, "test", {"w": 1.0}, MONDAY)
    bad = damage(blob)  # type: ignore[operator] # the parametrised lambdas
    with pytest.raises(SnapshotInvalid, match=message):
        decode(bad, checksum_of(bad), "test")
    with pytest.raises(SnapshotInvalid, match="checksum mismatch"):
        decode(bad, checksum_of(blob), "test")


def test_snapshot_versions_start_at_one_and_times_carry_a_zone() -> None:
    with pytest.raises(ValueError, match="version"):
        encode("m", 0, "test", {}, MONDAY)
    with pytest.raises(ValueError, match="time zone"):
        encode("m", 1, "test", {}, MONDAY.replace(tzinfo=None))
